"""Bounds on what a client may send, checked before any endpoint reads it.

PostgreSQL refuses NUL in text and no part of the gateway has a use for other control characters in an
identifier, so both are a clear 400 naming the parameter instead of a database error. JSON documents are
bounded in depth and number of elements (a 20 MB body of tiny elements would cost gigabytes as Python
objects); the checks cost a few byte counts unless the body is suspicious.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Scope

from gateway.errors import APIError, bad_request

MAX_JSON_DEPTH = 32
MAX_JSON_ITEMS = 200_000
MAX_QUERY_BYTES = 16 * 1024
LARGE_BODY = 1 << 20
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls but tab, newline and carriage return
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f]")


def control_character(param: str, text: str, pattern: re.Pattern[str] = _CONTROL) -> APIError | None:
    match = pattern.search(text)
    if match is None:
        return None
    return bad_request(f"'{param}' contains the control character U+{ord(match.group()):04X}; remove it.",
                       param=param, code="invalid_characters")


def parse_json(body: bytearray) -> Any:
    """Parse a request body, refusing documents too deep or too large in elements, and strings holding control
    characters. A large body is consumed (emptied) on the way, to keep memory near twice its size."""
    if body.count(b",") + body.count(b":") > MAX_JSON_ITEMS:
        raise bad_request(f"The JSON body has more than {MAX_JSON_ITEMS} elements; send a smaller request.",
                          code="invalid_json")
    suspicious = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH or b"\\u00" in body
    try:
        document = _large(body) if len(body) >= LARGE_BODY and not _SURROGATE.search(body) else orjson.loads(body)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise bad_request(f"We could not parse the JSON body of your request ({_reason(exc)}). Send valid JSON.",
                          code="invalid_json") from None
    if suspicious:
        _walk(document)
    return document


def _large(body: bytearray) -> Any:
    """orjson needs a copy of its input beside the objects it makes (three times the body at the peak); the
    standard parser reads a str, so the bytes can go first (twice the body). Its extensions are turned off to
    accept what orjson accepts: no NaN or Infinity, integers beyond 64 bits as floats, escaped surrogates left
    to orjson."""
    text = body.decode("utf-8")
    body.clear()
    return json.loads(text, parse_constant=_no_constant, parse_int=_integer, parse_float=_number)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _integer(digits: str) -> int | float:
    if len(digits) <= 20 and -(2**63) <= (value := int(digits)) < 2**64:
        return value
    return _number(digits)  # as orjson does: a float, unless even that overflows


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number is infinity when parsed as double")
    return value


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc).splitlines()[0][:200]


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


def request_problem(scope: Scope) -> APIError | None:
    """A 400 for a path or query string holding control characters, or a query string that is too long."""
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
