"""POST /v1/chat/completions: a video generation in chat-completions clothing."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.api.common import JSONResponse, authenticate, read_json, request_id, services
from gateway.api.shapes import DONE, PING, ChunkWriter, completion, error_event, usage, video_status
from gateway.backends.records import JobRecord
from gateway.core.cache import CacheControl
from gateway.core.formats import FORMATS, StreamFormat
from gateway.core.request import ChatOptions, build_video_request, parse_chat_body, resolve_model
from gateway.core.service import Generation
from gateway.errors import APIError
from gateway.ids import unique_id

_FAILURE_STATUS = {"upstream_timeout": 504}


async def chat_completions(request: Request) -> Response:
    gw = services(request)
    principal = await authenticate(request)
    alias, body = parse_chat_body(await read_json(request, gw.config.server.max_body_bytes))
    request.state.model = alias
    model = resolve_model(gw.config.models, principal.team, alias)
    video_request, options = build_video_request(body, model, gw.config.server.max_prompt_chars)
    del body  # a large body (an inline image) is not kept alive while the video is made
    control = CacheControl.parse(request.headers.get("cache-control"))
    generation = await gw.videos.generate(principal, video_request, request_id(request), control)
    del video_request  # its image_url may be a large data: URI
    request.state.cache, request.state.upstream_key = generation.cache, generation.record.upstream_key
    headers = {"x-cache": generation.cache, **generation.headers}
    fmt = FORMATS[options.stream_format]
    writer = ChunkWriter(unique_id("chatcmpl-"), int(time.time()), alias)
    if options.stream:
        return StreamingResponse(
            _stream(gw, generation, fmt, options, writer),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    request.state.waiting_since = time.perf_counter()  # the gateway's part ends here; the rest is the upstream's
    record = generation.record if generation.handle is None else await _wait(gw, generation.handle)
    return JSONResponse(_final_completion(gw, record, fmt, writer), headers=headers)


def _final_completion(gw, record: JobRecord, fmt: StreamFormat, writer: ChunkWriter) -> dict:
    if record.status != "completed":
        raise _failure(record)
    expires = gw.signer.expiry()
    video = video_status(record, gw.signer, expires)
    reasoning = fmt.progress(100.0) if fmt.status_field == "reasoning_content" else None
    return completion(writer.completion_id, writer.created, writer.model, fmt.ready(video["url"]), video,
                      usage(record, record.price), reasoning)


def _failure(record: JobRecord) -> APIError:
    if record.refused:
        return APIError(400, f"Your request was refused by the video provider's content policy: "
                             f"{record.error_message}", code="content_policy_violation", param="messages")
    status = _FAILURE_STATUS.get(record.error_code or "", 502)
    code = "upstream_timeout" if status == 504 else "upstream_error"
    return APIError(status, f"The video could not be generated: {record.error_message}", code=code,
                    type="server_error")


async def _stream(gw, generation: Generation, fmt: StreamFormat, options: ChatOptions,
                  writer: ChunkWriter) -> AsyncIterator[bytes]:
    record = generation.record
    expires = gw.signer.expiry()
    yield writer.chunk({"role": "assistant", "content": ""}, video_status(record, gw.signer, expires))
    shown: str | None = None
    changes = generation.handle.changes() if generation.handle else _already_final()
    async for changed in changes:
        if gw.draining.is_set() and record.status not in ("completed", "failed"):
            yield error_event(restarting_message(record.id), "gateway_restarting")
            yield DONE
            return
        if not changed:
            yield PING
            continue
        video = video_status(record, gw.signer, expires)
        if record.status == "completed":
            yield writer.chunk({"content": fmt.ready(video["url"])}, video)
            yield writer.chunk({}, video, "stop")
            if options.include_usage:
                yield writer.usage_chunk(usage(record, record.price), video)
            yield DONE
            return
        if record.status == "failed":
            if record.refused:
                yield writer.chunk({"content": fmt.refused(record.error_message or "content policy")}, video)
                yield writer.chunk({}, video, "content_filter")
                if options.include_usage:
                    yield writer.usage_chunk(usage(record, 0.0), video)
            else:
                error = _failure(record)
                yield error_event(error.message, error.code or "upstream_error")
            yield DONE
            return
        text = fmt.queued if record.status in ("queued", "submitting") else fmt.progress(record.progress)
        if text != shown:
            shown = text
            yield writer.chunk({fmt.status_field: text}, video)


def restarting_message(video_id: str) -> str:
    return (f"The gateway is restarting; video {video_id} keeps generating. Retrieve it with GET /v1/videos/"
            f"{video_id}, or send the same request again to pick the job up where it is.")


async def _wait(gw, handle) -> JobRecord:
    """Wait for a job to end, or until the gateway starts shutting down (then a retryable 503)."""
    async for _ in handle.changes():
        if gw.draining.is_set() and not handle.done:
            raise APIError(503, restarting_message(handle.record.id), code="gateway_restarting",
                           type="server_error", headers={"retry-after": "5"})
    return handle.record


async def _already_final() -> AsyncIterator[bool]:
    yield True
