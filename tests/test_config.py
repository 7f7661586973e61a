"""Config loading: env substitution, and errors that name the key that is wrong."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from tests.support import base_config, to_toml

ROOT = Path(__file__).resolve().parent.parent
SECRET = "q3Vt8-signing-K2pW7xZr"
EXAMPLE_ENV = {"GATEWAY_SIGNING_SECRET": SECRET, "GATEWAY_ADMIN_KEY": "sk-admin-7Hq2mX9pLw4v", "RELAY_A_KEY_1": "k1",
               "RELAY_A_KEY_2": "k2", "RELAY_B_KEY": "k3", "GEMINI_API_KEY": "k4",
               "OPENROUTER_API_KEY": "k5", "FAL_KEY": "k6",
               "REPLICATE_API_TOKEN": "k7", "RUNWAYML_API_SECRET": "k8",
               "MARKETING_WEBHOOK_SECRET": "whsec_" + "c2VjcmV0LWZvci10aGUtd2ViaG9va3MtMDEyMzQ1Njc="}


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_example_config_is_valid_and_reads_secrets_from_the_environment():
    config = load_config(ROOT / "config/example.toml", env=EXAMPLE_ENV)
    assert config.upstream("relay-a").keys == ("k1", "k2")
    assert config.server.signing_secret == SECRET
    assert config.models["sora-2"].upstreams == ("relay-a", "relay-b")
    assert config.team("marketing").quotas.videos_per_day == 200
    assert (config.chat.ui_tasks, config.chat.progress_step) == ("answer", 10)
    result = check_config(ROOT / "config/example.toml", EXAMPLE_ENV)
    assert result.returncode == 0 and "ok" in result.stdout


def test_missing_environment_variable_names_the_key():
    env = dict(EXAMPLE_ENV)
    del env["RELAY_A_KEY_2"]
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "config/example.toml", env=env)
    assert "upstreams[0].keys[1]: environment variable RELAY_A_KEY_2 is not set" in err.value.problems


def test_check_config_lists_every_problem_line_by_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("""
[server]
signing_secret = "short"
max_body_bytes = "big"
[storage]
database = "mysql://x"
[[upstreams]]
name = "a"
kind = "video"
base_url = "ftp://x"
keys = []
[models."sora-2"]
upstreams = ["nope"]
seconds_allowed = [4, 8]
seconds = 5
[[teams]]
name = "t"
keys = ["plain-text-key"]
models = ["sora-3"]
[teams.quotas]
videos_per_dya = 3
[chat]
ui_tasks = "ignore"
progress_step = 0
progress_every = 5
""")
    result = check_config(bad)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for expected in [
        "server.signing_secret: must be at least 16 characters",
        "server.max_body_bytes: must be a whole number",
        "storage.database: must start with sqlite:/// or postgresql://",
        "upstreams[0].kind: must be one of 'videos', 'chat', ",
        "upstreams[0].base_url: must be an http:// or https:// URL",
        "upstreams[0].keys: needs at least one non-empty key",
        "models.\"sora-2\".upstreams[0]: no upstream named 'nope'",
        "models.\"sora-2\".seconds: 5 is not one of seconds_allowed [4, 8]",
        "teams[0].keys[0]: must be 'sha256:'",
        "teams[0].models[0]: no model named 'sora-3'",
        "teams[0].quotas.videos_per_dya: unknown key",
        "chat.ui_tasks: must be one of 'answer', 'generate', got 'ignore'",
        "chat.progress_step: must be a whole number of percent from 1 to 100, got 0",
        "chat.progress_every: unknown key (known keys: ui_tasks, progress_step)",
    ]:
        assert any(expected in line for line in lines), (expected, lines)
    assert "plain-text-key" not in result.stdout


def test_not_toml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    assert "not valid TOML" in check_config(broken).stdout
    assert "file not found" in check_config(tmp_path / "missing.toml").stdout


def test_serve_refuses_a_bad_config_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nsigning_secret = "0123456789abcdef0"\n[cache]\nscope = "everyone"\n')
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(bad)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "cache.scope: must be one of 'team', 'global', got 'everyone'" in result.stderr


@pytest.mark.parametrize(("server", "problem"), [
    ({"admin_keys": ["abc"]}, "server.admin_keys[0]: is too short"),
    ({"admin_keys": ["sk-aaaaaaaaaaaaaaaaaaaa"]}, "server.admin_keys[0]: is too easy to guess"),
    ({"signing_secret": "x" * 32}, "server.signing_secret: is too easy to guess"),
    ({"signing_secret": "changeme-changeme"}, "server.signing_secret: is too easy to guess"),
])
def test_check_config_refuses_guessable_admin_keys_and_signing_secrets(tmp_path, server, problem):
    raw = base_config(tmp_path, "http://127.0.0.1:1/v1", server=server)
    path = tmp_path / "weak.toml"
    path.write_text(to_toml(raw))
    result = check_config(path)
    assert result.returncode != 0 and problem in result.stdout + result.stderr


def test_a_team_webhook_needs_a_secret_of_the_standard_format(tmp_path):
    base = (ROOT / "config/example.toml").read_text()
    env = {**EXAMPLE_ENV, "MARKETING_WEBHOOK_SECRET": "hunter2"}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, base), env=env)
    assert any(p.startswith("teams[0].webhook_secret: must start with 'whsec_'") for p in err.value.problems)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path

