"""Chat completions → video, end to end through the real `openai` SDK against the simulator."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import time

import av
import httpx
import openai
import pytest

from tests.support import ALPHA_KEY, BETA_KEY, LIMITED_KEY, SIGNING_SECRET, failing, wait_until

PROMPT = [{"role": "user", "content": "a red fox running through fresh snow"}]


def client(gateway, key: str = ALPHA_KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, **kwargs)


def assert_playable_mp4(data: bytes) -> None:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f for _, f in zip(range(3), container.decode(stream))]
    assert frames and frames[0].width > 0


def test_non_streaming_returns_a_link_that_plays_in_a_browser(gateway):
    completion = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    video = completion.model_extra["video"]
    assert video["status"] == "completed" and video["progress"] == 100
    assert video["id"].startswith("video_")
    content = completion.choices[0].message.content
    url = video["url"]
    # a link first (markdown and text clients), then the block Open WebUI plays inline
    assert content == f'✅ Video ready: [▶ Watch]({url})\n\n<video src="{url}" controls>\n{url}\n</video>'
    assert completion.choices[0].finish_reason == "stop"
    assert re.fullmatch(re.escape(gateway.url + f"/v1/videos/{video['id']}/content/") + r"\d+\.[\w-]+\.mp4", url)
    response = httpx.get(video["url"])  # no headers, as a browser would
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert_playable_mp4(response.content)


def test_streaming_sends_role_once_progress_then_the_link(gateway):
    stream = client(gateway).chat.completions.create(
        model="sora-2", messages=PROMPT, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    content_chunks = [c for c in chunks if c.choices]
    roles = [c.choices[0].delta.role for c in content_chunks]
    assert roles[0] == "assistant" and all(r is None for r in roles[1:])
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert "> ⏳ Queued" in text or "> 🎬 Generating:" in text
    assert re.search(r"> 🎬 Generating: \d+%", text), text
    videos = [c.model_extra["video"] for c in content_chunks]
    assert len({v["id"] for v in videos}) == 1
    assert videos[-1]["status"] == "completed" and videos[-1]["url"]
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in content_chunks[:-1]] == [None] * (len(content_chunks) - 1)
    url = videos[-1]["url"]
    assert text.endswith(f'✅ Video ready: [▶ Watch]({url})\n\n<video src="{url}" controls>\n{url}\n</video>')
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert chunks[-1].model_extra["video"] == videos[-1]  # every chunk carries the video object
    assert usage.model_extra["video_seconds"] == 4 and usage.model_extra["cost_usd"] == pytest.approx(0.4)
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


def test_stream_wire_format_has_no_event_or_id_lines(gateway):
    body = {"model": "sora-2", "stream": True, "messages": PROMPT}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {ALPHA_KEY}"}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith(("data: ", ": ping")) for line in lines)


def test_zh_format(gateway):
    stream = client(gateway).chat.completions.create(
        model="sora-2", messages=PROMPT, stream=True, extra_body={"stream_format": "zh"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert re.search(r"> 🏃 进度：\d+\.\d%", text)
    match = re.search(r"\[点击这里\]\((https?://[^)]+)\)", text)
    assert match and text.endswith("查看视频~~~\n\n")
    assert httpx.get(match.group(1)).status_code == 200


def test_reasoning_format(gateway):
    chunks = list(client(gateway).chat.completions.create(
        model="sora-2", messages=PROMPT, stream=True, extra_body={"stream_format": "reasoning"}))
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "**Video Generation Progress**" in reasoning
    match = re.fullmatch(r"```html\n<video src='(\S+)' controls></video>\n```", content)
    assert match, content
    assert httpx.get(match.group(1)).status_code == 200


def test_size_and_seconds_are_passed_and_priced(gateway):
    completion = client(gateway).chat.completions.create(
        model="sora-2", messages=PROMPT, extra_body={"size": "1280x720", "seconds": "8"},
        temperature=0.3, top_p=0.9, user="end-user-7")
    video = client(gateway).videos.retrieve(completion.model_extra["video"]["id"])
    assert (video.size, video.seconds, video.status) == ("1280x720", "8", "completed")
    assert completion.usage.model_extra["cost_usd"] == pytest.approx(0.8)


def test_system_text_is_prepended_to_the_prompt(gateway):
    completion = client(gateway).chat.completions.create(model="sora-2", messages=[
        {"role": "system", "content": "Cinematic, 35mm film."},
        {"role": "user", "content": [{"type": "text", "text": "a lighthouse at dawn"}]},
    ])
    video = client(gateway).videos.retrieve(completion.model_extra["video"]["id"])
    assert video.prompt == "Cinematic, 35mm film.\n\na lighthouse at dawn"


def test_without_a_user_message_the_last_developer_or_system_message_is_the_prompt(gateway):
    completion = client(gateway).chat.completions.create(model="sora-2", messages=[
        {"role": "system", "content": "Cinematic, 35mm film."},
        {"role": "developer", "content": "a lighthouse at dawn", "name": "director"},
    ])
    assert completion.model_extra["video"]["status"] == "completed"
    video = client(gateway).videos.retrieve(completion.model_extra["video"]["id"])
    assert video.prompt == "Cinematic, 35mm film.\n\na lighthouse at dawn"
    stream = client(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "developer", "content": "a kite over dunes"}])
    assert [c for c in stream if c.choices][-1].model_extra["video"]["status"] == "completed"
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=[{"role": "assistant", "content": "hi"}])
    assert err.value.param == "messages" and "developer" in err.value.message


def test_data_uri_image_becomes_the_input_reference(gateway, simulator):
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "animate this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
    ]}]
    completion = client(gateway).chat.completions.create(model="sora-2", messages=messages)
    assert completion.model_extra["video"]["status"] == "completed"
    [job] = simulator.app.state.sim.videos.values()
    assert job.reference.source == "file" and job.reference.mime == "image/png" and job.reference.size == len(png)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/fox.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/fox.png",
    "http://192.168.0.10/fox.png",
    "http://localhost/fox.png",
    "file:///etc/passwd",
])
def test_image_urls_to_private_addresses_are_refused(gateway, simulator, url):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "animate this"}, {"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=messages)
    assert "image_url" in err.value.message
    assert httpx.get(simulator.url + "/_sim/calls").json()["calls"] == []


def test_error_cases_map_to_sdk_exceptions(gateway):
    with pytest.raises(openai.AuthenticationError) as err:
        client(gateway, key="sk-wrong").chat.completions.create(model="sora-2", messages=PROMPT)
    assert err.value.code == "invalid_api_key" and err.value.request_id.startswith("req_")
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway).chat.completions.create(model="sora-9", messages=PROMPT)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(gateway, key=LIMITED_KEY).chat.completions.create(model="sora-2", messages=PROMPT)
    assert err.value.code == "model_not_allowed"
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=PROMPT, n=2)
    assert err.value.param == "n"
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=PROMPT, extra_body={"seconds": 7})
    assert err.value.param == "seconds" and "'4', '8', '12'" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=PROMPT, extra_body={"size": "1x1"})
    assert err.value.param == "size" and "'1280x720'" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client(gateway).chat.completions.create(model="sora-2", messages=[{"role": "assistant", "content": "hi"}])


def test_malformed_and_oversized_bodies(gateway):
    headers = {"authorization": f"Bearer {ALPHA_KEY}", "content-type": "application/json"}
    response = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json", headers=headers)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]
    big = b'{"model": "sora-2", "messages": [], "pad": "' + b"x" * 2_100_000 + b'"}'
    response = httpx.post(gateway.url + "/v1/chat/completions", content=big, headers=headers)
    assert response.status_code == 413 and "bytes" in response.json()["error"]["message"]
    response = httpx.get(gateway.url + "/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert response.headers["x-request-id"]


def test_refused_prompt(gateway):
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=[
            {"role": "user", "content": "[refuse] something not allowed"}])
    assert err.value.code == "content_policy_violation"
    assert "moderation" in err.value.message
    chunks = list(client(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] something not allowed"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "❌ Video refused:" in text and "moderation" in text


def test_upstream_failure(gateway):
    with pytest.raises(openai.InternalServerError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "[fail] x"}])
    assert err.value.status_code == 502 and err.value.code == "upstream_error"
    with pytest.raises(openai.APIError) as err:
        for _ in client(gateway).chat.completions.create(
                model="sora-2", stream=True, messages=[{"role": "user", "content": "[fail] x"}]):
            pass
    assert "could not be generated" in err.value.message


def test_job_timeout_is_a_504(start_simulator, start_gateway):
    slow = start_simulator(duration_s=60)
    gateway = start_gateway(slow, upstreams=[{
        "name": "sim", "kind": "videos", "base_url": slow.url + "/v1", "keys": ["sk-good-1"],
        "poll_interval_s": 0.05, "job_timeout_s": 0.5}])
    with pytest.raises(openai.APIStatusError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"


def test_models_list_only_what_the_team_may_use(gateway):
    assert sorted(m.id for m in client(gateway).models.list()) == ["org/sora-2-pro", "sora-2"]
    assert [m.id for m in client(gateway, key=LIMITED_KEY).models.list()] == ["org/sora-2-pro"]
    assert client(gateway).models.retrieve("org/sora-2-pro").id == "org/sora-2-pro"
    response = httpx.get(gateway.url + "/v1/models/org%2Fsora-2-pro", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert response.json()["id"] == "org/sora-2-pro"
    with pytest.raises(openai.NotFoundError):
        client(gateway, key=LIMITED_KEY).models.retrieve("sora-2")


def test_disconnected_client_can_retrieve_the_finished_job(gateway, simulator):
    stream = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True)
    first = next(iter(stream))
    video_id = first.model_extra["video"]["id"]
    stream.close()  # the client goes away mid-job
    sdk = client(gateway)
    video = wait_until(lambda: (v := sdk.videos.retrieve(video_id)).status == "completed" and v)
    assert video.progress == 100
    assert_playable_mp4(sdk.videos.download_content(video_id).read())
    creates = [c for c in httpx.get(simulator.url + "/_sim/calls").json()["calls"] if c["method"] == "POST"]
    assert len(creates) == 1


def test_links_handed_out_by_any_release_stay_valid(gateway):
    """A link is HMAC-SHA256 of `id\nvariant\nexp` under a key derived from the signing secret, cut to 24 bytes:
    links saved in chat histories keep working across upgrades only while that stays exactly so."""
    completion = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    video_id = completion.model_extra["video"]["id"]
    key = hashlib.sha256(b"sora-gateway-links:" + SIGNING_SECRET.encode()).digest()
    exp = int(time.time()) + 600
    for variant, form in (("video", "{base}/content/{exp}.{sig}.mp4"),
                          ("thumbnail", "{base}/content?variant=thumbnail&exp={exp}&sig={sig}")):
        digest = hmac.digest(key, f"{video_id}\n{variant}\n{exp}".encode(), "sha256")[:24]
        sig = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        link = form.format(base=f"{gateway.url}/v1/videos/{video_id}", exp=exp, sig=sig)
        assert httpx.get(link).status_code == 200, variant


def test_video_links_refuse_tampering_expiry_and_other_teams(gateway):
    completion = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    url = completion.model_extra["video"]["url"]
    video_id = completion.model_extra["video"]["id"]
    assert httpx.get(url).status_code == 200
    base, exp, sig = re.fullmatch(r"(.*/content/)(\d+)\.([\w-]+)\.mp4", url).groups()
    tampered = f"{base}{exp}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}.mp4"
    assert httpx.get(tampered).status_code == 403
    assert httpx.get(f"{base}{int(exp) + 3600}.{sig}.mp4").status_code == 403
    response = httpx.get(f"{base}1000.{sig}.mp4")
    assert response.status_code == 403 and "expired" in response.json()["error"]["message"]
    assert httpx.get(f"{base}{exp}.{sig}.webm").status_code == 404
    plain = f"{gateway.url}/v1/videos/{video_id}/content"
    assert httpx.get(plain).status_code == 401
    assert httpx.get(plain, headers={"authorization": f"Bearer {ALPHA_KEY}"}).status_code == 200
    assert httpx.get(plain, headers={"authorization": f"Bearer {BETA_KEY}"}).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client(gateway, key=BETA_KEY).videos.retrieve(video_id)


def test_links_handed_out_before_the_path_form_still_play(gateway):
    completion = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    base, exp, sig = re.fullmatch(r"(.*/content/)(\d+)\.([\w-]+)\.mp4", completion.model_extra["video"]["url"]).groups()
    old_form = f"{base[:-1]}?exp={exp}&sig={sig}"
    response = httpx.get(old_form)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert httpx.get(f"{base[:-1]}?exp={exp}&sig=x{sig[1:]}").status_code == 403


def test_an_expired_link_still_serves_the_owning_team(gateway):
    """A saved chat's link outlives its signature for a program holding the team key, never for others."""
    completion = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    base, _, sig = re.fullmatch(r"(.*/content/)(\d+)\.([\w-]+)\.mp4", completion.model_extra["video"]["url"]).groups()
    expired = f"{base}1000.{sig}.mp4"
    assert httpx.get(expired).status_code == 403
    owner = httpx.get(expired, headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert owner.status_code == 200
    assert_playable_mp4(owner.content)
    assert httpx.get(expired, headers={"authorization": f"Bearer {BETA_KEY}"}).status_code == 404
    assert httpx.get(expired, headers={"authorization": "Bearer sk-wrong"}).status_code == 401


def test_content_supports_range_requests(gateway):
    completion = client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    url = completion.model_extra["video"]["url"]
    full = httpx.get(url)
    part = httpx.get(url, headers={"range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == full.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(full.content)}"
    assert full.headers["accept-ranges"] == "bytes"


def test_a_database_outage_is_a_retryable_503_not_a_crash(gateway):
    import sqlite3

    db = gateway.app.state.gateway.db
    with failing(db, "find_cached", sqlite3.OperationalError("database is locked")), \
            pytest.raises(openai.InternalServerError) as err:
        client(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert err.value.status_code == 503 and err.value.code == "backend_unavailable"
    assert err.value.response.headers["retry-after"] == "2"
    assert client(gateway).chat.completions.create(model="sora-2", messages=PROMPT).model_extra["video"]["url"]
