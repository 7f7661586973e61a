"""HTTP helpers shared by the upstream dialects."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import orjson

from gateway.core.upstream import UpstreamError

MAX_ERROR_BODY = 64 * 1024
_MAX_MESSAGE = 500
# Upstreams like to echo credentials back ("Incorrect API key provided: sk-..."); keep them out of errors.
_TOKEN_LIKE = re.compile(r"\b(?:sk|ak|key|tok)[-_][A-Za-z0-9_\-*.]{6,}|\bBearer\s+\S+", re.IGNORECASE)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait before retrying: `retry-after-ms` first, then `retry-after` as seconds or an HTTP date."""
    milliseconds = _non_negative(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


async def read_bounded(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    """Read at most `limit` bytes of a streamed response body, then close it."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= limit:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass
    finally:
        await response.aclose()
    return bytes(body[:limit])


def error_from_response(
    response: httpx.Response, body: bytes, *, secrets: Iterable[str] = ()
) -> UpstreamError:
    """An UpstreamError for a non-2xx answer, reading OpenAI's `{"error": {...}}` envelope when there is one."""
    return error_from_status(response.status_code, response.reason_phrase, response.headers, body, secrets=secrets)


def error_from_status(
    status: int, reason: str | None, headers: Mapping[str, str], body: bytes, *, secrets: Iterable[str] = ()
) -> UpstreamError:
    """The same, for any HTTP client: the status, reason phrase, headers and (bounded) body of the answer."""
    message, code, param = _describe(body)
    message = redact(message or reason or "no details", secrets)
    return UpstreamError(
        f"upstream answered HTTP {status}: {message}",
        status=status,
        retry_after=parse_retry_after(headers),
        code=code,
        param=param,
    )


def transport_error(exc: Exception, what: str = "upstream request") -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"{what} timed out ({type(exc).__name__})")
    return UpstreamError(f"{what} failed: {type(exc).__name__}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_LIKE.sub("***", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _describe(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text or None), None, None
    if not isinstance(document, dict):
        return None, None, None
    error = document.get("error")
    if isinstance(error, dict):
        return _text(error.get("message")), _text(error.get("code")), _text(error.get("param"))
    if isinstance(error, str):
        return error, None, None
    return _text(document.get("message") or document.get("detail")), _text(document.get("code")), None


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()
