"""`kind = "replicate"`: what only Replicate's predictions API does, end to end through the `openai` SDK against its
fake. What every provider kind does alike is in tests/test_provider_kinds.py."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, sdk, start
from tests.support import wait_until
from tests.test_chat import assert_playable_mp4
from tests.test_videos_api import PNG

VEO = KINDS["replicate"].model


def replicate_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "replicate", keys, **model)


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
