"""Rendering errors as OpenAI's envelope."""
from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import APIError


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
