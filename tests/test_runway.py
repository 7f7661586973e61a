"""`kind = "runway"`: what only Runway's API does, end to end through the `openai` SDK against its fake. What every
provider kind does alike is in tests/test_provider_kinds.py."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, sdk, start
from tests.support import wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

MODEL = KINDS["runway"].model


def runway_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "runway", keys, **model)


def test_a_stream_shows_runways_fraction_and_throttled_is_queued(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert any(v["status"] == "in_progress" and 0 < v["progress"] < 100 for v in videos)  # the fraction, as %
    [task] = jobs(sim)
    assert task.throttled_answers > 0  # the gateway was told THROTTLED and kept waiting


def test_image_to_video_goes_to_its_own_endpoint(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway, upstream_model="gen4_turbo", sizes=["1280x720"],
                                  seconds_allowed=[5, 10], upstream_params={})
    created = sdk(gateway).videos.create(model="sora-2", prompt="animate this", seconds="5",
                                         input_reference=("ref.png", PNG, "image/png"))
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [task] = jobs(sim)
    assert task.model == "gen4_turbo" and calls(sim, method="POST")[0].path == "/v1/image_to_video"
    assert (task.reference.source, task.reference.mime, task.reference.size) == ("promptImage", "image/png", len(PNG))
    with pytest.raises(openai.BadRequestError) as err:  # gen4_turbo has no text-to-video
        sdk(gateway).videos.create(model="sora-2", prompt="no image", seconds="5")
    assert err.value.param == "input_reference"


def test_the_fake_wants_the_version_header_and_strict_bodies(start_simulator):
    sim = start_simulator(kind="runway", duration_s=0.2)
    auth = {"authorization": "Bearer sk-good-1"}
    headers = {**auth, "x-runway-version": "2024-11-06"}
    body = {"model": MODEL, "promptText": "a fox", "ratio": "1280:720", "duration": 8}
    assert httpx.post(sim.url + "/v1/text_to_video", headers=auth, json=body).status_code == 400
    wrong = httpx.post(sim.url + "/v1/text_to_video", headers=headers, json={**body, "promptImage": "x"})
    assert wrong.status_code == 400 and wrong.json()["issues"][0]["path"] == ["promptImage"]
    task = httpx.post(sim.url + "/v1/text_to_video", headers=headers, json=body).json()
    seen = set()

    def succeeded():
        answer = httpx.get(f"{sim.url}/v1/tasks/{task['id']}", headers=headers).json()
        seen.add(answer["status"])
        return answer["status"] == "SUCCEEDED" and answer

    done = wait_until(succeeded)
    assert {"PENDING", "THROTTLED", "SUCCEEDED"} <= seen
    assert_playable_mp4(httpx.get(done["output"][0]).content)  # signed, no key
