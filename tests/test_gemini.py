"""`kind = "gemini"`: what only Veo through the Gemini API does, end to end through the `openai` SDK against the
Gemini fake. What every provider kind does alike is in tests/test_provider_kinds.py."""
from __future__ import annotations

import base64

import httpx
import pytest

from tests.providers import KINDS, calls, jobs, sdk, start
from tests.support import ADMIN_KEY, finished_video, wait_until
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

MODEL = KINDS["gemini"].model
IMAGE_MODEL = KINDS["gemini"].models["upstream_model_image"]


def veo_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "gemini", keys, **model)


def test_an_operation_done_with_no_samples_fails_the_video(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[nosamples] a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == "upstream_error"


def test_a_video_sent_inline_is_stored_too(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[inline] a lighthouse")
    assert finished_video(sdk(gateway), created.id).status == "completed"
    assert_playable_mp4(sdk(gateway).videos.download_content(created.id).read())


def test_an_invalid_key_is_disabled_although_google_says_400(start_simulator, start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway, keys=("sk-401-a", "sk-good-b"))
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    [refused] = calls(sim, key="sk-401-a")
    assert refused.status == 400
    keys = httpx.get(gateway.url + "/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert {k["state"] for k in keys["data"][0]["keys"]} == {"disabled", "healthy"}
    assert "sk-401-a" not in str(keys)


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
