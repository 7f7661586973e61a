"""OpenAI's error envelope and the JSON responses the simulator sends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response


def json_response(content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code, headers, media_type="application/json")


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    """Raised by an endpoint to answer with OpenAI's error envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = error_body(self.message, self.type, self.param, self.code)
        return json_response(body, self.status_code, self.headers)


def invalid_value(param: str, value: object, allowed: Sequence[str]) -> APIError:
    message = f"Invalid value: '{value}'. Supported values are: {quoted_list(allowed)}."
    return APIError(400, message, param=param, code="invalid_value")


def missing_parameter(param: str) -> APIError:
    return APIError(
        400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid_type(param: str, expected: str, value: object) -> APIError:
    message = f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead."
    return APIError(400, message, param=param, code="invalid_type")


def quoted_list(values: Sequence[str]) -> str:
    """`'a'`, `'a' and 'b'`, `'a', 'b', and 'c'`: how OpenAI lists allowed values."""
    quoted = [f"'{value}'" for value in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route or method), in OpenAI's words."""
    assert isinstance(exc, HTTPException)
    message = f"Invalid URL ({request.method} {request.url.path})"
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}."
    return json_response(error_body(message, "invalid_request_error"), exc.status_code, exc.headers)


def retry_after(error: APIError) -> dict[str, str]:
    """Of an error's headers, only `retry-after`: what the providers answer an error with."""
    return {name: value for name, value in error.headers.items() if name == "retry-after"}
