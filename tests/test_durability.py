"""A gateway killed mid-job and started again finishes the job without paying for it twice,
and its ledger stays exact."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import openai

from tests.support import ALPHA_KEY, finished_video, process_config, running_video_id, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4


def start_gateway_process(config_path, port: int, log_path) -> subprocess.Popen:
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/healthz"

    def ready() -> bool:
        assert process.poll() is None, open(log_path).read()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, interval=0.05)
    return process


def test_sigkill_mid_job_then_restart_finishes_without_a_second_submission(tmp_path, start_simulator,
                                                                            no_secrets_in_logs):
    simulator = start_simulator(duration_s=3.0)
    config_path, port = process_config(tmp_path, simulator.url + "/v1")
    log_path = tmp_path / "gateway.log"
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ALPHA_KEY, max_retries=0)

    first = start_gateway_process(config_path, port, log_path)
    try:
        stream = sdk.chat.completions.create(model="sora-2", messages=PROMPT, stream=True)
        video_id = running_video_id(stream)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stream.close()
    finally:
        if first.poll() is None:
            first.kill()

    second = start_gateway_process(config_path, port, log_path)
    try:
        video = finished_video(sdk, video_id)
        assert video.status == "completed", video
        assert_playable_mp4(sdk.videos.download_content(video_id).read())
        usage = sdk.get("/usage", cast_to=httpx.Response).json()
        assert usage["total"] == {"requests": 1, "videos": 1, "video_seconds": 4, "cost_usd": 0.4, "resubmitted": 0}
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    calls = httpx.get(simulator.url + "/_sim/calls").json()["calls"]
    assert len([c for c in calls if c["method"] == "POST" and c["path"] == "/v1/videos"]) == 1
    log = log_path.read_text()
    for secret in [*no_secrets_in_logs, "sk-good-1"]:
        assert secret not in log


def test_an_extension_killed_mid_job_resumes_and_is_charged_once_for_its_own_seconds(
        tmp_path, start_simulator, no_secrets_in_logs):
    simulator = start_simulator(duration_s=2.0)
    config_path, port = process_config(tmp_path, simulator.url + "/v1")
    log_path = tmp_path / "gateway.log"
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ALPHA_KEY, max_retries=0)

    first = start_gateway_process(config_path, port, log_path)
    try:
        source = sdk.chat.completions.create(model="sora-2", messages=PROMPT)
        history = [*PROMPT, {"role": "assistant", "content": source.choices[0].message.content},
                   {"role": "user", "content": "the fox keeps running into the forest"}]
        stream = sdk.chat.completions.create(model="sora-2", messages=history, stream=True,
                                             extra_body={"extend_seconds": 8})
        video_id = running_video_id(stream)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stream.close()
    finally:
        if first.poll() is None:
            first.kill()

    second = start_gateway_process(config_path, port, log_path)
    try:
        video = finished_video(sdk, video_id)
        assert video.status == "completed" and video.seconds == "12", video
        assert_playable_mp4(sdk.videos.download_content(video_id).read())
        usage = sdk.get("/usage", cast_to=httpx.Response).json()
        assert usage["total"] == {"requests": 2, "videos": 2, "video_seconds": 12, "cost_usd": 1.2, "resubmitted": 0}
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    calls = httpx.get(simulator.url + "/_sim/calls").json()["calls"]
    assert len([c for c in calls if c["method"] == "POST" and c["path"] == "/v1/videos/extensions"]) == 1
