"""`kind = "gemini"`: Veo through the Gemini API, end to end through the `openai` SDK against the Gemini fake."""
from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, key_states, sdk, start
from tests.support import ADMIN_KEY, finished_video, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

MODEL = KINDS["gemini"].model
IMAGE_MODEL = KINDS["gemini"].models["upstream_model_image"]


def veo_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "gemini", keys, **model)


def test_chat_without_streaming_makes_a_veo_video(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    video = completion.model_extra["video"]
    assert video["status"] == "completed"
    assert_playable_mp4(httpx.get(video["url"]).content)
    [job] = jobs(sim)
    assert job.model == MODEL and job.prompt == PROMPT[0]["content"]
    # the SDK's shape: numbers stay numbers, the model's upstream_params ride along, the request's mapping wins
    assert job.parameters == {"negativePrompt": "blurry", "personGeneration": "allow_adult", "sampleCount": 1,
                              "durationSeconds": 4, "aspectRatio": "9:16", "resolution": "720p"}
    [create] = calls(sim, method="POST")
    assert create.path == f"/v1beta/models/{MODEL}:predictLongRunning" and create.key == "sk-good-1"


def test_chat_stream_follows_the_operation_to_the_video(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert "in_progress" in {v["status"] for v in videos}
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


def test_videos_api_create_poll_and_download_through_the_redirect(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a slow sunrise", size="1920x1080", seconds="8")
    done = client.videos.poll(created.id, poll_interval_ms=50)
    assert (done.status, done.size, done.seconds) == ("completed", "1920x1080", "8")
    assert_playable_mp4(client.videos.download_content(done.id).read())
    [job] = jobs(sim)
    assert (job.parameters["aspectRatio"], job.parameters["resolution"], job.parameters["durationSeconds"]) \
        == ("16:9", "1080p", 8)
    # the file link needs the key and answers a redirect, which the gateway followed; the client never sees it
    [link] = calls(sim, path="/v1beta/files/")
    assert link.key == "sk-good-1" and link.status == 302
    assert [c.status for c in calls(sim, path="/files/veo/")] == [200]


def test_image_to_video_sends_the_image_to_the_image_model(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="animate this", size="1280x720",
                                   input_reference=("ref.png", PNG, "image/png"))
    assert client.videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [job] = jobs(sim)
    assert job.model == IMAGE_MODEL
    assert (job.reference.source, job.reference.mime, job.reference.size) == ("bytesBase64Encoded", "image/png",
                                                                             len(PNG))


def test_a_safety_filtered_operation_is_a_refusal_on_the_same_key(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] a forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    video = chunks[-1].model_extra["video"]
    refused = finished_video(sdk(gateway), video["id"])
    assert refused.status == "failed" and refused.error.code == "content_policy_violation"
    assert "You will not be charged" in refused.error.message
    assert len(calls(sim, method="POST")) == 1  # never tried again, on this key or another
    assert key_states(gateway) == {"healthy"}


@pytest.mark.parametrize("marker, code", [("[fail]", "internal"), ("[nosamples]", "upstream_error")])
def test_a_failed_or_empty_operation_fails_the_video(start_simulator, start_gateway, marker, code):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt=f"{marker} a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == code


def test_a_video_sent_inline_is_stored_too(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[inline] a lighthouse")
    assert finished_video(sdk(gateway), created.id).status == "completed"
    assert_playable_mp4(sdk(gateway).videos.download_content(created.id).read())


def test_a_rate_limited_key_rests_and_the_next_key_serves(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway, keys=("sk-429-a", "sk-good-b"))
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert len(calls(sim, key="sk-429-a")) == 1  # Google's RetryInfo said 60 s: not asked again
    assert key_states(gateway) == {"cooling", "healthy"}


def test_an_invalid_key_is_disabled_although_google_says_400(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway, keys=("sk-401-a", "sk-good-b"))
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    [refused] = calls(sim, key="sk-401-a")
    assert refused.status == 400
    keys = httpx.get(gateway.url + "/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert {k["state"] for k in keys["data"][0]["keys"]} == {"disabled", "healthy"}
    assert "sk-401-a" not in str(keys)


def test_server_errors_while_polling_are_retried(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway, keys=("sk-flakyread-a",))
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert any(c.status >= 500 for c in calls(sim, method="GET", path="/v1beta/models/"))


@pytest.mark.parametrize("extra, param, says", [
    ({"size": "1024x1792"}, "size", "1280x720, 720x1280, 1920x1080, 1080x1920"),
    ({"seconds": "12"}, "seconds", "4, 6, 8 seconds"),
])
def test_what_veo_cannot_make_is_a_400_that_says_what_it_can(start_simulator, start_gateway, extra, param, says):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse", **extra)
    assert err.value.param == param and says in err.value.message
    assert not calls(sim, method="POST")


# The fake itself: what the dialect's tests believe must be what the Gemini API does (PROVIDERS.md §1, §9).

def test_the_fake_wants_googles_key_header_and_answers_in_googles_envelope(start_simulator):
    sim = start_simulator(kind="gemini")
    url = f"{sim.url}/v1beta/models/{MODEL}:predictLongRunning"
    body = {"instances": [{"prompt": "a fox"}], "parameters": {"durationSeconds": 8}}
    missing = httpx.post(url, json=body, headers={"authorization": "Bearer sk-good-1"})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    bad = httpx.post(url, json=body, headers={"x-goog-api-key": "sk-401-x"}).json()["error"]
    assert bad["code"] == 400 and bad["details"][0]["reason"] == "API_KEY_INVALID"
    limited = httpx.post(url, json=body, headers={"x-goog-api-key": "sk-429-x"})
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["error"]["details"][1]["retryDelay"].endswith("s")
    by_query = httpx.post(url + "?key=sk-good-1", json=body)
    assert by_query.status_code == 200 and by_query.json()["name"].startswith(f"models/{MODEL}/operations/")


@pytest.mark.parametrize("parameters, says", [
    ({"durationSeconds": "8"}, "TYPE_INT32"),
    ({"seed": 1}, "only supported on Vertex AI"),
    ({"generateAudio": True}, "only supported on Vertex AI"),
    ({"lastFrame": {}}, 'Unknown name "lastFrame"'),
    ({"aspectRatio": "1:1"}, "16:9 and 9:16"),
])
def test_the_fake_refuses_what_the_gemini_api_refuses(start_simulator, parameters, says):
    sim = start_simulator(kind="gemini")
    response = httpx.post(f"{sim.url}/v1beta/models/{MODEL}:predictLongRunning", headers={"x-goog-api-key": "k"},
                          json={"instances": [{"prompt": "a fox"}], "parameters": parameters})
    assert response.status_code == 400 and says in response.json()["error"]["message"]


def test_the_fake_leaves_done_out_while_running_and_the_file_needs_the_key(start_simulator):
    sim = start_simulator(kind="gemini", duration_s=0.2)
    headers = {"x-goog-api-key": "sk-good-1"}
    name = httpx.post(f"{sim.url}/v1beta/models/{MODEL}:predictLongRunning", headers=headers,
                      json={"instances": [{"prompt": "a fox"}]}).json()["name"]
    assert httpx.get(f"{sim.url}/v1beta/{name}", headers=headers).json() == {"name": name}

    done = wait_until(lambda: (op := httpx.get(f"{sim.url}/v1beta/{name}", headers=headers).json()).get("done")
                      and op)
    uri = done["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
    assert httpx.get(uri).status_code == 403
    redirect = httpx.get(uri, headers=headers)
    assert redirect.status_code == 302
    assert_playable_mp4(httpx.get(redirect.headers["location"]).content)


def test_an_image_in_a_chat_message_animates_on_the_image_model(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": [
        {"type": "text", "text": "animate this"}, {"type": "image_url", "image_url": {"url": data_url}}]}])
    assert completion.model_extra["video"]["status"] == "completed"
    [job] = jobs(sim)
    assert job.model == IMAGE_MODEL and job.reference.size == len(PNG)
