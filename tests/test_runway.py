"""`kind = "runway"`: Runway's API, end to end through the `openai` SDK against its fake."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, key_states, sdk, start
from tests.support import finished_video, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

MODEL = KINDS["runway"].model


def runway_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "runway", keys, **model)


def test_chat_without_streaming(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway)
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert_playable_mp4(httpx.get(completion.model_extra["video"]["url"]).content)
    [task] = jobs(sim)
    assert task.body == {"audio": False, "model": MODEL, "promptText": PROMPT[0]["content"], "ratio": "720:1280",
                         "duration": 4}
    [create] = calls(sim, method="POST")
    assert create.path == "/v1/text_to_video"


def test_chat_stream_shows_runways_progress_and_throttled_is_queued(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert any(v["status"] == "in_progress" and 0 < v["progress"] < 100 for v in videos)  # the fraction, as %
    [task] = jobs(sim)
    assert task.throttled_answers > 0  # the gateway was told THROTTLED and kept waiting
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


def test_videos_api_create_poll_and_download(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a slow sunrise", size="1920x1080", seconds="8")
    assert client.videos.poll(created.id, poll_interval_ms=50).status == "completed"
    assert_playable_mp4(client.videos.download_content(created.id).read())
    [task] = jobs(sim)
    assert (task.body["ratio"], task.body["duration"]) == ("1920:1080", 8)
    assert [c.status for c in calls(sim, path="/files/runway/")] == [200]


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


def test_a_safety_failure_is_a_refusal(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] a forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    refused = finished_video(sdk(gateway), chunks[-1].model_extra["video"]["id"])
    assert refused.error.code == "content_policy_violation" and "SAFETY.INPUT.TEXT" in refused.error.message
    assert len(calls(sim, method="POST")) == 1 and key_states(gateway) == {"healthy"}


def test_a_failed_task_fails_the_video(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[fail] a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == "upstream_error"
    assert "INTERNAL.BAD_OUTPUT" in failed.error.message


def test_a_rate_limited_key_rests_and_the_next_key_serves(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway, keys=("sk-429-a", "sk-good-b"))
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert len(calls(sim, key="sk-429-a")) == 1
    assert key_states(gateway) == {"cooling", "healthy"}


def test_server_errors_while_polling_are_retried(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway, keys=("sk-flakyread-a",))
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert any(c.status >= 500 for c in calls(sim, method="GET", path="/v1/tasks/"))


@pytest.mark.parametrize("extra, param, says", [
    ({"size": "1024x1792"}, "size", "1280x720, 720x1280, 1080x1920, 1920x1080"),
    ({"seconds": "12"}, "seconds", "4, 6, 8 seconds"),
])
def test_what_the_model_cannot_make_is_a_400_that_says_what_it_can(start_simulator, start_gateway, extra, param,
                                                                   says):
    sim, gateway = runway_gateway(start_simulator, start_gateway)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse", **extra)
    assert err.value.param == param and says in err.value.message
    assert not calls(sim, method="POST")


def test_a_400_from_runway_names_the_field(start_simulator, start_gateway):
    sim, gateway = runway_gateway(start_simulator, start_gateway, upstream_params={"fps": 24})
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse")
    assert err.value.param == "fps" and "Unrecognized key" in err.value.message


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
