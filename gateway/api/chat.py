"""POST /v1/chat/completions: a video generation in chat-completions clothing."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, authenticate, read_json, request_id, services
from gateway.api.errors import error_event
from gateway.api.shapes import DONE, PING, ChunkWriter, completion, usage, video_status
from gateway.api.sse import EventStreamResponse, Last
from gateway.api.ui_answers import answer_ui_task
from gateway.core import ui_tasks
from gateway.core.cache import CacheControl
from gateway.core.errors import (
    ContentRefused,
    GatewayError,
    GatewayRestarting,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.core.feed import JobHandle
from gateway.core.formats import FORMATS, StreamFormat
from gateway.core.progress import ProgressLines
from gateway.core.records import JobRecord, is_terminal
from gateway.core.request import ChatOptions, build_video_request, parse_chat_body, resolve_model
from gateway.core.webhooks import check_request_url
from gateway.ids import unique_id

# How a job that failed reads to a client, by the error code the job ended with.
_FAILURE_KINDS: dict[str, type[GatewayError]] = {
    "upstream_timeout": UpstreamTimeout,
    "upstream_unavailable": UpstreamUnavailable,
    "invalid_request": UpstreamRejected,
    "content_policy_violation": ContentRefused,
}


async def chat_completions(request: Request) -> Response:
    gw = services(request)
    principal = await authenticate(request)
    alias, body = parse_chat_body(await read_json(request, gw.config.server.max_body_bytes))
    request.state.model = alias
    model = resolve_model(gw.config.models, principal.team, alias)
    if gw.config.chat.ui_tasks == "answer" and (task := ui_tasks.match(body)) is not None:
        return await answer_ui_task(gw, principal, model, alias, body, task, request_id(request))
    video_request, options = build_video_request(body, model, gw.config.server.max_prompt_chars)
    if body.get("webhook_url") is not None:
        video_request = replace(video_request, webhook_url=await check_request_url(
            body["webhook_url"], principal.team, gw.webhooks.resolver))
    del body  # a large body (an inline image) is not kept alive while the video is made
    control = CacheControl.parse(request.headers.get("cache-control"))
    generation = await gw.videos.generate(principal, video_request, request_id(request), control)
    del video_request  # its image_url may be a large data: URI
    request.state.cache, request.state.job = generation.cache, generation.record
    headers = {"x-cache": generation.cache, **generation.headers}
    fmt = FORMATS[options.stream_format]
    writer = ChunkWriter(unique_id("chatcmpl-"), int(time.time()), alias)
    if options.stream:  # the first chunk goes out now: the job is recorded, the upstream may still be deciding
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        events = _stream(gw, generation.record, generation.handle, fmt, options, writer)
        if generation.handle is None:  # a finished video: every event is known now, so they go in one body
            return Response(b"".join([event async for event in events]), media_type="text/event-stream",
                            headers=headers)
        return EventStreamResponse(events, headers)
    request.state.waiting_since = time.perf_counter()  # the gateway's part ends here; the rest is the upstream's
    try:
        await generation.accepted()  # an upstream that refuses the job is this request's HTTP error
        record = generation.record if generation.handle is None else await _wait(gw, generation.handle)
        return JSONResponse(_final_completion(gw, record, fmt, writer), headers=headers)
    except GatewayError as exc:  # this caller's own error: it carries the cache state and rate limits too
        exc.headers.update(headers)
        raise


def _final_completion(gw, record: JobRecord, fmt: StreamFormat, writer: ChunkWriter) -> dict:
    if record.status != "completed":
        raise _failure(record)
    expires = gw.signer.expiry()
    video = video_status(record, gw.signer, expires)
    reasoning = fmt.progress(100.0) if fmt.status_field == "reasoning_content" else None
    return completion(writer.completion_id, writer.created, writer.model, fmt.ready(video["url"]), video,
                      usage(record, record.price), reasoning)


def _failure(record: JobRecord) -> GatewayError:
    if record.refused:
        return ContentRefused(f"Your request was refused by the video provider's content policy: "
                              f"{record.error_message}", param="messages")
    kind = _FAILURE_KINDS.get(record.error_code or "", UpstreamFailed)
    if kind is UpstreamFailed or kind is UpstreamTimeout:
        return kind(f"The video could not be generated: {record.error_message}")
    return kind(record.error_message or "The video could not be generated.", code=record.error_code)


async def _stream(gw, record: JobRecord, handle: JobHandle | None, fmt: StreamFormat, options: ChatOptions,
                  writer: ChunkWriter) -> AsyncIterator[bytes]:
    expires = gw.signer.expiry()
    video = video_status(record, gw.signer, expires)
    yield writer.chunk({"role": "assistant", "content": ""}, video)
    sent = tuple(video.values())  # what the client was last shown, as a tuple: it is kept while the stream waits
    del video
    lines = ProgressLines(fmt, gw.config.chat.progress_step)
    changes = handle.changes() if handle else _already_final()
    async for changed in changes:
        if gw.draining.is_set() and not is_terminal(record.status):
            yield Last(error_event(GatewayRestarting(restarting_message(record.id))) + DONE)
            return
        if not changed:
            yield PING
            continue
        video = video_status(record, gw.signer, expires)
        if record.status == "completed":
            yield _closing(writer, video, fmt.ready(video["url"]), "stop",
                           usage(record, record.price) if options.include_usage else None)
            return
        if record.status == "failed":
            if record.refused:
                yield _closing(writer, video, fmt.refused(record.error_message or "content policy"),
                               "content_filter", usage(record, 0.0) if options.include_usage else None)
            else:
                yield Last(error_event(_failure(record)) + DONE)
            return
        text = lines.line(record.status, record.progress, record.progress_estimated, record.queue_position)
        shown = tuple(video.values())
        if text is not None or shown != sent:
            sent = shown
            yield writer.chunk({fmt.status_field: text} if text is not None else {}, video)
        del video  # not kept while the stream waits for the next change


def _closing(writer: ChunkWriter, video: dict, content: str, finish_reason: str, usage_: dict | None) -> Last:
    """A stream's last events: its final words, the finish reason, the usage when asked for, and [DONE]."""
    end = [writer.chunk({"content": content}, video), writer.chunk({}, video, finish_reason)]
    if usage_ is not None:
        end.append(writer.usage_chunk(usage_, video))
    return Last(b"".join([*end, DONE]))


def restarting_message(video_id: str) -> str:
    return (f"The gateway is restarting; video {video_id} keeps generating. Retrieve it with GET /v1/videos/"
            f"{video_id}, or send the same request again to pick the job up where it is.")


async def _wait(gw, handle: JobHandle) -> JobRecord:
    """Wait for a job to end, or until the gateway starts shutting down (then a retryable 503)."""
    async for _ in handle.changes():
        if gw.draining.is_set() and not handle.done:
            raise GatewayRestarting(restarting_message(handle.record.id), retry_after=5)
    return handle.record


async def _already_final() -> AsyncIterator[bool]:
    yield True
