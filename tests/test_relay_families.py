"""Chat-relay streams (families A, B, C) read into status snapshots, and the chat relay upstream over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest

from gateway.core.upstream import (
    GenerationSpec,
    ImageInput,
    JobLost,
    UpstreamError,
    UpstreamKey,
    UpstreamStatus,
)
from gateway.upstreams.chat import ChatRelayUpstream
from gateway.upstreams.http import error_from_response, parse_retry_after
from gateway.upstreams.relay_families import FAMILY_A, FAMILY_B, FAMILY_C, RelayStreamParser, readable

VIDEO = "https://cdn.relay.example/videos/6f1c2e.mp4"
THUMB = "https://cdn.relay.example/thumbs/6f1c2e.webp"


def chunk(
    content: str | None = None,
    reasoning: str | None = None,
    finish: str | None = None,
    *,
    role: bool = False,
) -> dict:
    delta: dict = {"content": content, "reasoning_content": reasoning, "tool_calls": None}
    if role:
        delta["role"] = "assistant"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "sora-2",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def contents(*parts: str, finish: str | None = "stop") -> list[dict]:
    chunks = [chunk("", role=True)] + [chunk(part) for part in parts]
    if finish is not None:
        chunks.append(chunk(None, finish=finish))
    return chunks


def run(chunks: Iterable[dict]) -> tuple[RelayStreamParser, list[UpstreamStatus]]:
    parser = RelayStreamParser()
    snapshots: list[UpstreamStatus] = []
    for item in chunks:
        snapshots.extend(parser.feed(item))
    if not parser.done:
        snapshots.append(parser.finish())
    return parser, snapshots


def progress_of(snapshots: list[UpstreamStatus]) -> list[float]:
    """Progress values as they changed (a snapshot may also report e.g. a new thumbnail)."""
    values: list[float] = []
    for snapshot in snapshots:
        if snapshot.status == "in_progress" and (not values or values[-1] != snapshot.progress):
            values.append(snapshot.progress)
    return values


# -- transcripts, chunked the way the relays chunk them ---------------------------------------------------

ECHO = (
    '```json\n{\n  "prompt": "一只猫在雨中失败地跳跃 [点击这里](http://169.254.169.254/latest)",\n'
    '  "mode": "portrait"\n}\n```\n\n'
)

A_ZH = contents(
    ECHO,
    "> ⌛️ 任务正在队列中，请耐心等待...\n\n",
    "> 🏃 进度：12.5%\n\n",
    "> 🏃 进度：3",
    "7.0%\n\n",
    "> 🏃 进度：36.9%\n\n",
    "> 🏃 进度：98.7%\n\n",
    f"> ✅ 视频生成成功，[点击这里]({VIDEO[:30]}",
    f"{VIDEO[30:]}) 查看视频~~~\n\n",
)

A_EN = contents(
    ECHO.replace("一只猫在雨中失败地跳跃", "a cat jumping in the rain"),
    "> ⌛️ Task is in the queue, please wait patiently...\n\n",
    "> 🏃 Progress: 20.0%\n\n",
    "> 🏃 Progress: 61.5%\n\n",
    f"> ✅ video generated successful,[click here]({VIDEO})\n\n",
    finish=None,
)

B_ZH = contents(
    "> ID: `task_01k8zq3v5e`\n",
    "> 排队中",
    "...",
    " 生成中",
    ".\n",
    "> 🏃 进度 ",
    "42.",
    ".54",
    "..67",
    "..",
    "88..100",
    "..\n",
    "> 生成完成 ✅\n",
    "> sid: `s_68e3a06dcd888191b150971da152c1f5`\n\n",
    f"![cover.webp]({THUMB})\n\n",
    f"[在线播放▶️]({VIDEO})\n",
)

B_EN = contents(
    "> ID: `task_01k8zq3v5e`\n",
    "> Queuing…",
    " Generating.\n",
    "> 🏃 Progress ",
    "4",
    "2.",
    ".54",
    "..67",
    "..",
    "76..\n",
    "> Generation Complete ✅\n",
    f"![cover.webp]({THUMB})\n\n",
    f"[Play Online▶️]({VIDEO})\n",
)

C_START = [
    chunk(None, "**Generation Process Begins**\n\nInitializing generation request...\n", role=True),
    chunk(None, "**Video Generation Progress**: 0% (queued)\n"),
    chunk(None, "**Video Generation Progress**: 45% (running)\n"),
    chunk(None, "**Video Generation Progress**: 90% (running)\n"),
]
C_VIDEO = [
    *C_START,
    chunk(
        None, "**Video Generation Completed**\n\nVideo generation successful. Now caching the video file...\n"
    ),
    chunk(None, "Warning: Failed to cache file - timeout\nUsing original URL instead...\n"),
    chunk(f"```html\n<video src='{VIDEO}' controls></video>\n```", finish="STOP"),
]


@pytest.mark.parametrize(
    ("transcript", "family", "expected_progress"),
    [
        (A_ZH, FAMILY_A, [12.5, 37.0, 98.7]),
        (A_EN, FAMILY_A, [20.0, 61.5]),
        (B_ZH, FAMILY_B, [0.0, 42.0, 54.0, 67.0, 88.0, 100.0]),
        (B_EN, FAMILY_B, [0.0, 42.0, 54.0, 67.0, 76.0]),
        (C_VIDEO, FAMILY_C, [45.0, 90.0]),
    ],
    ids=["a-zh", "a-en", "b-zh", "b-en", "c"],
)
def test_family_transcript_completes(transcript, family, expected_progress):
    parser, snapshots = run(transcript)

    assert parser.family is family
    assert snapshots[0] == UpstreamStatus(status="queued")
    assert progress_of(snapshots) == expected_progress
    final = snapshots[-1]
    assert final.status == "completed"
    assert final.video_url == VIDEO
    assert final.progress == 100.0
    assert [s for s in snapshots if s.done] == [final]


def test_family_b_reads_task_id_and_thumbnail():
    parser, snapshots = run(B_ZH)

    assert parser.task_id == "task_01k8zq3v5e"
    assert snapshots[-1].thumbnail_url == THUMB


def test_family_c_accepts_double_quotes_and_ends_on_upper_case_stop():
    transcript = [
        *C_START,
        chunk(f'```html\n<video src="{VIDEO}" controls></video>\n```', finish="STOP"),
        chunk("trailing text after the end"),
    ]
    parser = RelayStreamParser()
    snapshots = [s for item in transcript for s in parser.feed(item)]

    assert snapshots[-1] == UpstreamStatus(status="completed", progress=100.0, video_url=VIDEO)
    assert parser.done


def test_progress_never_goes_back():
    _, snapshots = run(A_ZH)

    values = progress_of(snapshots)
    assert values == sorted(values)
    assert 36.9 not in values


def test_only_changes_are_reported():
    repeated = contents("> 🏃 进度：50.0%\n\n", "> 🏃 进度：50.0%\n\n", "> 🏃 进度：50.0%\n\n", finish=None)
    _, snapshots = run(repeated)

    assert [s.status for s in snapshots] == ["queued", "in_progress", "failed"]


def test_echoed_prompt_is_not_read():
    # The prompt in the ```json echo holds "失败" and a link: neither may count.
    _, snapshots = run(contents(ECHO, "> ⌛️ 任务正在队列中，请耐心等待...\n\n"))

    final = snapshots[-1]
    assert final.status == "failed"
    assert final.refused is False
    assert final.error_message == "relay stream ended without a video URL"


# -- refusals and failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transcript", "reason"),
    [
        (
            contents(
                ECHO,
                "> ⌛️ 任务正在队列中，请耐心等待...\n\n",
                "> ❌ 视频生成失败：提示词包含违规内容，请修改后重试\n\n",
            ),
            "视频生成失败：提示词包含违规内容，请修改后重试",
        ),
        (
            contents(
                "> ⌛️ Task is in the queue, please wait patiently...\n\n",
                "> ❌ Generation failed: Content Policy Violation, ",
                "the prompt mentions a real person\n\n",
            ),
            "Generation failed: Content Policy Violation, the prompt mentions a real person",
        ),
        (
            contents(
                "> ID: `task_01k8zq3v5e`\n",
                "> 排队中... 生成中.\n",
                "> 🏃 进度 12..",
                "\n> ❌ 生成失败: 内容违反使用政策\n",
            ),
            "生成失败: 内容违反使用政策",
        ),
        (
            contents(
                "> ID: `task_01k8zq3v5e`\n",
                "> Queuing… Generating.\n",
                "> ❌ Content policy: the image shows a minor",
            ),
            "Content policy: the image shows a minor",
        ),
        (
            [
                *C_START[:2],
                chunk(None, "**Content Policy Violation**\n\n"),
                chunk(
                    "❌ 生成失败: This content may violate our guardrails concerning similarity to third-party content."
                ),
                chunk(None, finish="STOP"),
            ],
            (
                "Content Policy Violation; 生成失败: This content may violate our guardrails concerning "
                "similarity to third-party content."
            ),
        ),
    ],
    ids=["a-zh", "a-en", "b-zh", "b-en", "c"],
)
def test_refusal(transcript, reason):
    _, snapshots = run(transcript)

    final = snapshots[-1]
    assert final.status == "failed"
    assert final.refused is True
    assert final.error_code == "content_policy_violation"
    assert final.error_message == reason


def test_bare_error_marker_counts_as_refusal():
    _, snapshots = run(contents("> ⌛️ 任务正在队列中，请耐心等待...\n\n", "> 错误：任务未通过\n\n"))

    assert snapshots[-1].refused is True
    assert snapshots[-1].error_message == "错误：任务未通过"


def test_infrastructure_failure_is_not_a_refusal():
    _, snapshots = run(
        contents("> ⌛️ 任务正在队列中，请耐心等待...\n\n", "> ❌ 生成失败：服务器繁忙，请稍后重试\n\n")
    )

    final = snapshots[-1]
    assert (final.status, final.refused, final.error_code) == ("failed", False, "upstream_error")
    assert final.error_message == "生成失败：服务器繁忙，请稍后重试"


def test_content_filter_finish_reason_is_a_refusal():
    _, snapshots = run(contents("> 🏃 进度：10.0%\n\n", finish="CONTENT_FILTER"))

    assert snapshots[-1].refused is True
    assert snapshots[-1].error_code == "content_policy_violation"


def test_mid_stream_error_event():
    error = {
        "error": {"message": "Upstream API timeout", "type": "server_error", "param": None, "code": None}
    }
    parser = RelayStreamParser()
    snapshots = [s for item in [*C_START, error, chunk("late")] for s in parser.feed(item)]

    assert snapshots[-1] == UpstreamStatus(
        status="failed", progress=90.0, error_code="upstream_error", error_message="Upstream API timeout"
    )
    assert parser.finish() is snapshots[-1]


def test_mid_stream_error_event_keeps_its_code():
    _, snapshots = run(
        [chunk("", role=True), {"error": {"message": "blocked", "code": "moderation_blocked"}}]
    )

    assert (snapshots[-1].error_code, snapshots[-1].refused) == ("moderation_blocked", True)


def test_stream_without_url_fails():
    _, snapshots = run(
        contents("> ⌛️ 任务正在队列中，请耐心等待...\n\n", "> 🏃 进度：99.0%\n\n", finish=None)
    )

    final = snapshots[-1]
    assert (final.status, final.refused, final.progress) == ("failed", False, 99.0)
    assert final.error_message == "relay stream ended without a video URL"


@pytest.mark.parametrize("url", ["ftp://cdn.relay.example/v.mp4", "javascript:alert(1)", "/relative/v.mp4"])
def test_only_http_urls_are_accepted(url):
    _, snapshots = run(contents(f"> ✅ 视频生成成功，[点击这里]({url}) 查看视频~~~\n\n"))

    assert snapshots[-1].status == "failed"
    assert snapshots[-1].video_url is None


def test_abort_keeps_a_conclusive_answer():
    parser = RelayStreamParser()
    for item in contents(f"[点击这里]({VIDEO})", finish=None):
        parser.feed(item)

    assert parser.abort("relay stream broke off").video_url == VIDEO
    assert RelayStreamParser().abort("relay stream broke off").error_code == "upstream_error"


def test_readable_strips_markdown_and_emoji():
    assert readable("> ❌ **生成失败**: `policy` [详情](https://x.example) ~~~\n") == "生成失败: policy 详情"


# -- retry-after and error envelopes ---------------------------------------------------------------------


def test_parse_retry_after():
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "2000", "retry-after": "9"})) == 2.0
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "-5"})) is None
    assert parse_retry_after(httpx.Headers({})) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(httpx.Headers({"retry-after": later})) <= 30


def test_error_from_response_reads_the_envelope_and_hides_keys():
    body = orjson.dumps(
        {"error": {"message": "Incorrect API key provided: sk-live-abcdef123456", "code": "invalid_api_key"}}
    )
    response = httpx.Response(401, content=body)
    error = error_from_response(response, body, secrets=("sk-live-abcdef123456",))

    assert (error.status, error.code, error.retry_after) == (401, "invalid_api_key", None)
    assert "abcdef123456" not in str(error)


# -- the upstream over HTTP ------------------------------------------------------------------------------

KEY = UpstreamKey(upstream="relay", label="relay#1", secret="sk-relay-secret-0001")
SPEC = GenerationSpec(upstream_model="sora-2", prompt="a red fox in the snow", size="720x1280", seconds=4)


def sse(chunks: Iterable[dict], *, done: bool = True) -> bytes:
    body = b": ping\n\n" + b"".join(b"data: " + orjson.dumps(item) + b"\n\n" for item in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


async def trickle(body: bytes, size: int = 7, fail: Exception | None = None) -> AsyncIterator[bytes]:
    # Small uneven reads, cutting through UTF-8 sequences and lines alike.
    for start in range(0, len(body), size):
        await asyncio.sleep(0)
        yield body[start : start + size]
    if fail is not None:
        raise fail


async def public_resolver(host: str) -> list[str]:
    """The fake relay hosts stand for public CDNs; internal.example stands for a private one."""
    return ["10.0.0.7"] if host.startswith("internal.") else ["93.184.216.34"]


def relay(handler: Callable[[httpx.Request], httpx.Response]) -> ChatRelayUpstream:
    transport = httpx.MockTransport(handler)
    return ChatRelayUpstream("relay", "https://relay.example/v1/", timeout_s=5, client=httpx.AsyncClient(
        transport=transport), resolver=public_resolver, media_transport=transport)


@pytest.mark.parametrize("link", ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:6379/x.mp4",
                                  "https://internal.example/v.mp4", "http://[::1]/v.mp4", "file:///etc/passwd"])
async def test_media_links_to_non_public_addresses_are_not_fetched(link):
    seen: list[httpx.Request] = []
    upstream = relay(lambda request: seen.append(request) or httpx.Response(200, content=b"secret"))
    with pytest.raises(UpstreamError):
        await upstream.download("relay_x", KEY, UpstreamStatus("completed", video_url=link), "video")
    assert seen == []
    await upstream.aclose()


async def test_a_redirect_to_a_non_public_address_is_not_followed():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    upstream = relay(handler)
    with pytest.raises(UpstreamError) as caught:
        await upstream.download("relay_x", KEY, UpstreamStatus("completed", video_url=VIDEO), "video")
    assert "non-public" in caught.value.message and len(seen) == 1
    await upstream.aclose()


async def collect(upstream: ChatRelayUpstream, upstream_id: str) -> list[UpstreamStatus]:
    return [status async for status in upstream.track(upstream_id, KEY)]


async def test_submit_and_track_a_relay_stream():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=trickle(sse(B_ZH)))

    upstream = relay(handler)
    upstream_id = await upstream.submit(SPEC, KEY)
    snapshots = await collect(upstream, upstream_id)

    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "https://relay.example/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-relay-secret-0001"
    body = orjson.loads(request.content)
    assert body["model"] == "sora-2" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "a red fox in the snow"}]
    assert upstream_id.startswith("relay_")
    assert progress_of(snapshots) == [0.0, 42.0, 54.0, 67.0, 88.0, 100.0]
    assert snapshots[-1].video_url == VIDEO and snapshots[-1].thumbnail_url == THUMB
    with pytest.raises(JobLost):
        await collect(upstream, upstream_id)
    await upstream.aclose()


async def test_image_is_sent_as_a_data_uri():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content))
        return httpx.Response(200, content=sse(C_VIDEO))

    upstream = relay(handler)
    spec = GenerationSpec("sora-2", "animate this", "1280x720", 8, image=ImageInput(b"\x89PNG", "image/png"))
    await collect(upstream, await upstream.submit(spec, KEY))

    content = seen[0]["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "animate this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
    ]
    await upstream.aclose()


@pytest.mark.parametrize(
    ("headers", "retry_after"), [({"retry-after-ms": "2000"}, 2.0), ({"retry-after": "2"}, 2.0)]
)
async def test_rate_limited_submit(headers, retry_after):
    envelope = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    upstream = relay(lambda request: httpx.Response(429, headers=headers, json=envelope))

    with pytest.raises(UpstreamError) as caught:
        await upstream.submit(SPEC, KEY)

    assert caught.value.status == 429
    assert caught.value.retry_after == retry_after
    assert caught.value.code == "rate_limit_exceeded"
    await upstream.aclose()


async def test_unauthorised_submit_does_not_leak_the_key():
    envelope = {"error": {"message": f"invalid token {KEY.secret}", "code": "invalid_api_key"}}
    upstream = relay(lambda request: httpx.Response(401, json=envelope))

    with pytest.raises(UpstreamError) as caught:
        await upstream.submit(SPEC, KEY)

    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")
    assert KEY.secret not in str(caught.value)
    await upstream.aclose()


async def test_connection_error_has_no_status():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    upstream = relay(handler)
    with pytest.raises(UpstreamError) as caught:
        await upstream.submit(SPEC, KEY)

    assert caught.value.status is None
    await upstream.aclose()


async def test_remix_is_rejected():
    upstream = relay(lambda request: httpx.Response(500))
    spec = GenerationSpec("sora-2", "again", "720x1280", 4, remix_of="video_123")

    with pytest.raises(UpstreamError) as caught:
        await upstream.submit(spec, KEY)

    assert caught.value.status == 400
    await upstream.aclose()


async def test_unknown_id_is_lost():
    upstream = relay(lambda request: httpx.Response(500))

    with pytest.raises(JobLost):
        await collect(upstream, "relay_0123456789abcdef")
    await upstream.aclose()


async def collect_until_broken(upstream: ChatRelayUpstream, upstream_id: str) -> tuple[list[UpstreamStatus], str]:
    """Snapshots of a relay stream that breaks off before anything decided the job, and how it broke."""
    snapshots: list[UpstreamStatus] = []
    with pytest.raises(UpstreamError) as broken:
        async for status in upstream.track(upstream_id, KEY):
            snapshots.append(status)
    return snapshots, broken.value.message


async def test_stream_breaking_off_fails_the_job():
    body = sse(
        contents("> ⌛️ 任务正在队列中，请耐心等待...\n\n", "> 🏃 进度：40.0%\n\n", finish=None), done=False
    )
    upstream = relay(
        lambda request: httpx.Response(200, content=trickle(body, fail=httpx.ReadTimeout("idle")))
    )

    snapshots, broken = await collect_until_broken(upstream, await upstream.submit(SPEC, KEY))

    assert progress_of(snapshots) == [40.0]
    assert "relay stream broke off" in broken  # the fault table's relay-stream row ends the job
    await upstream.aclose()


async def test_stream_ending_without_done_still_concludes():
    upstream = relay(lambda request: httpx.Response(200, content=sse(A_EN, done=False)))

    snapshots = await collect(upstream, await upstream.submit(SPEC, KEY))

    assert snapshots[-1].status == "completed"
    await upstream.aclose()


async def test_in_stream_error_event_ends_the_job():
    events = [chunk("", role=True), {"error": {"message": "No available tokens", "type": "server_error"}}]
    upstream = relay(lambda request: httpx.Response(200, content=sse(events)))

    snapshots = await collect(upstream, await upstream.submit(SPEC, KEY))

    assert snapshots[-1].error_message == "No available tokens"
    assert snapshots[-1].error_code == "upstream_error"
    await upstream.aclose()


async def test_download_streams_the_video_without_the_key():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/videos/6f1c2e.mp4":
            return httpx.Response(302, headers={"location": "https://cdn2.relay.example/final.mp4"})
        if request.headers["host"] == "cdn2.relay.example":  # pinned: the URL holds the checked address
            return httpx.Response(200, content=trickle(b"\x00\x00\x00\x18ftypmp42" * 100))
        return httpx.Response(404)

    upstream = relay(handler)
    final = UpstreamStatus(status="completed", progress=100.0, video_url=VIDEO)
    stream = await upstream.download("relay_x", KEY, final, "video")
    data = b"".join([part async for part in stream])

    assert data == b"\x00\x00\x00\x18ftypmp42" * 100
    assert all("authorization" not in request.headers for request in seen)
    assert await upstream.download("relay_x", KEY, final, "thumbnail") is None

    with pytest.raises(UpstreamError) as caught:
        await upstream.download("relay_x", KEY, UpstreamStatus("completed", thumbnail_url=THUMB), "thumbnail")
    assert caught.value.status == 404
    await upstream.aclose()


async def test_aclose_closes_parked_streams():
    async def body() -> AsyncIterator[bytes]:
        yield b": ping\n\n"
        await asyncio.sleep(3600)

    upstream = relay(lambda request: httpx.Response(200, content=body()))
    upstream_id = await upstream.submit(SPEC, KEY)
    await upstream.aclose()

    with pytest.raises(JobLost):
        await collect(upstream, upstream_id)


# -- the upstream against a real socket: timeouts ---------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_relay(events: bytes | None) -> AsyncIterator[str]:
    """A relay on a local port that reads the request, sends `events` (or no answer at all) and then hangs."""
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        if events is not None:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + events
            )
            await writer.drain()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_silent_relay_stream_fails_after_the_idle_timeout():
    events = sse(
        contents("> ⌛️ 任务正在队列中，请耐心等待...\n\n", "> 🏃 进度：30.0%\n\n", finish=None), done=False
    )
    async with raw_relay(events) as base_url:
        upstream = ChatRelayUpstream("relay", base_url, timeout_s=5, idle_timeout_s=0.3)
        snapshots, broken = await collect_until_broken(upstream, await upstream.submit(SPEC, KEY))
        await upstream.aclose()

    assert progress_of(snapshots) == [30.0]
    assert "ReadTimeout" in broken


async def test_relay_that_never_answers_times_out_on_submit():
    async with raw_relay(None) as base_url:
        upstream = ChatRelayUpstream("relay", base_url, timeout_s=0.3, idle_timeout_s=30)
        with pytest.raises(UpstreamError) as caught:
            await upstream.submit(SPEC, KEY)
        await upstream.aclose()

    assert caught.value.status is None


# Relays that follow none of the families: the last-resort rules still find the video and keep refusals and
# infrastructure failures apart.
OTHER_VIDEO = "https://media.other-relay.example/out/9a7b.mp4"


def delta_chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1764000000, "model": "sora-2",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize(("name", "chunks", "status", "url"), [
    ("another link label, emoji last", contents("正在生成...\n", f"[观看视频 ▶️]({OTHER_VIDEO}) 🎉\n"),
     "completed", OTHER_VIDEO),
    ("a link labelled only by its .mp4 path", contents("Done! [here](https://x.example/r/v.mp4?sig=1)\n"),
     "completed", "https://x.example/r/v.mp4?sig=1"),
    ("a bare URL as the whole final answer", contents("Working on it\n", "https://cdn.example/renders/abc\n"),
     "completed", "https://cdn.example/renders/abc"),
    ("a bare URL in angle brackets", contents(f"<{OTHER_VIDEO}>"), "completed", OTHER_VIDEO),
    ("the URL only in a delta field of its own",
     [chunk("", role=True), delta_chunk({"content": "生成完成\n", "output": [{"type": "video", "url": OTHER_VIDEO}]}),
      chunk(None, finish="stop")], "completed", OTHER_VIDEO),
    ("an image link is not the video", contents("![cover](https://x.example/cover.webp)\n"), "failed", None),
    ("a link to a page is not the video", contents("see [our docs](https://relay.example/docs)\n"), "failed", None),
])
def test_unknown_relays_are_read_by_the_last_resort_rules(name, chunks, status, url):
    _, snapshots = run(chunks)
    assert (snapshots[-1].status, snapshots[-1].video_url) == (status, url), name


def test_progress_as_dots_with_no_number_is_running():
    _, snapshots = run(contents("Generating....\n", ".....\n", finish=None))
    assert [s.status for s in snapshots[:2]] == ["queued", "in_progress"]


def test_a_task_id_that_is_not_task_underscore_is_read():
    parser, _ = run(contents("> ID: `sora-2:3f0c91d2-77aa`\n", "> 排队中...\n", f"[在线播放▶️]({VIDEO})\n"))
    assert parser.task_id == "sora-2:3f0c91d2-77aa"


@pytest.mark.parametrize(("line", "code", "refused"), [
    ('{"error": {"message": "No available accounts, try again later", "code": "service_unavailable"}}',
     "service_unavailable", False),
    ('{"error": {"message": "prompt violates our content policy"}}', "content_policy_violation", True),
    ('{"error": {"message": "blocked", "code": "moderation_blocked"}}', "moderation_blocked", True),
    ('{"error": "upstream quota exhausted"}', "upstream_error", False),
])
def test_an_error_as_json_inside_content_ends_the_job(line, code, refused):
    _, snapshots = run(contents("queued\n", line + "\n", finish=None))
    final = snapshots[-1]
    assert (final.status, final.error_code, final.refused) == ("failed", code, refused)


def test_a_prompt_echo_is_still_not_read_by_the_last_resort_rules():
    _, snapshots = run(contents(f"```json\n{{\"prompt\": \"a fox at {OTHER_VIDEO}\"}}\n```\n", finish="stop"))
    assert snapshots[-1].status == "failed" and snapshots[-1].video_url is None
