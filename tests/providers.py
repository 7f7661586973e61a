"""What the tests of every provider kind share: a table of the kinds as the simulator fakes them, a builder that
starts a simulator of a kind and a gateway in front of it, and the readers of what the fake recorded."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from tests.support import ADMIN_KEY, ALPHA_KEY

SIZES = ["720x1280", "1280x720", "1920x1080", "1024x1792"]


@dataclass(frozen=True)
class Kind:
    root: str  # the provider's API root on the simulator
    model: str  # the provider model `sora-2` is sent to
    params: dict[str, Any] = field(default_factory=dict)  # the model's upstream_params
    models: dict[str, Any] = field(default_factory=dict)  # the kind's other [models] settings
    upstream: dict[str, Any] = field(default_factory=dict)  # the kind's differences in [[upstreams]]
    duration_s: float = 0.3  # how long the fake takes to make a video


KINDS = {
    "videos": Kind("/v1", "sora-2"),
    "gemini": Kind("/v1beta", "veo-3.1-generate-preview",
                   {"negativePrompt": "blurry", "personGeneration": "allow_adult"},
                   {"upstream_model_image": "veo-3.1-fast-generate-preview", "price_per_second": 0.10}),
    "openrouter": Kind("/api/v1", "google/veo-3.1", {"generate_audio": False, "seed": 7},
                       {"upstream_model_image": "google/veo-3.1-fast",
                        "sizes": ["720x1280", "1280x720", "1920x1080", "1024x1024"]}),
    "fal": Kind("", "fal-ai/veo3.1/fast", {"generate_audio": False, "negative_prompt": "blurry"}),
    "replicate": Kind("/v1", "google/veo-3.1", {"generate_audio": False}),
    # runs a little longer and is polled more often, so a stream sees its THROTTLED and its running fraction
    "runway": Kind("/v1", "veo3.1_fast", {"audio": False}, upstream={"poll_interval_s": 0.02}, duration_s=0.4),
}


def simulator(start_simulator, kind: str, **settings):
    """A simulator faking `kind`; a rate-limited key is told to wait a minute."""
    return start_simulator(**{"kind": kind, "duration_s": KINDS[kind].duration_s, "retry_after_s": 60, **settings})


def upstream_for(sim, kind: str, keys=("sk-good-1",), **settings) -> dict[str, Any]:
    """The `[[upstreams]]` entry named "sim" for `kind` at `sim`, with `settings` changed."""
    return {"name": "sim", "kind": kind, "base_url": sim.url + KINDS[kind].root, "keys": list(keys),
            "max_concurrent_per_key": 50, "poll_interval_s": 0.05, "timeout_s": 2, "job_timeout_s": 60,
            "max_retry_s": 10, **KINDS[kind].upstream, **settings}


def models_for(kind: str, **model) -> dict[str, Any]:
    """The `[models]` table: `sora-2` on the kind's model, with `model` changed."""
    spec = KINDS[kind]
    return {"sora-2": {"upstreams": ["sim"], "upstream_model": spec.model, "sizes": SIZES,
                       "seconds_allowed": [4, 6, 8, 12], "upstream_params": spec.params, **spec.models, **model}}


def start(start_simulator, start_gateway, kind: str, keys=("sk-good-1",), upstream: dict | None = None,
          simulator_settings: dict | None = None, **model):
    """A simulator of `kind` and a gateway whose one upstream is it: `upstream` changes the `[[upstreams]]`
    entry, `simulator_settings` the fake's, `model` the `sora-2` model."""
    sim = simulator(start_simulator, kind, **(simulator_settings or {}))
    return sim, start_gateway(sim, upstreams=[upstream_for(sim, kind, keys, **(upstream or {}))],
                              models=models_for(kind, **model))


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)


def jobs(sim) -> list:
    """The jobs the provider's fake made, oldest first."""
    return list(sim.app.state.sim.provider_jobs.values())


def calls(sim, key=None, method=None, path=None) -> list:
    """The calls the fake answered, those with the key, method and path prefix given."""
    return [c for c in sim.app.state.sim.calls if (key is None or c.key == key)
            and (method is None or c.method == method) and (path is None or c.path.startswith(path))]


def key_states(gateway) -> set[str]:
    """The states of the first upstream's keys, as /admin/upstreams reports them."""
    listing = httpx.get(gateway.url + "/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    return {k["state"] for k in listing["data"][0]["keys"]}
