"""ASGI middleware: a request id on every response, and an envelope for anything unexpected."""
from __future__ import annotations

import logging

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ids import unique_id

log = logging.getLogger("gateway.http")
_INTERNAL = orjson.dumps({"error": {
    "message": "The gateway hit an internal error; the x-request-id header identifies it in the logs.",
    "type": "server_error", "param": None, "code": "internal_error"}})


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = unique_id("req_")
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            if started:
                return
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), header]})
            await send({"type": "http.response.body", "body": _INTERNAL})
