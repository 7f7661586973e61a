"""`kind = "fal"`: fal's queue API, end to end through the `openai` SDK against its fake."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, key_states, sdk, start
from tests.support import finished_video, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

VEO = KINDS["fal"].model
KLING = "fal-ai/kling-video/v2.1/master/text-to-video"


def fal_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "fal", keys, **model)


def test_chat_without_streaming(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway)
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert_playable_mp4(httpx.get(completion.model_extra["video"]["url"]).content)
    [job] = jobs(sim)
    assert job.input == {"generate_audio": False, "negative_prompt": "blurry", "prompt": PROMPT[0]["content"],
                         "duration": "4s", "aspect_ratio": "9:16", "resolution": "720p"}
    [submit] = calls(sim, method="POST")
    assert submit.path == f"/{VEO}" and submit.key == "sk-good-1"
    # polled at the URLs fal returned, which name only {owner}/{app}; 202 until done, then 200
    statuses = [c.status for c in calls(sim, path=f"/fal-ai/veo3.1/requests/{job.id}/status")]
    assert statuses[0] == 202 and statuses[-1] == 200


def test_chat_stream_reports_queued_then_in_progress(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


def test_videos_api_create_poll_and_download(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a slow sunrise", size="1920x1080", seconds="8")
    assert client.videos.poll(created.id, poll_interval_ms=50).status == "completed"
    assert_playable_mp4(client.videos.download_content(created.id).read())
    [job] = jobs(sim)
    assert (job.input["duration"], job.input["aspect_ratio"], job.input["resolution"]) == ("8s", "16:9", "1080p")
    assert [c.status for c in calls(sim, path="/files/fal/")] == [200]


def test_image_to_video_goes_to_the_image_to_video_model(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="animate this", size="1280x720",
                                         input_reference=("ref.png", PNG, "image/png"))
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [job] = jobs(sim)
    assert job.model == VEO + "/image-to-video"
    assert (job.reference.source, job.reference.mime, job.reference.size) == ("image_url", "image/png", len(PNG))


def test_each_family_gets_its_own_duration_format_and_image_model(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway, upstream_model=KLING, seconds_allowed=[5, 10],
                               sizes=["1280x720"], upstream_params={"cfg_scale": 0.5},
                               upstream_model_image="fal-ai/kling-video/v2.1/master/image-to-video")
    client = sdk(gateway)
    text = client.videos.create(model="sora-2", prompt="a kite", seconds="10")
    image = client.videos.create(model="sora-2", prompt="animate", input_reference=("r.png", PNG, "image/png"))
    for video in (text, image):
        assert client.videos.poll(video.id, poll_interval_ms=50).status == "completed"
    by_prompt = {job.prompt: job for job in jobs(sim)}
    assert by_prompt["a kite"].input == {"cfg_scale": 0.5, "prompt": "a kite", "duration": "10", "aspect_ratio": "16:9"}
    assert by_prompt["animate"].model == "fal-ai/kling-video/v2.1/master/image-to-video"


def test_a_content_policy_result_is_a_refusal(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] a forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    refused = finished_video(sdk(gateway), chunks[-1].model_extra["video"]["id"])
    assert refused.error.code == "content_policy_violation" and "flagged" in refused.error.message
    assert len(calls(sim, method="POST")) == 1 and key_states(gateway) == {"healthy"}


def test_a_failed_request_fails_the_video(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[fail] a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == "internal_server_error"


def test_a_rate_limited_key_rests_and_the_next_key_serves(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway, keys=("sk-429-a", "sk-good-b"))
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert len(calls(sim, key="sk-429-a")) == 1
    assert key_states(gateway) == {"cooling", "healthy"}


def test_server_errors_while_polling_are_retried(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway, keys=("sk-flakyread-a",))
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert any(c.status >= 500 for c in calls(sim, method="GET", path="/fal-ai/"))


@pytest.mark.parametrize("extra, param, says", [
    ({"size": "1024x1792"}, "size", "aspect ratios 16:9, 9:16 at 720p, 1080p, 4k"),
    ({"seconds": "12"}, "seconds", "4, 6, 8 seconds"),
])
def test_what_the_model_cannot_make_is_a_400_that_says_what_it_can(start_simulator, start_gateway, extra, param,
                                                                   says):
    sim, gateway = fal_gateway(start_simulator, start_gateway)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse", **extra)
    assert err.value.param == param and says in err.value.message
    assert not calls(sim, method="POST")


def test_a_422_from_fal_names_the_field(start_simulator, start_gateway):
    sim, gateway = fal_gateway(start_simulator, start_gateway, upstream_params={"fps": 30})
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse")
    assert err.value.param == "fps" and "extra fields not permitted" in err.value.message


def test_the_fake_answers_202_until_completed_and_names_only_owner_and_app(start_simulator):
    sim = start_simulator(kind="fal", duration_s=0.2)
    headers = {"authorization": "Key sk-good-1"}
    assert httpx.post(f"{sim.url}/{VEO}", json={"prompt": "x"}).json() == {"detail": "Unauthorized"}
    queued = httpx.post(f"{sim.url}/{VEO}", headers=headers, json={"prompt": "a fox", "duration": "8s"}).json()
    assert queued["status"] == "IN_QUEUE" and queued["status_url"].endswith(
        f"/fal-ai/veo3.1/requests/{queued['request_id']}/status")
    first = httpx.get(queued["status_url"], headers=headers)
    assert first.status_code == 202 and first.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    wait_until(lambda: httpx.get(queued["status_url"], headers=headers).status_code == 200)
    video = httpx.get(queued["response_url"], headers=headers).json()["video"]
    assert_playable_mp4(httpx.get(video["url"]).content)  # a public CDN link
    bad = httpx.post(f"{sim.url}/{VEO}", headers=headers, json={"prompt": "x", "duration": 8})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "duration"]


def test_a_cdn_link_to_an_internal_address_is_not_fetched(start_simulator, start_gateway):
    """The CDN link is not on the queue's origin: the fetch guard checks it like any URL from outside."""
    sim, gateway = start(start_simulator, start_gateway, "fal", upstream={"job_timeout_s": 30, "max_retry_s": 5},
                         simulator_settings={"duration_s": 0.2, "public_url": "http://localhost:9"},
                         sizes=["1280x720"], seconds_allowed=[8], upstream_params={})
    created = sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed"
    assert "video link host 'localhost' resolves to a non-public address" in failed.error.message
