"""Bounds on what a client may send, checked before any endpoint reads it.

PostgreSQL refuses NUL in text and no part of the gateway has a use for other control characters in an
identifier, so both are a clear 400 naming the parameter instead of a database error. JSON documents are
bounded in depth and number of elements (a 20 MB body of tiny elements would cost gigabytes as Python
objects); the checks cost a few byte counts unless the body is suspicious.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.errors import error_response
from gateway.errors import APIError, bad_request

MAX_JSON_DEPTH = 32
MAX_JSON_ITEMS = 200_000
MAX_QUERY_BYTES = 16 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls but tab, newline and carriage return
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f]")


def control_character(param: str, text: str, pattern: re.Pattern[str] = _CONTROL) -> APIError | None:
    match = pattern.search(text)
    if match is None:
        return None
    return bad_request(f"'{param}' contains the control character U+{ord(match.group()):04X}; remove it.",
                       param=param, code="invalid_characters")


def check_json(body: bytes, document: Any) -> None:
    """Refuse documents too deep or too large in elements, and strings holding control characters."""
    if body.count(b",") + body.count(b":") > MAX_JSON_ITEMS:
        raise bad_request(f"The JSON body has more than {MAX_JSON_ITEMS} elements; send a smaller request.",
                          code="invalid_json")
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH or b"\\u00" in body:
        _walk(document)


def _walk(document: Any) -> None:
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if (problem := control_character(path or "body", value)) is not None:
                raise problem
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise bad_request(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep at '{path}';"
                              " send a flatter request.", param=path or None, code="invalid_json")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            child = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
            if isinstance(key, str) and (problem := control_character(child, key)) is not None:
                raise problem
            stack.append((item, child[:200], depth + 1))


class InputGuardMiddleware:
    """400 for a path or query string holding control characters, or a query string that is too long."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _request_problem(scope)
            if problem is not None:
                await error_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _request_problem(scope: Scope) -> APIError | None:
    if _CONTROL_ANY.search(scope["path"]):
        return APIError(400, "The request path contains a control character (such as an encoded %00 or %0A);"
                             " remove it.", code="invalid_path")
    query: bytes = scope.get("query_string", b"")
    if len(query) > MAX_QUERY_BYTES:
        return APIError(400, f"The query string is longer than {MAX_QUERY_BYTES} bytes; send fewer or shorter"
                             " parameters.", code="invalid_query")
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        problem = control_character(name, name, _CONTROL_ANY) or control_character(name, value, _CONTROL_ANY)
        if problem is not None:
            return problem
    return None
