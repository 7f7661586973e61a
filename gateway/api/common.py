"""Small helpers every endpoint shares: reading bodies, authenticating, JSON responses."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.inputs import parse_json
from gateway.core.auth import Principal
from gateway.errors import APIError

if TYPE_CHECKING:
    from gateway.app import Gateway

BODY_IDLE_TIMEOUT_S = 15.0


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def services(request: Request) -> Gateway:
    return request.app.state.gateway


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "")


async def authenticate(request: Request) -> Principal:
    principal = await services(request).auth.team_key(request.headers.get("authorization"))
    request.state.team = principal.team.name  # for the access log and request metrics
    return principal


def require_admin(request: Request) -> None:
    if not services(request).auth.is_admin(request.headers.get("authorization")):
        raise APIError(401, "This endpoint needs an admin key: send 'Authorization: Bearer <admin key>'.",
                       code="invalid_api_key")


def too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than the {limit} bytes this gateway accepts; send a smaller"
                         " image or a URL instead of inline data.", code="request_too_large")


async def bounded_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk; 413 as soon as it (or its declared length) passes `limit` bytes, 408
    when the client stops sending for BODY_IDLE_TIMEOUT_S (a slow client must not hold a connection open)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    size = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE_TIMEOUT_S):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _stalled() from None
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytearray:
    """The whole body in one buffer: sized from content-length when declared, so it is never reallocated, and
    no list of chunks lives next to a joined copy. The same bounds as `bounded_stream`, with one idle timer for
    the whole body instead of one per chunk (nothing runs between chunks here but the copy)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    size = int(declared) if declared.isdigit() and len(declared) < 12 else 0
    body = bytearray(size)
    filled = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(BODY_IDLE_TIMEOUT_S) as idle:
            async for chunk in request.stream():
                if not chunk:  # the stream's closing b"": the body is complete, no timer to move
                    continue
                end = filled + len(chunk)
                if end > limit:
                    raise too_large(limit)
                if end <= size:
                    body[filled:end] = chunk
                else:
                    del body[filled:]
                    body += chunk
                filled = end
                idle.reschedule(loop.time() + BODY_IDLE_TIMEOUT_S)
    except TimeoutError:
        raise _stalled() from None
    del body[filled:]
    return body


def _stalled() -> APIError:
    return APIError(408, f"The request body stopped arriving for {BODY_IDLE_TIMEOUT_S:g} s; send it without"
                         " pauses.", code="request_timeout")


async def read_json(request: Request, limit: int, *, empty: Any = ...) -> Any:
    """The JSON body; `empty` is what an empty body stands for (by default it is a parse error)."""
    body = await read_body(request, limit)
    if not body and empty is not ...:
        return empty
    return parse_json(body)
