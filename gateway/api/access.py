"""The access log line and the route label of an HTTP request (both written by `EdgeMiddleware`).

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
from typing import Any

from starlette.types import Scope

log = logging.getLogger("gateway.access")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes log at debug level
UNMATCHED = "unmatched"


def access_line(scope: Scope, state: dict[str, Any], route: str, status: int, latency_s: float,
                overhead_s: float) -> None:
    """One line per request; its fields are only gathered when the line is written."""
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    if not log.isEnabledFor(level):
        return
    job = state.get("job")  # the live record: a stream's job may have reached its key by now
    log.log(level, "%s %s %s", scope["method"], scope["path"], status, extra={
        "request_id": state.get("request_id"),
        "method": scope["method"],
        "path": scope["path"],
        "route": route,
        "status": status,
        "latency_ms": round(latency_s * 1000, 3),
        "overhead_ms": round(overhead_s * 1000, 3),
        "team": state.get("team") or None,
        "model": state.get("model"),
        "cache": state.get("cache"),
        "upstream_key": (job.upstream_key or None) if job is not None else None,
    })


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (`/v1/videos/{video_id}`), never the raw path."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED
