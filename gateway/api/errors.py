"""Rendering errors as OpenAI's envelope."""
from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import APIError

log = logging.getLogger("gateway.http")


def error_response(exc: APIError) -> Response:
    return Response(orjson.dumps(exc.body()), exc.status, exc.headers, media_type="application/json")


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
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
