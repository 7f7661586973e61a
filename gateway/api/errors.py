"""Rendering errors as OpenAI's envelope: the one table from the gateway's failure kinds to HTTP."""
from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.core import errors as kinds
from gateway.core.errors import GatewayError
from gateway.core.store import StoreUnavailable
from gateway.errors import APIError

log = logging.getLogger("gateway.http")

# kind → (status, OpenAI error type). A kind not listed takes its nearest listed base class.
HTTP_BY_KIND: dict[type[GatewayError], tuple[int, str]] = {
    kinds.InvalidRequest: (400, "invalid_request_error"),
    kinds.ContentRefused: (400, "invalid_request_error"),
    kinds.UpstreamRejected: (400, "invalid_request_error"),
    kinds.Unauthenticated: (401, "invalid_request_error"),
    kinds.PermissionDenied: (403, "invalid_request_error"),
    kinds.NotFound: (404, "invalid_request_error"),
    kinds.Conflict: (409, "invalid_request_error"),
    kinds.TooLarge: (413, "invalid_request_error"),
    kinds.RateLimited: (429, "requests"),
    kinds.QuotaExceeded: (429, "insufficient_quota"),
    kinds.UpstreamFailed: (502, "server_error"),
    kinds.UpstreamUnavailable: (503, "server_error"),
    kinds.GatewayRestarting: (503, "server_error"),
    kinds.UpstreamTimeout: (504, "server_error"),
    StoreUnavailable: (503, "server_error"),
    GatewayError: (500, "server_error"),
}
_TYPE_BY_STATUS = {429: "rate_limit_error"}


def http_of(exc: GatewayError) -> tuple[int, str]:
    """The status and OpenAI error type of a failure."""
    if isinstance(exc, APIError):
        status = exc.status
        return status, exc.type or _TYPE_BY_STATUS.get(status, "server_error" if status >= 500
                                                       else "invalid_request_error")
    for kind in type(exc).__mro__:
        if kind in HTTP_BY_KIND:
            return HTTP_BY_KIND[kind]
    return 500, "server_error"


def error_body(exc: GatewayError) -> dict:
    _, type_ = http_of(exc)
    return {"error": {"message": exc.message, "type": type_, "param": exc.param, "code": exc.code}}


def error_headers(exc: GatewayError) -> dict[str, str]:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers.setdefault("retry-after", str(max(1, int(exc.retry_after + 0.999))))
    return headers


def error_response(exc: GatewayError) -> Response:
    status, _ = http_of(exc)
    return Response(orjson.dumps(error_body(exc)), status, error_headers(exc), media_type="application/json")


def error_event(exc: GatewayError) -> bytes:
    """The same failure as an in-stream event, for a stream that has already started."""
    return b"data: " + orjson.dumps(error_body(exc)) + b"\n\n"


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None) or "request failed"
    if status == 404:
        detail = f"no route for {request.method} {request.url.path}"
        return error_response(APIError(404, detail, code="not_found"))
    if status == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(APIError(status, str(detail)))


def backend_errors() -> tuple[type[BaseException], ...]:
    """Failures of the gateway's own state stores: a database or Redis that is down or overloaded."""
    import sqlite3

    import asyncpg
    import redis.exceptions

    return (sqlite3.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.TooManyConnectionsError, ConnectionError)


async def backend_error_handler(request: Request, exc: Exception) -> Response:
    log.error("state backend unavailable", extra={"error": type(exc).__name__, "path": request.url.path})
    return error_response(APIError(
        503, "The gateway's database or Redis is unavailable right now; nothing was charged. Retry shortly.",
        code="backend_unavailable", type="server_error", headers={"retry-after": "2"}))
