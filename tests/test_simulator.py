"""The simulated upstream, exercised over a real socket with httpx and the official openai client."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import httpx
import openai
import orjson
import pytest

from gateway.simulator import SimulatorSettings, SimulatorState, create_simulator_app
from gateway.simulator.assets import Assets
from gateway.simulator.behaviour import KeyProfile, outcome_for, profile_for
from gateway.simulator.testing import run_in_thread

DURATION_S = 0.3
CHAT_DURATION_S = 0.2
POLL_DEADLINE_S = 5.0
ASSETS = Assets.load()

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks videos.* deprecated


@dataclass
class Sim:
    url: str
    state: SimulatorState

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, key: str, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, **kwargs)

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0)


def serve(settings: SimulatorSettings) -> Iterator[Sim]:
    app = create_simulator_app(settings)
    with run_in_thread(app=app) as url:
        yield Sim(url, app.state.sim)


@pytest.fixture(scope="module")
def videos() -> Iterator[Sim]:
    yield from serve(SimulatorSettings(duration_s=DURATION_S, retry_after_s=1.5, slow_s=0.3))


@pytest.fixture(scope="module")
def chat() -> Iterator[Sim]:
    yield from serve(
        SimulatorSettings(kind="chat", duration_s=CHAT_DURATION_S, retry_after_s=1.5, slow_s=0.3)
    )


def unique_key(label: str = "") -> str:
    unique_key.counter += 1  # type: ignore[attr-defined]
    return f"sk-{label}test-{unique_key.counter}"  # type: ignore[attr-defined]


unique_key.counter = 0  # type: ignore[attr-defined]


def poll_until_done(client: httpx.Client, video_id: str) -> list[dict[str, Any]]:
    """Every snapshot seen until a terminal status; fails if the job does not finish in time."""
    seen = []
    deadline = time.monotonic() + POLL_DEADLINE_S
    while time.monotonic() < deadline:
        response = client.get(f"/videos/{video_id}")
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1]["status"] in ("completed", "failed"):
            return seen
        time.sleep(int(response.headers["openai-poll-after-ms"]) / 1000)
    pytest.fail(f"{video_id} did not finish within {POLL_DEADLINE_S} s")


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/videos", json={"prompt": "a red fox in the snow", **body})
    assert response.status_code == 200, response.text
    return response.json()


def assert_h264_mp4(data: bytes) -> None:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frame = next(container.decode(stream))
        assert (frame.width, frame.height) == (stream.width, stream.height)


# --- videos dialect -------------------------------------------------------------------------------------------


def test_job_goes_from_queued_through_in_progress_to_completed(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        video = create(client, model="sora-2-pro", seconds="8", size="1280x720")
        assert video["id"].startswith("video_")
        assert video["object"] == "video"
        assert (video["status"], video["progress"]) == ("queued", 0)
        assert (video["model"], video["seconds"], video["size"]) == ("sora-2-pro", "8", "1280x720")
        assert video["completed_at"] is None and video["expires_at"] is None and video["error"] is None
        assert video["remixed_from_video_id"] is None and video["quality"] == "standard"

        seen = poll_until_done(client, video["id"])

    statuses = [snapshot["status"] for snapshot in seen]
    progress = [snapshot["progress"] for snapshot in seen]
    assert statuses[-1] == "completed"
    assert "in_progress" in statuses
    assert statuses == sorted(statuses, key=["queued", "in_progress", "completed"].index)
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(isinstance(p, int) and 0 <= p <= 100 for p in progress)
    final = seen[-1]
    assert final["completed_at"] >= final["created_at"]
    assert final["expires_at"] == final["completed_at"] + 3600


def test_openai_sdk_creates_with_a_file_polls_and_downloads(videos: Sim) -> None:
    sdk = videos.sdk(unique_key())
    video = sdk.videos.create_and_poll(
        prompt="a lighthouse at dusk",
        seconds="4",
        size="720x1280",
        input_reference=("reference.jpg", ASSETS.thumbnail.data, "image/jpeg"),
    )
    assert video.status == "completed"
    reference = videos.state.videos[video.id].reference
    assert reference is not None
    assert (reference.source, reference.mime, reference.size) == (
        "file",
        "image/jpeg",
        len(ASSETS.thumbnail.data),
    )

    content = sdk.videos.download_content(video.id).read()
    assert content == ASSETS.video.data
    assert_h264_mp4(content)
    thumbnail = sdk.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.response.headers["content-type"] == "image/jpeg"
    assert thumbnail.read()[:3] == b"\xff\xd8\xff"
    spritesheet = sdk.videos.download_content(video.id, variant="spritesheet")
    assert spritesheet.read()[:3] == b"\xff\xd8\xff"


def test_sample_mp4_is_playable_h264() -> None:
    assert len(ASSETS.video.data) < 100_000
    with av.open(io.BytesIO(ASSETS.video.data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
    assert frames >= 24


def test_multipart_bracket_image_url_and_json_data_url(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        fields = {
            "prompt": (None, "waves"),
            "input_reference[image_url]": (None, "https://example.com/ref.png"),
        }
        response = client.post("/videos", files=fields)
        assert response.status_code == 200, response.text
        reference = videos.state.videos[response.json()["id"]].reference
        assert reference is not None
        assert (reference.source, reference.value) == ("image_url", "https://example.com/ref.png")

        data_url = "data:image/jpeg;base64," + base64.b64encode(ASSETS.thumbnail.data).decode()
        video = create(client, seconds=12, input_reference={"image_url": data_url})
        assert video["seconds"] == "12"
        reference = videos.state.videos[video["id"]].reference
        assert reference is not None
        assert (reference.mime, reference.size) == ("image/jpeg", len(ASSETS.thumbnail.data))

        response = client.post(
            "/videos", files={"prompt": (None, "x"), "input_reference": ("a.txt", b"hello")}
        )
        assert response.status_code == 400
        assert error_of(response)["param"] == "input_reference"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"seconds": "7"}, "seconds", "Invalid value: '7'. Supported values are: '4', '8', and '12'."),
        ({"seconds": 7}, "seconds", "Invalid value: '7'. Supported values are: '4', '8', and '12'."),
        (
            {"size": "999x1"},
            "size",
            "Invalid value: '999x1'. Supported values are: '720x1280', '1280x720', '1024x1792', and '1792x1024'.",
        ),
        (
            {"model": "sora-3"},
            "model",
            "Invalid value: 'sora-3'. Supported values are: 'sora-2' and 'sora-2-pro'.",
        ),
        ({"prompt": None}, "prompt", "Missing required parameter: 'prompt'."),
        (
            {"prompt": 5},
            "prompt",
            "Invalid type for 'prompt': expected a string, but got an integer instead.",
        ),
    ],
)
def test_create_validation_errors_read_like_openai(
    videos: Sim, body: dict[str, Any], param: str, message: str
) -> None:
    with videos.client(unique_key()) as client:
        response = client.post("/videos", json={"prompt": "a cat", **body})
    assert response.status_code == 400
    error = error_of(response)
    assert (error["message"], error["type"], error["param"]) == (message, "invalid_request_error", param)


def test_multipart_create_is_validated_too(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        response = client.post("/videos", files={"prompt": (None, "a cat"), "seconds": (None, "5")})
        assert response.status_code == 400
        assert (
            error_of(response)["message"] == "Invalid value: '5'. Supported values are: '4', '8', and '12'."
        )
        response = client.post("/videos", files={"model": (None, "sora-2")})
        assert error_of(response)["message"] == "Missing required parameter: 'prompt'."


def test_malformed_json_is_a_400(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        response = client.post("/videos", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_list_pages_with_after_limit_and_order(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        ids = [create(client, prompt=f"clip {n}")["id"] for n in range(5)]

        first = client.get("/videos", params={"limit": 2}).json()
        assert first["object"] == "list"
        assert [video["id"] for video in first["data"]] == ids[:-3:-1]
        assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[4], ids[3], True)

        collected = [video["id"] for video in first["data"]]
        page = first
        while page["has_more"]:
            page = client.get("/videos", params={"limit": 2, "after": page["last_id"]}).json()
            collected += [video["id"] for video in page["data"]]
        assert collected == ids[::-1]

        ascending = client.get("/videos", params={"order": "asc", "limit": 100}).json()
        assert [video["id"] for video in ascending["data"]] == ids
        assert ascending["has_more"] is False

        too_many = client.get("/videos", params={"limit": 101})
        assert too_many.status_code == 400 and error_of(too_many)["param"] == "limit"

    with videos.client(unique_key()) as other:
        assert other.get("/videos").json()["data"] == []


def test_remix_creates_a_new_video_from_a_completed_one(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        source = create(client, seconds="8", size="1792x1024")
        early = client.post(f"/videos/{source['id']}/remix", json={"prompt": "now at night"})
        assert early.status_code == 400
        assert poll_until_done(client, source["id"])[-1]["status"] == "completed"

        response = client.post(f"/videos/{source['id']}/remix", json={"prompt": "now at night"})
        assert response.status_code == 200
        remix = response.json()
        assert remix["id"] != source["id"]
        assert remix["remixed_from_video_id"] == source["id"]
        assert (remix["prompt"], remix["seconds"], remix["size"]) == ("now at night", "8", "1792x1024")
        assert poll_until_done(client, remix["id"])[-1]["status"] == "completed"

        missing = client.post("/videos/video_nope/remix", json={"prompt": "x"})
        assert missing.status_code == 404


def test_delete_then_retrieve_is_a_404(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        video = create(client)
        response = client.delete(f"/videos/{video['id']}")
        assert response.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}

        gone = client.get(f"/videos/{video['id']}")
        assert gone.status_code == 404
        assert error_of(gone) == {
            "message": f"Video with id '{video['id']}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }


def test_videos_belong_to_the_key_that_created_them(videos: Sim) -> None:
    with videos.client(unique_key()) as owner, videos.client(unique_key()) as stranger:
        video = create(owner)
        assert stranger.get(f"/videos/{video['id']}").status_code == 404
        assert owner.get(f"/videos/{video['id']}").status_code == 200


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        (
            "[refuse] something",
            {"code": "moderation_blocked", "message": "Your request was blocked by our moderation system."},
        ),
        ("[fail] something", {"code": "internal_error", "message": "Video generation failed."}),
    ],
)
def test_prompt_triggers_end_in_failed(videos: Sim, prompt: str, error: dict[str, str]) -> None:
    with videos.client(unique_key()) as client:
        video = create(client, prompt=prompt)
        final = poll_until_done(client, video["id"])[-1]
        assert final["status"] == "failed"
        assert final["error"] == error
        assert final["completed_at"] is None
        assert client.get(f"/videos/{video['id']}/content").status_code == 404


def test_content_needs_a_completed_video_and_a_known_variant(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        video = create(client)
        early = client.get(f"/videos/{video['id']}/content")
        assert early.status_code == 404 and error_of(early)["type"] == "invalid_request_error"
        poll_until_done(client, video["id"])
        bad = client.get(f"/videos/{video['id']}/content", params={"variant": "poster"})
        assert bad.status_code == 400
        assert error_of(bad)["message"] == (
            "Invalid value: 'poster'. Supported values are: 'video', 'thumbnail', and 'spritesheet'."
        )
        response = client.get(f"/videos/{video['id']}/content")
        assert response.headers["content-type"] == "video/mp4"
        assert response.content == ASSETS.video.data


def test_requests_without_a_key_are_401(videos: Sim) -> None:
    response = httpx.get(videos.base_url + "/videos")
    assert response.status_code == 401
    assert error_of(response)["type"] == "invalid_request_error"
    assert "didn't provide an API key" in error_of(response)["message"]


def test_unknown_route_is_a_404_envelope(videos: Sim) -> None:
    with videos.client(unique_key()) as client:
        response = client.post("/chat/completions", json={})
    assert response.status_code == 404
    assert error_of(response)["message"] == "Invalid URL (POST /v1/chat/completions)"


# --- faults -------------------------------------------------------------------------------------------------------


def chat_body(prompt: str = "a cat", **extra: Any) -> dict[str, Any]:
    return {"model": "sora-2", "stream": True, "messages": [{"role": "user", "content": prompt}], **extra}


def first_call(sim: Sim, kind: str, key: str) -> httpx.Response:
    """The response to a create call; a chat stream that started is closed without being read."""
    path, body = ("/chat/completions", chat_body()) if kind == "chat" else ("/videos", {"prompt": "a cat"})
    with sim.client(key) as client, client.stream("POST", path, json=body) as response:
        if response.status_code != 200 or kind == "videos":
            response.read()
        return response


@pytest.mark.parametrize("kind", ["videos", "chat"])
@pytest.mark.parametrize(
    ("prefix", "status", "code"),
    [
        ("429", 429, "rate_limit_exceeded"),
        ("401", 401, "invalid_api_key"),
        ("403", 403, "unsupported_country_region_territory"),
        ("500", 500, "server_error"),
    ],
)
def test_fault_prefixes_answer_every_call(
    request: pytest.FixtureRequest, kind: str, prefix: str, status: int, code: str
) -> None:
    sim: Sim = request.getfixturevalue(kind)
    key = unique_key(f"{prefix}-")
    for _ in range(2):
        response = first_call(sim, kind, key)
        assert response.status_code == status
        assert error_of(response)["code"] == code
    assert key not in error_of(response)["message"]
    if status == 429:
        assert response.headers["retry-after"] == "1.5"
        assert response.headers["retry-after-ms"] == "1500"
    assert sim.state.count(key=key) == 2


def test_faults_also_hit_reads(videos: Sim) -> None:
    with videos.client(unique_key("500-")) as client:
        assert client.get("/videos").status_code == 500
        assert client.get("/videos/video_x").status_code == 500


def test_openai_sdk_maps_injected_faults_to_its_exceptions(videos: Sim) -> None:
    with pytest.raises(openai.RateLimitError) as rate_limited:
        videos.sdk(unique_key("429-")).videos.create(prompt="a cat")
    assert rate_limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.AuthenticationError):
        videos.sdk(unique_key("401-")).videos.retrieve("video_x")
    with pytest.raises(openai.PermissionDeniedError):
        videos.sdk(unique_key("403-")).videos.list()
    with pytest.raises(openai.InternalServerError):
        videos.sdk(unique_key("500-")).videos.create(prompt="a cat")


@pytest.mark.parametrize("kind", ["videos", "chat"])
def test_flaky_keys_fail_every_other_call_counted_per_key(request: pytest.FixtureRequest, kind: str) -> None:
    sim: Sim = request.getfixturevalue(kind)
    first, second = unique_key("flaky-"), unique_key("flaky-")
    statuses = {first: [], second: []}
    for key in (first, first, second, first, second, second, first):
        statuses[key].append(first_call(sim, kind, key).status_code)
    assert statuses == {first: [502, 200, 502, 200], second: [502, 200, 502]}


def test_slow_keys_answer_late(videos: Sim) -> None:
    started = time.monotonic()
    response = first_call(videos, "videos", unique_key("slow-"))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_hanging_key_never_answers(videos: Sim) -> None:
    key = unique_key("hang-")
    with videos.client(key, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/videos", json={"prompt": "a cat"})
    assert videos.state.count(key=key) == 1
    assert videos.state.calls[-1].status == 0


def test_server_shuts_down_while_a_client_waits_on_a_hung_request() -> None:
    app = create_simulator_app(SimulatorSettings())
    outcome: list[int | Exception] = []

    def wait_forever(base_url: str) -> None:
        # uvicorn cancels the request at shutdown and answers 500 itself, or drops the connection
        try:
            response = httpx.get(
                base_url + "/v1/videos", headers={"Authorization": "Bearer sk-hang-1"}, timeout=30
            )
            outcome.append(response.status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    with run_in_thread(app=app) as url:
        waiter = threading.Thread(target=wait_forever, args=(url,))
        waiter.start()
        deadline = time.monotonic() + POLL_DEADLINE_S
        while app.state.sim.count(key="sk-hang-1") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.sim.count(key="sk-hang-1") == 1
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and outcome[0] != 200


def test_settings_faults_apply_to_every_key() -> None:
    with run_in_thread(SimulatorSettings(faults="429", retry_after_s=3)) as url:
        response = httpx.post(url + "/v1/videos", headers={"Authorization": "Bearer sk-anything"}, json={})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


def test_control_routes_list_and_reset_calls() -> None:
    with run_in_thread(SimulatorSettings(duration_s=DURATION_S)) as url:
        headers = {"Authorization": "Bearer sk-one"}
        httpx.post(url + "/v1/videos", headers=headers, json={"prompt": "a cat"})
        httpx.get(url + "/v1/videos", headers=headers)
        calls = httpx.get(url + "/_sim/calls").json()["calls"]
        assert calls == [
            {"method": "POST", "path": "/v1/videos", "key": "sk-one", "status": 200},
            {"method": "GET", "path": "/v1/videos", "key": "sk-one", "status": 200},
        ]
        assert httpx.post(url + "/_sim/reset").status_code == 200
        assert httpx.get(url + "/_sim/calls").json()["calls"] == []
        assert httpx.get(url + "/v1/videos", headers=headers).json()["data"] == []


# --- chat dialect -------------------------------------------------------------------------------------------------


@dataclass
class Transcript:
    chunks: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    done: bool

    @property
    def content(self) -> str:
        return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in self.chunks)

    @property
    def reasoning(self) -> str:
        return "".join(chunk["choices"][0]["delta"].get("reasoning_content") or "" for chunk in self.chunks)

    @property
    def finish_reasons(self) -> list[str]:
        return [c["choices"][0]["finish_reason"] for c in self.chunks if c["choices"][0]["finish_reason"]]

    @property
    def pieces(self) -> list[str]:
        return [chunk["choices"][0]["delta"].get("content") or "" for chunk in self.chunks]


def stream_chat(sim: Sim, key: str, body: dict[str, Any]) -> Transcript:
    chunks, errors, done = [], [], False
    with sim.client(key) as client, client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    for frame in raw.split("\n\n")[:-1]:
        assert frame.startswith("data: "), frame
        data = frame[len("data: ") :]
        if data == "[DONE]":
            done = True
            continue
        event = orjson.loads(data)
        (errors if "error" in event else chunks).append(event)
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"][0]["index"] == 0
    roles = [chunk["choices"][0]["delta"].get("role") for chunk in chunks]
    assert roles[0] == "assistant" and not any(roles[1:])
    return Transcript(chunks, errors, done)


# (progress pattern, link pattern, field holding the progress, finish reason)
FAMILY_SHAPES = {
    ("a", "zh"): (r"进度：(\d+\.\d)%", r"\[点击这里\]\((https?://[^)]+)\)", "content", "stop"),
    ("a", "en"): (r"Progress: (\d+\.\d)%", r"\[click here\]\((https?://[^)]+)\)", "content", "stop"),
    ("b", "zh"): (r"(\d+)\.\.", r"\[在线播放▶️\]\((https?://[^)]+)\)", "content", "stop"),
    ("b", "en"): (r"(\d+)\.\.", r"\[Play Online▶️\]\((https?://[^)]+)\)", "content", "stop"),
    ("c", "zh"): (
        r"\*\*Video Generation Progress\*\*: (\d+)% \(running\)",
        r"<video src='([^']+)'",
        "reasoning",
        "STOP",
    ),
    ("c", "en"): (
        r"\*\*Video Generation Progress\*\*: (\d+)% \(running\)",
        r"<video src='([^']+)'",
        "reasoning",
        "STOP",
    ),
}


@pytest.mark.parametrize(("family", "language"), list(FAMILY_SHAPES))
def test_each_family_streams_progress_and_a_downloadable_link(chat: Sim, family: str, language: str) -> None:
    progress_pattern, link_pattern, field, finish = FAMILY_SHAPES[family, language]
    transcript = stream_chat(chat, unique_key(f"fam-{family}-{language}-"), chat_body("a paper boat"))

    progress = [float(value) for value in re.findall(progress_pattern, getattr(transcript, field))]
    assert len(progress) >= 6
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] < 100
    links = re.findall(link_pattern, transcript.content)
    assert len(links) == 1
    assert transcript.finish_reasons == [finish]
    assert transcript.done and not transcript.errors

    video = httpx.get(links[0])  # relay links are public: no key
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert_h264_mp4(video.content)


def test_family_a_opens_with_the_request_and_the_queue(chat: Sim) -> None:
    zh = stream_chat(chat, unique_key("fam-a-"), chat_body("海边的灯塔", size="1280x720"))
    assert zh.pieces[0] == '```json\n{"prompt": "海边的灯塔", "mode": "landscape"}\n```\n\n'
    assert zh.pieces[1] == "> ⌛️ 任务正在队列中，请耐心等待...\n\n"
    assert "> 🏃 进度：12.5%\n\n" in zh.pieces
    assert zh.pieces[-1] == "" and zh.pieces[-2].startswith("> ✅ 视频生成成功，[点击这里](http")
    en = stream_chat(chat, unique_key("fam-a-en-"), chat_body("a lighthouse"))
    assert en.pieces[1] == "> ⌛️ Task is in queue, please wait...\n\n"
    assert en.pieces[-2].startswith("> ✅ video generated successful,[click here](http")


def test_family_b_splits_progress_numbers_inside_the_dots(chat: Sim) -> None:
    transcript = stream_chat(chat, unique_key("fam-b-zh-"), chat_body("a paper boat"))
    pieces = transcript.pieces
    assert pieces[0].startswith("> ID: `task_") and pieces[0].endswith("`\n\n")
    assert pieces[1:4] == ["> 排队中...", " 生成中.", "\n> 🏃 进度 "]
    numbers = pieces[4 : pieces.index("\n> 生成完成 ✅\n\n")]
    assert re.fullmatch(r"(\d+\.\.)+", "".join(numbers))
    assert any(piece.endswith(".") and not piece.endswith("..") for piece in numbers)
    assert any(re.fullmatch(r"\.\d+", piece) for piece in numbers)
    assert re.search(r"> sid: `s_[0-9a-f]{32}`\n\n", transcript.content)
    thumbnail = re.search(r"!\[thumbnail\.webp\]\((https?://[^)]+)\)", transcript.content)
    assert thumbnail is not None
    assert httpx.get(thumbnail.group(1)).content[:3] == b"\xff\xd8\xff"

    en = stream_chat(chat, unique_key("fam-b-en-"), chat_body("a paper boat")).pieces
    assert en[1:4] == ["> Queuing…", " Generating.", "\n> 🏃 Progress "]
    assert "\n> Generation Complete ✅\n\n" in en


def test_family_c_chunks_look_like_sora2api(chat: Sim) -> None:
    transcript = stream_chat(chat, unique_key("fam-c-"), chat_body("a paper boat"))
    last = transcript.chunks[-1]
    assert last["model"] == "sora"
    assert last["choices"][0]["native_finish_reason"] == "STOP"
    assert last["choices"][0]["delta"]["content"].startswith("```html\n<video src='http")
    assert last["choices"][0]["delta"]["content"].endswith("' controls></video>\n```")
    assert all("reasoning_content" in chunk["choices"][0]["delta"] for chunk in transcript.chunks)


def test_family_c_announces_image_uploads(chat: Sim) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(ASSETS.thumbnail.data).decode()
    content = [
        {"type": "text", "text": "animate this"},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    body = {"model": "sora-2", "stream": True, "messages": [{"role": "user", "content": content}]}
    transcript = stream_chat(chat, unique_key("fam-c-"), body)
    assert transcript.reasoning.startswith("**Image Upload Begins**")
    job = next(job for job in chat.state.chats.values() if job.prompt == "animate this")
    assert job.images == 1


@pytest.mark.parametrize(
    ("family", "language", "expected"),
    [
        ("a", "zh", "> ❌ 生成失败：内容违反政策"),
        ("a", "en", "> ❌ Generation failed: content policy violation"),
        ("b", "zh", "\n> ❌ 生成失败：内容违反政策"),
        ("b", "en", "\n> ❌ Generation failed: content policy violation"),
        ("c", "zh", "❌ 生成失败: "),
    ],
)
def test_refused_prompts_end_with_a_readable_refusal(
    chat: Sim, family: str, language: str, expected: str
) -> None:
    transcript = stream_chat(chat, unique_key(f"fam-{family}-{language}-"), chat_body("[refuse] a cat"))
    refusal = next(piece for piece in transcript.pieces if "❌" in piece)
    assert refusal.startswith(expected)
    assert transcript.finish_reasons == ["STOP" if family == "c" else "stop"]
    assert "http" not in transcript.content
    if family == "c":
        assert transcript.reasoning.endswith("**Content Policy Violation**\n")
    assert not any(job.finished for job in chat.state.chats.values() if job.outcome == "refuse")


@pytest.mark.parametrize("family", ["a", "b", "c"])
def test_failed_prompts_end_with_a_failure_and_no_link(chat: Sim, family: str) -> None:
    transcript = stream_chat(chat, unique_key(f"fam-{family}-"), chat_body("[fail] a cat"))
    assert "❌" in transcript.content and "失败" in transcript.content
    assert "http" not in transcript.content
    assert transcript.done and not transcript.errors


@pytest.mark.parametrize("family", ["a", "b", "c"])
def test_error_prompts_break_the_stream_with_an_error_event(chat: Sim, family: str) -> None:
    transcript = stream_chat(chat, unique_key(f"fam-{family}-"), chat_body("[error] a cat"))
    assert transcript.errors == [
        {
            "error": {
                "message": "upstream generation error",
                "type": "server_error",
                "param": None,
                "code": "generation_error",
            }
        }
    ]
    assert transcript.done
    assert not transcript.finish_reasons
    assert len(transcript.chunks) >= 2


def test_openai_sdk_reads_a_stream_and_raises_on_the_error_event(chat: Sim) -> None:
    sdk = chat.sdk(unique_key("fam-a-en-"))
    stream = sdk.chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "a paper boat"}]
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert "[click here](http" in content

    stream = sdk.chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[error] a paper boat"}]
    )
    with pytest.raises(openai.APIError, match="upstream generation error"):
        for _ in stream:
            pass


@pytest.mark.parametrize(
    ("family", "status", "error_type"), [("a", 400, "invalid_request_error"), ("c", 500, "server_error")]
)
def test_non_streaming_requests_are_refused_before_the_stream(
    chat: Sim, family: str, status: int, error_type: str
) -> None:
    with chat.client(unique_key(f"fam-{family}-")) as client:
        response = client.post("/chat/completions", json=chat_body(stream=False))
        assert response.status_code == status
        error = error_of(response)
        assert error["type"] == error_type
        assert "stream must be true" in error["message"]
        empty = client.post("/chat/completions", json={"model": "sora-2", "stream": True, "messages": []})
        assert empty.status_code == status


def test_chat_faults_answer_before_the_stream(chat: Sim) -> None:
    with chat.client(unique_key("429-fam-c-")) as client:
        response = client.post("/chat/completions", json=chat_body())
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "1.5"


def test_files_are_public_but_only_once_published(chat: Sim) -> None:
    assert httpx.get(chat.url + "/files/nope.mp4").status_code == 404
    transcript = stream_chat(chat, unique_key("fam-a-"), chat_body("a paper boat"))
    link = re.search(r"\((http[^)]+\.mp4)\)", transcript.content)
    assert link is not None
    assert httpx.get(link.group(1)).content == ASSETS.video.data
    assert httpx.get(link.group(1).replace(".mp4", ".jpg")).content == ASSETS.thumbnail.data
    assert httpx.get(link.group(1).replace(".mp4", ".gif")).status_code == 404


def test_public_url_setting_is_the_base_of_links() -> None:
    settings = SimulatorSettings(kind="chat", duration_s=0.05, public_url="https://cdn.example/")
    app = create_simulator_app(settings)
    with run_in_thread(app=app) as url:
        transcript = stream_chat(Sim(url, app.state.sim), "sk-fam-c", chat_body())
    assert "<video src='https://cdn.example/files/" in transcript.content


# --- keys, prompts, settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "profile"),
    [
        ("sk-plain", KeyProfile("", "a", "zh")),
        ("sk-429-abc", KeyProfile("429", "a", "zh")),
        ("sk-flaky", KeyProfile("flaky", "a", "zh")),
        ("sk-fam-b-en-1", KeyProfile("", "b", "en")),
        ("sk-slow-fam-c-zh", KeyProfile("slow", "c", "zh")),
        ("sk-hang-x-en", KeyProfile("hang", "a", "en")),
        ("sk-4290-x", KeyProfile("", "a", "zh")),
        ("sk-x-429-y", KeyProfile("", "a", "zh")),
        ("sk-family-b-entire", KeyProfile("", "a", "zh")),
    ],
)
def test_keys_choose_fault_family_and_language(key: str, profile: KeyProfile) -> None:
    assert profile_for(key, SimulatorSettings()) == profile


def test_settings_give_the_defaults_a_key_does_not_override() -> None:
    settings = SimulatorSettings(family="c", language="en", faults="slow")
    assert profile_for("sk-1", settings) == KeyProfile("slow", "c", "en")
    assert profile_for("sk-500-fam-a-zh", settings) == KeyProfile("500", "a", "zh")


def test_prompt_triggers() -> None:
    assert outcome_for("a cat") == "complete"
    assert outcome_for("a cat [refuse]") == "refuse"
    assert outcome_for("[fail] a cat") == "fail"
    assert outcome_for("a [error] cat") == "error"


@pytest.mark.parametrize(
    "bad", [{"kind": "grpc"}, {"family": "d"}, {"language": "fr"}, {"faults": "404"}, {"duration_s": -1}]
)
def test_settings_reject_unknown_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulatorSettings(**bad)
