"""The one ASGI layer every HTTP request passes: a request id on every response, bounds on the path and query
string, the request metrics and one access log line, and an envelope for anything unexpected.

One layer rather than one per concern, because each layer wraps `send` and adds a coroutine to every request
and every streamed chunk. The hot routes (`HotRoutes`) are called from here directly, past Starlette's router
and exception layers.
"""
from __future__ import annotations

import logging
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.access import access_line, route_of
from gateway.api.endpoints import HotRoutes
from gateway.api.errors import error_response
from gateway.api.inputs import request_problem
from gateway.ids import unique_id
from gateway.observability.metrics import MetricsSink, RequestTiming, current_request

log = logging.getLogger("gateway.http")
_INTERNAL = orjson.dumps({"error": {
    "message": "The gateway hit an internal error; the x-request-id header identifies it in the logs.",
    "type": "server_error", "param": None, "code": "internal_error"}})
_EVENT_STREAM = b"text/event-stream"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, metrics: MetricsSink, hot: HotRoutes | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing = RequestTiming(time.perf_counter())
        token = current_request.set(timing)
        request_id = unique_id("req_")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        answer = _Answer(scope, send, self.metrics, timing, request_id)
        try:
            problem = request_problem(scope)
            if problem is not None:
                await error_response(problem)(scope, receive, answer.send)
            elif self.hot is not None and (route := self.hot.find(scope)) is not None:
                await route.app(scope, receive, answer.send)
            else:
                await self.app(scope, receive, answer.send)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            if answer.started is None:
                await answer.send({"type": "http.response.start", "status": 500,
                                   "headers": [(b"content-type", b"application/json")]})
                await answer.send({"type": "http.response.body", "body": _INTERNAL})
        finally:
            current_request.reset(token)
            if answer.streaming:
                self.metrics.stream_closed()
            finished = time.perf_counter()
            end, waiting_since = answer.started, state.get("waiting_since")
            if waiting_since is not None and (end is None or waiting_since <= end):
                end = waiting_since
            overhead = max((finished if end is None else end) - timing.started - timing.upstream_s, 0.0)
            route = route_of(scope)
            self.metrics.request(route, scope["method"], answer.status, state.get("team") or "", overhead)
            access_line(scope, state, route, answer.status, finished - timing.started, overhead)


class _Answer:
    """The response to one request as it goes out: its `send` is what the app sends through. One small object
    rather than a closure over cells, since it lives as long as the request (a stream's: minutes)."""

    __slots__ = ("first_chunk_seen", "metrics", "request_id", "scope", "send_on", "started", "status", "streaming",
                 "timing")

    def __init__(self, scope: Scope, send: Send, metrics: MetricsSink, timing: RequestTiming,
                 request_id: str) -> None:
        self.scope = scope
        self.send_on = send
        self.metrics = metrics
        self.timing = timing
        self.request_id = request_id
        self.status = 500  # what the client gets if the app fails before answering
        self.started: float | None = None
        self.streaming = self.first_chunk_seen = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], time.perf_counter()
            headers = message["headers"] = [*message.get("headers", ()), (b"x-request-id", self.request_id.encode())]
            self.streaming = _is_event_stream(headers)
            if self.streaming:
                self.metrics.stream_opened()
        elif self.streaming and not self.first_chunk_seen and message.get("body"):
            self.first_chunk_seen = True
            self.metrics.first_chunk(route_of(self.scope), time.perf_counter() - self.timing.started)
        await self.send_on(message)


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type" or name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == _EVENT_STREAM
    return False
