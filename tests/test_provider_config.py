"""The config of the provider kinds: default base URLs, and the per-model keys, with errors naming the key."""
from __future__ import annotations

import datetime

import pytest

from gateway.config import ConfigError
from tests.support import base_config, build_config


def provider(kind: str, **extra) -> dict:
    return {"name": "sim", "kind": kind, "keys": ["k1"], **extra}


@pytest.mark.parametrize("kind, url", [
    ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
    ("openrouter", "https://openrouter.ai/api/v1"),
    ("fal", "https://queue.fal.run"),
    ("replicate", "https://api.replicate.com/v1"),
    ("runway", "https://api.dev.runwayml.com/v1"),
])
def test_a_provider_kind_defaults_to_its_public_api_root(tmp_path, kind, url):
    config = build_config(base_config(tmp_path, "http://unused", upstreams=[provider(kind)]))
    assert config.upstream("sim").base_url == url


def test_the_videos_kind_still_needs_a_base_url(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_config(base_config(tmp_path, "http://unused", upstreams=[provider("videos")]))
    assert "upstreams[0].base_url: is required" in err.value.problems


def test_upstream_model_image_and_upstream_params_are_read(tmp_path):
    raw = base_config(tmp_path, "http://unused", upstreams=[provider("gemini")], models={"sora-2": {
        "upstreams": ["sim"], "upstream_model": "veo-3.1-generate-preview",
        "upstream_model_image": "veo-3.1-fast-generate-preview",
        "upstream_params": {"negativePrompt": "blurry", "nested": {"list": [1, "two"]}}}})
    model = build_config(raw).models["sora-2"]
    assert model.upstream_model_image == "veo-3.1-fast-generate-preview"
    assert model.upstream_params == {"negativePrompt": "blurry", "nested": {"list": [1, "two"]}}


@pytest.mark.parametrize("values, problem", [
    ({"upstream_params": "negativePrompt=blurry"}, 'models."sora-2".upstream_params: must be a table, got str'),
    ({"upstream_params": {"when": {"at": datetime.date(2026, 1, 1)}}},
     'models."sora-2".upstream_params.when.at: must be a string, number, boolean, array or table, got date'),
    ({"upstream_model_image": ""}, 'models."sora-2".upstream_model_image: must not be empty'),
])
def test_bad_model_keys_are_named(tmp_path, values, problem):
    raw = base_config(tmp_path, "http://unused", upstreams=[provider("gemini")],
                      models={"sora-2": {"upstreams": ["sim"], **values}})
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert any(line.startswith(problem) for line in err.value.problems), err.value.problems


def test_check_config_names_each_size_and_duration_a_provider_cannot_make(tmp_path):
    from tests.support import to_toml
    from tests.test_config import check_config

    raw = base_config(tmp_path, "http://unused", upstreams=[provider("gemini"), provider("runway", name="rw")],
                      models={"sora-2": {"upstreams": ["sim"], "upstream_model": "veo-3.1-generate-preview",
                                         "sizes": ["1280x720", "1024x1792"], "seconds_allowed": [4, 8, 12]},
                              "gen4": {"upstreams": ["rw"], "upstream_model": "gen4_turbo", "sizes": ["1280x720"],
                                       "seconds_allowed": [5, 10]},
                              "org/sora-2-pro": {"upstreams": ["sim"], "upstream_model": "veo-3.1-generate-preview",
                                                 "sizes": ["1280x720"], "seconds_allowed": [8]}})
    path = tmp_path / "providers.toml"
    path.write_text(to_toml(raw))
    result = check_config(path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()[1:]
    assert sorted(lines) == [
        '  models."sora-2".seconds_allowed[2]: veo-3.1-generate-preview (upstream sim) cannot make 12-second videos; '
        "it makes 4, 6, 8 seconds",
        '  models."sora-2".sizes[1]: veo-3.1-generate-preview (upstream sim) cannot make 1024x1792 videos; it makes '
        "1280x720, 720x1280, 1920x1080, 1080x1920, 3840x2160, 2160x3840",
    ], result.stdout  # gen4_turbo makes videos from an image only: its sizes are checked for one, and pass
