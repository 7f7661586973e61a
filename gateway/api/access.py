"""ASGI middleware: per HTTP request, the request metrics and one access log line.

Endpoints describe their request in `scope["state"]` as they learn about it (`request.state.team = …`):

    team           the caller's team (set by `authenticate`)
    model          the model alias asked for
    cache          hit | miss | joined
    upstream_key   the label of the upstream key that made the video
    waiting_since  time.perf_counter() when the request began waiting for a job to finish, for responses that
                   only start once the video is ready

Gateway overhead runs from the request's arrival to its response start (or `waiting_since`, when earlier), less
the upstream submissions made for it on the way (see `Metrics.record_upstream_call`).
"""
from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.metrics import MetricsSink, RequestTiming, current_request

log = logging.getLogger("gateway.access")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes log at debug level
UNMATCHED = "unmatched"


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: MetricsSink) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing = RequestTiming(time.perf_counter())
        token = current_request.set(timing)
        state = scope.setdefault("state", {})
        status = 500  # what the client gets if the app fails before answering
        response_started: float | None = None
        streaming = False
        first_chunk_seen = False

        async def observe(message: Message) -> None:
            nonlocal status, response_started, streaming, first_chunk_seen
            if message["type"] == "http.response.start":
                status, response_started = message["status"], time.perf_counter()
                streaming = _is_event_stream(message.get("headers", ()))
                if streaming:
                    self.metrics.stream_opened()
            elif streaming and not first_chunk_seen and message.get("body"):
                first_chunk_seen = True
                self.metrics.first_chunk(route_of(scope), time.perf_counter() - timing.started)
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            current_request.reset(token)
            if streaming:
                self.metrics.stream_closed()
            finished = time.perf_counter()
            ends = [t for t in (response_started, state.get("waiting_since")) if t is not None]
            overhead = max((min(ends) if ends else finished) - timing.started - timing.upstream_s, 0.0)
            route = route_of(scope)
            team = state.get("team") or ""
            job = state.get("job")  # the live record: a stream's job may have reached its key by now
            self.metrics.request(route, scope["method"], status, team, overhead)
            log.log(logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
                    "%s %s %s", scope["method"], scope["path"], status, extra={
                        "request_id": state.get("request_id"),
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "latency_ms": round((finished - timing.started) * 1000, 3),
                        "overhead_ms": round(overhead * 1000, 3),
                        "team": team or None,
                        "model": state.get("model"),
                        "cache": state.get("cache"),
                        "upstream_key": (job.upstream_key or None) if job is not None else None,
                    })


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (`/v1/videos/{video_id}`), never the raw path."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


def _is_event_stream(headers) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False
