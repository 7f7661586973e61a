"""`kind = "fal"`: what only fal's queue API does, end to end through the `openai` SDK against its fake. What every
provider kind does alike is in tests/test_provider_kinds.py."""
from __future__ import annotations

import httpx

from tests.providers import KINDS, jobs, sdk, start
from tests.support import finished_video, wait_until
from tests.test_chat import assert_playable_mp4
from tests.test_videos_api import PNG

VEO = KINDS["fal"].model
KLING = "fal-ai/kling-video/v2.1/master/text-to-video"


def fal_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "fal", keys, **model)


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
