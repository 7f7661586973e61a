"""Config reload without downtime, and a graceful shutdown that loses nothing."""
from __future__ import annotations

import signal

import httpx
import openai
import pytest

from tests.support import (
    ADMIN_KEY,
    ALPHA_KEY,
    base_config,
    finished_video,
    free_port,
    hash_key,
    process_config,
    to_toml,
    wait_until,
)
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_durability import start_gateway_process

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
NEW_KEY = "sk-team-gamma-0123456789"


def sdk(url: str, key: str = ALPHA_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def with_gamma(raw: dict) -> dict:
    raw = {**raw, "teams": [*raw["teams"], {"name": "gamma", "keys": [hash_key(NEW_KEY)], "models": ["sora-2"],
                                            "quotas": {"videos_per_day": 1}}]}
    return raw


def test_reload_admits_a_new_team_key_and_a_broken_config_leaves_the_old_one(gateway, no_secrets_in_logs):
    no_secrets_in_logs.append(NEW_KEY)
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway.url, NEW_KEY).models.list()
    gateway.config_path.write_text(to_toml(with_gamma(gateway.raw | {"server": gateway.raw["server"]})))
    response = httpx.post(gateway.url + "/admin/reload", headers=ADMIN)
    assert response.status_code == 200 and "teams, models or admin keys changed" in response.json()["changes"]
    assert [m.id for m in sdk(gateway.url, NEW_KEY).models.list()] == ["sora-2"]
    sdk(gateway.url, NEW_KEY).chat.completions.create(model="sora-2", messages=PROMPT)
    with pytest.raises(openai.RateLimitError):  # its new quota applies at once
        sdk(gateway.url, NEW_KEY).chat.completions.create(model="sora-2",
                                                          messages=[{"role": "user", "content": "another"}])
    gateway.config_path.write_text('[server]\nsigning_secret = "short"\n')
    response = httpx.post(gateway.url + "/admin/reload", headers=ADMIN)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_config"
    assert "server.signing_secret" in response.json()["error"]["message"]
    assert sdk(gateway.url, NEW_KEY).models.list()  # the previous config still serves
    assert httpx.post(gateway.url + "/admin/reload").status_code == 401


def test_reload_applies_new_upstream_keys_and_re_enables_disabled_ones(start_simulator, start_gateway):
    simulator = start_simulator()
    gateway = start_gateway(simulator, upstreams=[{
        "name": "sim", "kind": "videos", "base_url": simulator.url + "/v1", "keys": ["sk-401-old"],
        "poll_interval_s": 0.05}])
    with pytest.raises(openai.InternalServerError):
        sdk(gateway.url).chat.completions.create(model="sora-2", messages=PROMPT)
    raw = dict(gateway.raw)
    raw["upstreams"] = [{**raw["upstreams"][0], "keys": ["sk-401-old", "sk-good-new"]}]
    gateway.raw["upstreams"][0]["keys"].append("sk-good-new")
    gateway.config_path.write_text(to_toml(raw | {"server": {**raw["server"], "public_url": gateway.url}}))
    changes = httpx.post(gateway.url + "/admin/reload", headers=ADMIN).json()["changes"]
    assert any("added" in c for c in changes) and any("re-enabled" in c for c in changes)
    completion = sdk(gateway.url).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"


def test_sighup_reloads_the_config_file(tmp_path, simulator, no_secrets_in_logs):
    no_secrets_in_logs.append(NEW_KEY)
    port = free_port()
    raw = base_config(tmp_path, simulator.url + "/v1")
    raw["server"]["public_url"] = f"http://127.0.0.1:{port}"
    path = tmp_path / "gateway.toml"
    path.write_text(to_toml(raw))
    process = start_gateway_process(path, port, tmp_path / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        path.write_text(to_toml(with_gamma(raw)))
        process.send_signal(signal.SIGHUP)

        def admitted() -> bool:
            try:
                return bool(sdk(url, NEW_KEY).models.list())
            except openai.AuthenticationError:
                return False

        wait_until(admitted, timeout=10)
        path.write_text("not toml [")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reload rejected" in (tmp_path / "gateway.log").read_text(), timeout=10)
        assert process.poll() is None and admitted()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)


def test_sigterm_during_a_stream_loses_nothing_and_the_job_completes_after_restart(tmp_path, start_simulator,
                                                                                   no_secrets_in_logs):
    simulator = start_simulator(duration_s=4)
    path, port = process_config(tmp_path, simulator.url + "/v1", ping_interval_s=30.0)  # nothing else ends it
    log_path = tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    first = start_gateway_process(path, port, log_path)
    stream = sdk(url).chat.completions.create(model="sora-2", messages=PROMPT, stream=True)
    chunks = iter(stream)
    video_id = next(chunks).model_extra["video"]["id"]
    first.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError) as err:
        for _ in chunks:
            pass
    assert video_id in err.value.message and "keeps generating" in err.value.message
    assert first.wait(15) in (0, -signal.SIGTERM)  # it exits by itself, promptly (uvicorn re-raises the signal)
    second = start_gateway_process(path, port, log_path)
    try:
        video = finished_video(sdk(url), video_id)
        assert video.status == "completed"
        assert_playable_mp4(sdk(url).videos.download_content(video_id).read())
        usage = sdk(url).get("/usage", cast_to=httpx.Response).json()
        assert usage["total"] == {"requests": 1, "videos": 1, "video_seconds": 4, "cost_usd": 0.4, "resubmitted": 0}
        assert simulator.app.state.sim.count(method="POST") == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    log = log_path.read_text()
    for secret in [*no_secrets_in_logs, "sk-good-1"]:
        assert secret not in log


def test_a_waiting_non_streaming_request_gets_a_retryable_503_on_shutdown_and_the_retry_joins(
        tmp_path, start_simulator):
    simulator = start_simulator(duration_s=6)
    path, port = process_config(tmp_path, simulator.url + "/v1")
    url = f"http://127.0.0.1:{port}"
    first = start_gateway_process(path, port, tmp_path / "gateway.log")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: sdk(url).chat.completions.create(model="sora-2", messages=PROMPT))
        wait_until(lambda: simulator.app.state.sim.count(method="GET") > 0)
        first.send_signal(signal.SIGTERM)
        with pytest.raises(openai.InternalServerError) as err:
            waiting.result(timeout=20)
    assert err.value.status_code == 503 and err.value.code == "gateway_restarting"
    assert err.value.response.headers["retry-after"] == "5"
    first.wait(15)
    second = start_gateway_process(path, port, tmp_path / "gateway.log")
    try:
        raw_response = sdk(url).chat.completions.with_raw_response.create(model="sora-2", messages=PROMPT)
        # it joins the resumed job ("hit" only if the job already finished on a very slow machine)
        assert raw_response.headers["x-cache"] in ("joined", "hit")
        assert raw_response.parse().model_extra["video"]["status"] == "completed"
        assert simulator.app.state.sim.count(method="POST") == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
