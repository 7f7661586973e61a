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
        header = (b"x-request-id", request_id.encode())
        metrics = self.metrics
        status = 500  # what the client gets if the app fails before answering
        response_started: float | None = None
        streaming = first_chunk_seen = False

        async def observe(message: Message) -> None:
            nonlocal status, response_started, streaming, first_chunk_seen
            if message["type"] == "http.response.start":
                status, response_started = message["status"], time.perf_counter()
                headers = message["headers"] = [*message.get("headers", ()), header]
                streaming = _is_event_stream(headers)
                if streaming:
                    metrics.stream_opened()
            elif streaming and not first_chunk_seen and message.get("body"):
                first_chunk_seen = True
                metrics.first_chunk(route_of(scope), time.perf_counter() - timing.started)
            await send(message)

        try:
            problem = request_problem(scope)
            if problem is not None:
                await error_response(problem)(scope, receive, observe)
            elif self.hot is not None and (route := self.hot.find(scope)) is not None:
                await route.app(scope, receive, observe)
            else:
                await self.app(scope, receive, observe)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            if response_started is None:
                await observe({"type": "http.response.start", "status": 500,
                               "headers": [(b"content-type", b"application/json")]})
                await observe({"type": "http.response.body", "body": _INTERNAL})
        finally:
            current_request.reset(token)
            if streaming:
                metrics.stream_closed()
            finished = time.perf_counter()
            waiting_since = state.get("waiting_since")
            end = response_started if waiting_since is None or (
                response_started is not None and response_started < waiting_since) else waiting_since
            overhead = max((finished if end is None else end) - timing.started - timing.upstream_s, 0.0)
            route = route_of(scope)
            metrics.request(route, scope["method"], status, state.get("team") or "", overhead)
            access_line(scope, state, route, status, finished - timing.started, overhead)


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type" or name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == _EVENT_STREAM
    return False
