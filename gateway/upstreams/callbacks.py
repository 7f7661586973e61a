"""Provider webhooks: a provider's call that a job of ours moved, checked before it is believed at all.

A verified callback is only a hint: it wakes the follower of that upstream job (`Wakeups`), which then polls the
provider with the job's own key. The status always comes from that poll, so even a genuine but stale callback
cannot move a job backwards or end it falsely, and a replayed one costs at most one poll; a forged one is
refused before it can do even that.

How each provider signs (PROVIDERS.md §1.6, §2.4, §3.6, §4.4), always over the raw body bytes:
- gemini, replicate: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`,
  HMAC-SHA256 of `id.timestamp.body` keyed with the `whsec_` secret's bytes);
- openrouter: `X-OpenRouter-Signature: t=<unix>,v1=<hex>`, HMAC-SHA256 of `t,body` with the workspace secret;
- fal: `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp`, `-Signature` (hex ED25519 of
  `request_id\\nuser_id\\ntimestamp\\nsha256_hex(body)`) by any key of fal's published JWKS.
Timestamps more than TOLERANCE_S away from now are refused either way, which bounds how long a delivery id has
to be remembered to refuse it twice.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.config import UpstreamConfig
from gateway.observability.metrics import NULL_METRICS, MetricsSink
from gateway.upstreams.provider_http import Wakeups

log = logging.getLogger("gateway.upstreams")
TOLERANCE_S = 300.0
SEEN_MAX = 20_000  # delivery ids remembered per upstream (each for twice the tolerance)
JWKS_TTL_S = 86_400.0  # fal: its key set is read again after a day at most
JWKS_RETRY_S = 300.0  # and at most this often when a signature matches none of the keys (a rotation)
JWKS_TIMEOUT_S = 10.0
JWKS_MAX_BYTES = 64 * 1024
OUTCOMES = ("accepted", "duplicate", "forged", "unknown")


class Forged(Exception):
    """The callback's signature is missing, wrong or too old: it proves nothing and changes nothing."""


class KeysUnavailable(Exception):
    """The keys to check the callback against cannot be read now (fal's JWKS): the provider should retry."""


class Verifier(Protocol):
    async def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> list[str]:
        """The delivery's ids (to refuse a replay); raises Forged or KeysUnavailable."""


def _fresh(timestamp: str | None, now: float) -> None:
    try:
        sent = int(timestamp or "")
    except ValueError:
        raise Forged("no valid timestamp") from None
    if abs(now - sent) > TOLERANCE_S:
        raise Forged("timestamp outside the tolerance")


