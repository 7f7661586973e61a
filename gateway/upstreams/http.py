"""HTTP helpers shared by the upstream dialects."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import orjson

from gateway.core.upstream import UpstreamError, UpstreamKey, UpstreamStatus
from gateway.net import Fetched, FetchError, FetchPolicy, Resolver, open_url
from gateway.observability.metrics import MetricsSink
from gateway.redaction import NO_SECRETS, Redactor

MAX_ERROR_BODY = 64 * 1024
_MAX_MESSAGE = 300
RELAYED_STATUSES = frozenset({400, 404, 409, 413, 415, 422})
_STATUS_WORDS = {401: "refused the key (HTTP 401)", 403: "refused the key (HTTP 403)",
                 429: "rate limited the key (HTTP 429)"}
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PARAM = re.compile(r"[A-Za-z0-9_.\[\]\-]{1,64}")
_REFERENCE = re.compile(r"[A-Za-z0-9_.:\-]{1,80}")


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
    response: httpx.Response, body: bytes, *, upstream: str = "upstream", redact: Redactor = NO_SECRETS,
    secrets: Iterable[str] = (),
) -> UpstreamError:
    """An UpstreamError for a non-2xx answer, reading OpenAI's `{"error": {...}}` envelope when there is one."""
    return error_from_status(response.status_code, response.reason_phrase, response.headers, body,
                             upstream=upstream, redact=redact, secrets=secrets)


def error_from_status(
    status: int, reason: str | None, headers: Mapping[str, str], body: bytes, *, upstream: str = "upstream",
    redact: Redactor = NO_SECRETS, secrets: Iterable[str] = (),
) -> UpstreamError:
    """The same, for any HTTP client: the status, reason phrase, headers and (bounded) body of the answer.

    The message is in the gateway's words: which upstream, which status, the upstream's request id as a
    reference. Only a request-level refusal (400, 404, 409, 413, 415, 422) carries the upstream's own text,
    since it tells the client what to change, and that text is redacted and bounded first. An upstream that
    quotes the key back in a 401 or a 5xx therefore has nothing of it reach an error, an admin view or a log.
    """
    text, code, param = _describe(body)
    message = _STATUS_WORDS.get(status) or f"answered HTTP {status}"
    message = f"upstream {upstream} {message}"
    secrets = tuple(secrets)
    reference = _token(headers.get("x-request-id"), _REFERENCE, redact, secrets)
    if reference:
        message += f" [ref {reference}]"
    if status in RELAYED_STATUSES:
        message += ": " + redact.outside_text(text or reason or "no details", secrets, _MAX_MESSAGE)
    return UpstreamError(message, status=status, retry_after=parse_retry_after(headers),
                         code=_token(code, _CODE, redact, secrets), param=_token(param, _PARAM, redact, secrets))


def clean_status(status: UpstreamStatus, redact: Redactor, secrets: Iterable[str] = ()) -> UpstreamStatus:
    """A status whose failure code and reason are fit to show: the reason redacted, the code a plain token."""
    if status.error_message is None and status.error_code is None:
        return status
    secrets = tuple(secrets)
    message = redact.outside_text(status.error_message, secrets, _MAX_MESSAGE) if status.error_message else None
    code = _token(status.error_code, _CODE, redact, secrets) or ("upstream_error" if status.error_code else None)
    return replace(status, error_code=code, error_message=message or None)


def transport_error(exc: Exception, what: str = "upstream request") -> UpstreamError:
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"{what} timed out ({type(exc).__name__})", sent=sent)
    return UpstreamError(f"{what} failed: {type(exc).__name__}", sent=sent)


def connection_error(upstream: str, exc: BaseException) -> UpstreamError:
    """An aiohttp call that got no answer. A connection that was never made (refused, no such host, a connect
    timeout) cannot have carried the request, which a failed create needs to know; any other failure may have."""
    sent = not isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
    if isinstance(exc, TimeoutError):
        return UpstreamError(f"upstream {upstream} timed out", sent=sent)
    return UpstreamError(f"upstream {upstream} connection failed: {type(exc).__name__}", sent=sent)


def _token(value: str | None, pattern: re.Pattern[str], redact: Redactor, secrets: Iterable[str]) -> str | None:
    """An upstream's code, param or request id, kept only when it looks like one (never free text, never a key)."""
    if value is None or not pattern.fullmatch(value):
        return None
    return value if redact(value, secrets) == value else None


def json_document(body: bytes) -> Any:
    """An error body as JSON, or None when it is empty or not JSON."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


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


class DownloadBody:
    """A downloading body that frees its download slot however it ends, read or not."""

    def __init__(self, response: aiohttp.ClientResponse, gate: asyncio.Semaphore) -> None:
        self.response = response
        self.gate = gate
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_chunked(65536):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"content download broke off: {type(exc).__name__}") from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.gate.release()
            self.response.release()


async def guarded_download(url: str, policy: FetchPolicy, key: UpstreamKey, *, upstream: str, link: str,
                           passed: frozenset[int], metrics: MetricsSink, redact: Redactor,
                           resolver: Resolver | None = None, transport: Any = None) -> AsyncIterator[bytes]:
    """The bytes of a link from outside (a relay's or a provider's CDN), through the fetch guard and without the
    key. A refused fetch is a 502 that names no secret; an error answer keeps its status when it is one of
    `passed` (what the fault table reads as the content being gone), else it is a 502."""
    try:
        with metrics.upstream_call(upstream, key.label, "download") as call:
            fetched = await open_url(url, policy, resolver=resolver, transport=transport)
            call.status = fetched.status_code
    except FetchError as exc:
        raise UpstreamError(f"upstream {upstream}: {redact.outside_text(str(exc), (key.secret,))}",
                            status=502) from None
    if not fetched.response.is_success:
        status = fetched.status_code
        await fetched.aclose()
        raise UpstreamError(f"upstream {upstream}: {link} answered HTTP {status}",
                            status=status if status in passed else 502)
    return _fetched_chunks(fetched, upstream)


async def _fetched_chunks(fetched: Fetched, upstream: str) -> AsyncIterator[bytes]:
    try:
        async for data in fetched.chunks():
            yield data
    except FetchError as exc:
        raise UpstreamError(f"upstream {upstream}: {exc}", status=502) from None
    finally:
        await fetched.aclose()
