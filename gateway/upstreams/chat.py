"""The "Sora-2 chat format" dialect: a streamed chat completion whose text reports progress and ends with a link.

A relay job lives only as long as its HTTP stream, so `submit()` opens the stream and parks the response under a
local id that `track()` then reads; an id this process did not open cannot be followed (JobLost).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from gateway.core.upstream import GenerationSpec, JobLost, UpstreamError, UpstreamKey, UpstreamStatus
from gateway.net import FetchPolicy, Resolver, origin_of
from gateway.observability.metrics import NULL_METRICS, MetricsSink
from gateway.redaction import NO_SECRETS, Redactor
from gateway.upstreams.http import (
    clean_status,
    error_from_response,
    guarded_download,
    read_bounded,
    transport_error,
)
from gateway.upstreams.relay_families import RelayStreamParser

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024
MAX_MEDIA_BYTES = 1024 * 1024 * 1024  # a finished video (or thumbnail) from a relay link
MEDIA_TOTAL_S = 600.0
_RELAY_LINK_GONE = frozenset({401, 403, 404})  # statuses of a relay's link kept as they are


class RelayProtocolError(Exception):
    """The relay sent something that is not a readable event stream."""


class ChatRelayUpstream:
    kind = "chat"

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_s: float,
        idle_timeout_s: float = 300.0,
        client: httpx.AsyncClient | None = None,
        metrics: MetricsSink = NULL_METRICS,
        resolver: Resolver | None = None,
        redact: Redactor = NO_SECRETS,
        max_media_bytes: int = MAX_MEDIA_BYTES,
        media_total_s: float = MEDIA_TOTAL_S,
        media_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`timeout_s` bounds each HTTP call up to its response headers; `idle_timeout_s` is how long an open
        relay stream may stay silent (relays often report progress only every 30 s or so); `resolver` checks
        where the relay's media links point, and a media download stops at `max_media_bytes` or after
        `media_total_s`; `redact` knows every configured secret."""
        self._resolver = resolver
        self._redact = redact
        self._max_media_bytes = max_media_bytes
        self._media_total_s = media_total_s
        self._media_transport = media_transport
        own = origin_of(base_url)
        self._own_origin = frozenset({own}) if own else frozenset()
        self.name = name
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._stream_timeout = httpx.Timeout(timeout_s, read=idle_timeout_s)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )
        self._streams: dict[str, httpx.Response] = {}

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of is not None:
            raise UpstreamError("remix is not supported by chat relays", status=400)
        request = self._client.build_request(
            "POST",
            f"{self.base_url}/chat/completions",
            content=orjson.dumps(request_body(spec)),
            headers={
                "authorization": f"Bearer {key.secret}",
                "content-type": "application/json",
                "accept": "text/event-stream",
            },
            timeout=self._stream_timeout,
        )
        try:
            with self.metrics.upstream_call(self.name, key.label, "submit") as call:
                async with asyncio.timeout(self._timeout_s):
                    response = await self._client.send(request, stream=True)
                call.status = response.status_code
        except TimeoutError:
            raise UpstreamError(f"relay did not answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise transport_error(exc, "relay request") from None

        if not response.is_success:
            body = await read_bounded(response)
            raise error_from_response(response, body, upstream=self.name, redact=self._redact, secrets=(key.secret,))

        upstream_id = f"relay_{uuid.uuid4().hex}"
        self._streams[upstream_id] = response
        return upstream_id

    async def track(self, upstream_id: str, key: UpstreamKey) -> AsyncIterator[UpstreamStatus]:
        response = self._streams.pop(upstream_id, None)
        if response is None:
            raise JobLost(f"relay stream {upstream_id} is not open in this process")
        parser = RelayStreamParser()
        try:
            async for chunk in _chunks(response):
                for status in parser.feed(chunk):
                    yield clean_status(status, self._redact, (key.secret,))
                    if status.done:
                        return
            yield clean_status(parser.finish(), self._redact, (key.secret,))
        except (httpx.HTTPError, httpx.StreamError, RelayProtocolError) as exc:
            if not parser.conclusive:  # the fault table's relay-stream row decides what it means for the key
                raise UpstreamError(f"relay stream broke off: {type(exc).__name__}") from None
            yield clean_status(parser.finish(), self._redact, (key.secret,))
        finally:
            await response.aclose()

    async def download(
        self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus, variant: str
    ) -> AsyncIterator[bytes] | None:
        url = {"video": final.video_url, "thumbnail": final.thumbnail_url}.get(variant)
        if not url:
            return None
        # Relay links are public URLs: the upstream key is not sent along. They go through the fetch guard like
        # any URL from outside, so a relay's output cannot make the gateway fetch (and serve) an internal
        # address; only the relay's own configured origin (scheme, host and port) need not be public.
        policy = FetchPolicy(max_bytes=self._max_media_bytes, timeout_s=self._timeout_s, total_s=self._media_total_s,
                             what=f"the relay's {variant} link", allowed_origins=self._own_origin)
        return await guarded_download(url, policy, key, upstream=self.name, link=f"the relay's {variant} link",
                                      passed=_RELAY_LINK_GONE, metrics=self.metrics, redact=self._redact,
                                      resolver=self._resolver, transport=self._media_transport)

    async def aclose(self) -> None:
        streams, self._streams = self._streams, {}
        for response in streams.values():
            await response.aclose()
        if self._owns_client:
            await self._client.aclose()


def request_body(spec: GenerationSpec) -> dict[str, Any]:
    content: str | list[dict[str, Any]] = spec.prompt
    if spec.image is not None:
        encoded = base64.b64encode(spec.image.data).decode("ascii")
        content = [
            {"type": "text", "text": spec.prompt},
            {"type": "image_url", "image_url": {"url": f"data:{spec.image.mime};base64,{encoded}"}},
        ]
    return {
        "model": spec.upstream_model,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
        # Not part of the chat format; relays that read them get the requested shape, the others ignore them.
        "size": spec.size,
        "seconds": str(spec.seconds),
    }


async def _chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an SSE stream, one per `data:` line, until `[DONE]`.

    Lines are dispatched one by one rather than per blank-line-terminated event, since some relays leave out the
    blank lines. A body that is plain JSON lines (no SSE framing) is read the same way.
    """
    async for line in _lines(response):
        if line.startswith("data:"):
            payload = line[5:].strip()
        elif line.startswith("{"):
            payload = line
        else:  # blank lines, ": ping" comments, event:/id:/retry: fields
            continue
        if payload == "[DONE]":
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            logger.debug("skipping an unreadable event from a relay stream")
            continue
        if isinstance(chunk, dict):
            yield chunk


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    """Lines of the body, split on bytes so characters cut across network reads stay whole."""
    pending = b""
    async for data in response.aiter_bytes():
        pending += data
        if b"\n" not in data:
            if len(pending) > MAX_LINE_BYTES:
                raise RelayProtocolError("relay sent an over-long line")
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")