class StandardWebhooks:
    """gemini and replicate."""

    def __init__(self, secret: str) -> None:
        self._key = base64.b64decode(secret.removeprefix("whsec_") + "==")

    async def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> list[str]:
        delivery, timestamp, signatures = (headers.get(n) for n in ("webhook-id", "webhook-timestamp",
                                                                    "webhook-signature"))
        if not delivery or not signatures:
            raise Forged("Standard Webhooks headers missing")
        _fresh(timestamp, now)
        expected = hmac.new(self._key, f"{delivery}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        for signature in signatures.split():
            version, _, value = signature.partition(",")
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if version == "v1" and hmac.compare_digest(expected, given):
                return [delivery]
        raise Forged("no matching signature")


class OpenRouterSignature:
    """`X-OpenRouter-Signature: t=…,v1=…`. The delivery is known by its signature (what a replay repeats) and by
    OpenRouter's idempotency key, which a retry of the same event repeats."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    async def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> list[str]:
        parts = dict(p.strip().partition("=")[::2] for p in headers.get("x-openrouter-signature", "").split(","))
        timestamp, given = parts.get("t"), parts.get("v1", "")
        if not given:
            raise Forged("X-OpenRouter-Signature missing")
        _fresh(timestamp, now)
        expected = hmac.new(self._key, f"{timestamp},".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given.lower()):
            raise Forged("no matching signature")
        ids = [f"sig:{timestamp}:{given.lower()}"]
        if headers.get("x-openrouter-idempotency-key"):
            ids.append("key:" + headers["x-openrouter-idempotency-key"])
        return ids


class FalSignature:
    """fal's ED25519 signatures, checked against the keys of its JWKS (read when first needed, again after a
    day, and again when no key matches — at most every JWKS_RETRY_S, so forged calls cannot make it fetch)."""

    def __init__(self, jwks_url: str, fetch: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        self.jwks_url = jwks_url
        self._fetch = fetch or _fetch_jwks
        self._keys: list[Ed25519PublicKey] = []
        self._read_at = -JWKS_TTL_S
        self._lock = asyncio.Lock()

    async def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> list[str]:
        request_id, user_id, timestamp, signature = (headers.get(f"x-fal-webhook-{n}") for n in (
            "request-id", "user-id", "timestamp", "signature"))
        if not request_id or user_id is None or not signature:
            raise Forged("fal webhook headers missing")
        _fresh(timestamp, now)
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            raise Forged("signature is not hex") from None
        message = "\n".join((request_id, user_id, timestamp or "", hashlib.sha256(body).hexdigest())).encode()
        keys = await self._current(stale_after=JWKS_TTL_S)
        if not _any_key(keys, given, message):
            keys = await self._current(stale_after=JWKS_RETRY_S)  # fal may have rotated its keys
            if not _any_key(keys, given, message):
                raise Forged("no key of the JWKS matches the signature")
        return [request_id]

    async def _current(self, stale_after: float) -> list[Ed25519PublicKey]:
        async with self._lock:
            if time.monotonic() - self._read_at > stale_after:
                try:
                    self._keys = _ed25519_keys(await self._fetch(self.jwks_url))
                    self._read_at = time.monotonic()
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    log.warning("fal JWKS not read", extra={"url": self.jwks_url, "error": type(exc).__name__})
                    if time.monotonic() - self._read_at > JWKS_TTL_S:
                        self._keys = []  # keys older than a day are not trusted any more
            if not self._keys:
                raise KeysUnavailable("fal's webhook keys cannot be read")
            return self._keys


def _any_key(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


def _ed25519_keys(document: bytes) -> list[Ed25519PublicKey]:
    keys = orjson.loads(document)["keys"]
    found = [Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(k["x"] + "=" * (-len(k["x"]) % 4)))
             for k in keys if isinstance(k, dict) and k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
             and isinstance(k.get("x"), str)]
    if not found:
        raise ValueError("no Ed25519 key in the JWKS")
    return found


async def _fetch_jwks(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_S, follow_redirects=False) as client, \
            client.stream("GET", url) as response:
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError("JWKS too large")
        return body


class Seen:
    """Delivery ids of verified callbacks, each kept as long as its timestamp could still pass (twice the
    tolerance), so a replay inside the window is recognised; oldest first, bounded."""

    def __init__(self, keep_s: float = 2 * TOLERANCE_S, limit: int = SEEN_MAX) -> None:
        self._ids: dict[str, float] = {}
        self._keep_s = keep_s
        self._limit = limit

    def first(self, ids: list[str], now: float) -> bool:
        """Record `ids`; False when any of them was seen before (the delivery is a duplicate)."""
        while self._ids and (len(self._ids) >= self._limit or now - next(iter(self._ids.values())) > self._keep_s):
            self._ids.pop(next(iter(self._ids)))
        duplicate = any(i in self._ids for i in ids)
        for i in ids:
            self._ids.setdefault(i, now)
        return not duplicate


@dataclass(slots=True)
class Callbacks:
    """One upstream's provider webhooks: the URL the provider is asked to call, how a call is checked, and the
    followers it wakes."""

    upstream: str
    url: str
    verifier: Verifier
    wakeups: Wakeups
    metrics: MetricsSink = NULL_METRICS
    seen: Seen | None = None

    def __post_init__(self) -> None:
        self.seen = self.seen or Seen()

    async def receive(self, headers: Mapping[str, str], body: bytes, job_of: Callable[[Any], str | None],
                      now: float | None = None) -> str:
        """Check one callback and wake its job's follower; returns the outcome (OUTCOMES). Raises Forged (after
        counting it) and KeysUnavailable."""
        now = time.time() if now is None else now
        try:
            ids = await self.verifier.verify(headers, body, now)
        except Forged:
            self.metrics.upstream_callback(self.upstream, "forged")
            raise
        assert self.seen is not None
        if not self.seen.first(ids, now):
            outcome = "duplicate"
        else:
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                document = None
            job_id = job_of(document) if isinstance(document, dict) else None
            outcome = "accepted" if job_id and self.wakeups.wake(job_id) else "unknown"
        self.metrics.upstream_callback(self.upstream, outcome)
        return outcome


def callbacks_for(config: UpstreamConfig, public_url: str, metrics: MetricsSink = NULL_METRICS) -> Callbacks | None:
    """The upstream's callbacks when its config switches them on, else None (its jobs are only polled)."""
    if not config.has_webhooks:
        return None
    verifier: Verifier
    if config.kind == "fal":
        verifier = FalSignature(config.webhook_jwks_url)
    elif config.kind == "openrouter":
        verifier = OpenRouterSignature(config.webhook_secret)
    else:
        verifier = StandardWebhooks(config.webhook_secret)
    url = f"{public_url.rstrip('/')}/upstream-webhooks/{quote(config.name, safe='')}"
    return Callbacks(config.name, url, verifier,
                     Wakeups(), metrics)
