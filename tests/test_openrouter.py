"""`kind = "openrouter"`: OpenRouter's video API, end to end through the `openai` SDK against its fake."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, key_states, sdk, start
from tests.support import finished_video, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

MODEL = KINDS["openrouter"].model
IMAGE_MODEL = KINDS["openrouter"].models["upstream_model_image"]


def router_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "openrouter", keys, **model)


def test_chat_without_streaming(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway)
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    video = completion.model_extra["video"]
    assert video["status"] == "completed"
    assert_playable_mp4(httpx.get(video["url"]).content)
    [job] = jobs(sim)
    assert job.body == {"generate_audio": False, "seed": 7, "model": MODEL, "prompt": PROMPT[0]["content"],
                        "duration": 4, "aspect_ratio": "9:16", "resolution": "720p"}
    # the relative polling_url was resolved against the origin, and every call carried the key
    polls = calls(sim, method="GET", path=f"/api/v1/videos/{job.id}")
    assert polls and all(c.key == "sk-good-1" and c.status == 200 for c in polls)


def test_chat_stream(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


def test_videos_api_create_poll_and_download_with_the_key(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a slow sunrise", size="1920x1080", seconds="8")
    assert client.videos.poll(created.id, poll_interval_ms=50).status == "completed"
    assert_playable_mp4(client.videos.download_content(created.id).read())
    [job] = jobs(sim)
    assert (job.body["aspect_ratio"], job.body["resolution"], job.body["duration"]) == ("16:9", "1080p", 8)
    [content] = calls(sim, path=f"/api/v1/videos/{job.id}/content")
    assert content.key == "sk-good-1" and content.status == 200


def test_image_to_video_is_a_first_frame_for_the_image_model(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="animate this", size="1280x720",
                                         input_reference=("ref.png", PNG, "image/png"))
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [job] = jobs(sim)
    assert job.model == IMAGE_MODEL
    assert (job.reference.source, job.reference.mime, job.reference.size) == ("first_frame", "image/png", len(PNG))


def test_a_content_policy_failure_is_a_refusal(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] a forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    refused = finished_video(sdk(gateway), chunks[-1].model_extra["video"]["id"])
    assert refused.error.code == "content_policy_violation" and "Content policy violation" in refused.error.message
    assert len(calls(sim, method="POST")) == 1 and key_states(gateway) == {"healthy"}


def test_a_moderation_403_on_the_create_is_a_refusal_not_a_bad_key(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="[moderate] a scene")
    assert err.value.code == "content_policy_violation" and "flagged" in err.value.message
    assert len(calls(sim, method="POST")) == 1 and key_states(gateway) == {"healthy"}


def test_a_failed_job_fails_the_video(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[fail] a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == "upstream_error"
    assert "Provider returned error" in failed.error.message


def test_a_rate_limited_key_rests_and_the_next_key_serves(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway, keys=("sk-429-a", "sk-good-b"))
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert len(calls(sim, key="sk-429-a")) == 1
    assert key_states(gateway) == {"cooling", "healthy"}


def test_server_errors_while_polling_are_retried(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway, keys=("sk-flakyread-a",))
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert any(c.status >= 500 for c in calls(sim, method="GET", path="/api/v1/videos/job-"))


@pytest.mark.parametrize("extra, param, says", [
    ({"size": "1024x1024"}, "size", "aspect ratios 16:9, 9:16 at 720p, 1080p"),
    ({"seconds": "12"}, "seconds", "4, 6, 8 seconds"),
])
def test_what_the_model_cannot_make_is_a_400_from_its_published_capabilities(start_simulator, start_gateway,
                                                                             extra, param, says):
    sim, gateway = router_gateway(start_simulator, start_gateway)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse", **extra)
    assert err.value.param == param and says in err.value.message
    assert not calls(sim, method="POST")


def test_the_fake_answers_202_with_a_relative_polling_url_and_guards_the_bytes(start_simulator):
    sim = start_simulator(kind="openrouter", duration_s=0.2)
    headers = {"authorization": "Bearer sk-good-1"}
    created = httpx.post(sim.url + "/api/v1/videos", headers=headers, json={"model": MODEL, "prompt": "a fox"})
    assert created.status_code == 202
    job = created.json()
    assert job["status"] == "pending" and job["polling_url"] == f"/api/v1/videos/{job['id']}"
    done = wait_until(lambda: (j := httpx.get(sim.url + job["polling_url"], headers=headers).json())["status"]
                      == "completed" and j)
    [url] = done["unsigned_urls"]
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["message"] == "Missing Authentication header"
    assert_playable_mp4(httpx.get(url, headers=headers).content)
    bad = httpx.post(sim.url + "/api/v1/videos", headers=headers, json={"model": MODEL, "prompt": "x", "duration": 5})
    assert bad.status_code == 400 and "supported: 4, 6, 8" in bad.json()["error"]["message"]
