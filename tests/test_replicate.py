"""`kind = "replicate"`: Replicate's predictions API, end to end through the `openai` SDK against its fake."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, key_states, sdk, start
from tests.support import finished_video, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

VEO = KINDS["replicate"].model


def replicate_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "replicate", keys, **model)


def test_chat_without_streaming(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert_playable_mp4(httpx.get(completion.model_extra["video"]["url"]).content)
    [job] = jobs(sim)
    assert job.input == {"generate_audio": False, "prompt": PROMPT[0]["content"], "duration": 4,
                         "aspect_ratio": "9:16", "resolution": "720p"}
    [create] = calls(sim, method="POST")
    assert create.path == f"/v1/models/{VEO}/predictions" and create.status == 201


def test_chat_stream(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


def test_videos_api_create_poll_and_download_copied_at_once(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a slow sunrise", size="1920x1080", seconds="8")
    assert client.videos.poll(created.id, poll_interval_ms=50).status == "completed"
    # the output was copied before the job completed: the gateway serves it, whatever Replicate deletes later
    assert [c.status for c in calls(sim, path="/files/replicate/")] == [200]
    assert_playable_mp4(client.videos.download_content(created.id).read())
    [job] = jobs(sim)
    assert (job.input["duration"], job.input["aspect_ratio"], job.input["resolution"]) == (8, "16:9", "1080p")


def test_image_to_video_uses_the_input_name_the_model_wants(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway, upstream_model="kwaivgi/kling-v2.1",
                                     seconds_allowed=[5, 10], upstream_params={"mode": "standard"})
    created = sdk(gateway).videos.create(model="sora-2", prompt="animate this",
                                         input_reference=("ref.png", PNG, "image/png"))
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [job] = jobs(sim)
    assert job.model == "kwaivgi/kling-v2.1" and set(job.input) == {"mode", "prompt", "duration", "start_image"}
    assert (job.reference.source, job.reference.mime, job.reference.size) == ("start_image", "image/png", len(PNG))
    # this model makes videos from an image only: without one, a 400 that says so, and nothing is sent
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="no image")
    assert err.value.param == "input_reference" and "from an image only" in err.value.message
    assert len(calls(sim, method="POST")) == 1


def test_a_version_pinned_community_model(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway, upstream_model="community/video-model:5d1a0a2b9c")
    created = sdk(gateway).videos.create(model="sora-2", prompt="a kite")
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [create] = calls(sim, method="POST")
    assert create.path == "/v1/predictions"


def test_an_nsfw_failure_is_a_refusal(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] a forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    refused = finished_video(sdk(gateway), chunks[-1].model_extra["video"]["id"])
    assert refused.error.code == "content_policy_violation" and "NSFW" in refused.error.message
    assert len(calls(sim, method="POST")) == 1 and key_states(gateway) == {"healthy"}


def test_a_failed_prediction_fails_the_video(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[fail] a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == "upstream_error" and "CUDA" in failed.error.message


def test_a_rate_limited_key_rests_and_the_next_key_serves(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway, keys=("sk-429-a", "sk-good-b"))
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert len(calls(sim, key="sk-429-a")) == 1
    assert key_states(gateway) == {"cooling", "healthy"}


def test_server_errors_while_polling_are_retried(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    completion = sdk(gateway).chat.completions.create(
        model="sora-2", messages=[{"role": "user", "content": "[flakypoll] a lighthouse"}])
    assert completion.model_extra["video"]["status"] == "completed"
    assert any(c.status == 503 for c in calls(sim, method="GET", path="/v1/predictions/"))


@pytest.mark.parametrize("extra, param, says", [
    ({"size": "1024x1792"}, "size", "aspect ratios 16:9, 9:16 at 720p, 1080p"),
    ({"seconds": "12"}, "seconds", "4, 6, 8 seconds"),
])
def test_what_the_model_cannot_make_is_a_400_that_says_what_it_can(start_simulator, start_gateway, extra, param,
                                                                   says):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse", **extra)
    assert err.value.param == param and says in err.value.message
    assert not calls(sim, method="POST")


def test_a_422_names_the_input(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway, upstream_params={"fps": 24})
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse")
    assert err.value.param == "fps" and "not allowed" in err.value.message


def test_the_fake_speaks_replicates_prediction_object(start_simulator):
    sim = start_simulator(kind="replicate", duration_s=0.2)
    headers = {"authorization": "Bearer sk-good-1"}
    created = httpx.post(f"{sim.url}/v1/models/{VEO}/predictions", headers=headers,
                         json={"input": {"prompt": "a fox", "duration": 8}})
    assert created.status_code == 201 and created.json()["status"] == "starting"
    prediction = wait_until(lambda: (p := httpx.get(created.json()["urls"]["get"], headers=headers).json())
                            ["status"] == "succeeded" and p)
    assert isinstance(prediction["output"], str) and prediction["data_removed"] is False
    assert_playable_mp4(httpx.get(prediction["output"]).content)  # public, no key
    listed = httpx.get(f"{sim.url}/v1/predictions", headers=headers).json()["results"]
    assert [p["id"] for p in listed] == [prediction["id"]]
    wrong = httpx.post(f"{sim.url}/v1/models/kwaivgi/kling-v2.1/predictions", headers=headers,
                       json={"input": {"prompt": "x", "image": "data:image/png;base64,AAAA"}})
    assert wrong.status_code == 422 and wrong.json()["invalid_fields"][0]["field"] == "input.image"
    limited = httpx.post(f"{sim.url}/v1/models/{VEO}/predictions", headers={"authorization": "Bearer sk-429-x"},
                         json={"input": {"prompt": "x"}})
    assert limited.status_code == 429 and "rate limit resets" in limited.json()["detail"]


def test_a_create_whose_answer_was_lost_is_found_in_the_list_not_paid_twice(start_simulator, start_gateway):
    sim, gateway = replicate_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[lost] a kite")
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    assert [c.status for c in calls(sim, method="POST")] == [502]  # created once, its answer lost
    assert len(jobs(sim)) == 1
    assert [c.status for c in calls(sim, method="GET", path="/v1/predictions")][0] == 200  # the list was read
    assert_playable_mp4(sdk(gateway).videos.download_content(created.id).read())
