"""The provider fakes' webhooks: when a create names a callback URL, one POST at the job's end, signed the way
that provider signs (PROVIDERS.md §1.6, §2.4, §3.6, §4.4).

- replicate, gemini: Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the
  simulator's `webhook_secret` (`whsec_…`);
- openrouter: `X-OpenRouter-Signature: t=…,v1=…` (HMAC-SHA256 of `t,body` with `webhook_secret`) and
  `X-OpenRouter-Idempotency-Key: <job id>-<status>`; unsigned when no secret is set, like a workspace without
  a signing secret;
- fal: `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp`, `-Signature` (hex ED25519 of
  `request_id\\nuser_id\\ntimestamp\\nsha256_hex(body)`) with a key made at start, published at
  `GET /.well-known/jwks.json` as fal publishes its own.

One attempt, no retries (the real ones retry a non-2xx for hours; a test wants one delivery it can count). Every
delivery is kept in `SimulatorState.deliveries` with its exact bytes and headers, so a test can replay it.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks import Webhook

from .settings import SimulatorSettings

TIMEOUT_S = 5.0
FAL_USER_ID = "sim-user-1"


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    status: int  # the receiver's answer; 0 when it could not be reached


class CallbackSender:
    """Sends each job's callback once it has ended; `payload()` builds the body then (None: nothing to send)."""

    def __init__(self, kind: str, settings: SimulatorSettings, deliveries: list[Delivery]) -> None:
        self.kind = kind
        self.settings = settings
        self.deliveries = deliveries
        self.fal_key = Ed25519PrivateKey.generate()
        self._tasks: set[asyncio.Task] = set()

    def jwks(self) -> dict[str, Any]:
        raw = self.fal_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "sim-1", "use": "sig", "alg": "EdDSA"}]}

    def after(self, url: str, ends_at: float, payload: Callable[[], tuple[dict[str, Any], str] | None]) -> None:
        """At `ends_at` (monotonic), POST `payload()` to `url`; the payload comes with the job's delivery id."""
        task = asyncio.get_running_loop().create_task(self._send_at(url, ends_at, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_at(self, url: str, ends_at: float,
                       payload: Callable[[], tuple[dict[str, Any], str] | None]) -> None:
        await asyncio.sleep(max(ends_at - time.monotonic(), 0.0) + 0.01)
        built = payload()
        if built is None:
            return
        document, delivery_id = built
        body = orjson.dumps(document)
        headers = {"content-type": "application/json", **self.sign(body, delivery_id)}
        status = 0
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:  # providers follow no redirects
                status = (await client.post(url, content=body, headers=headers)).status_code
        except httpx.HTTPError:
            pass
        self.deliveries.append(Delivery(url, headers, body, status))

    def sign(self, body: bytes, delivery_id: str, timestamp: int | None = None) -> dict[str, str]:
        now = int(time.time()) if timestamp is None else timestamp
        secret = self.settings.webhook_secret
        if self.kind == "fal":
            message = "\n".join((delivery_id, FAL_USER_ID, str(now), hashlib.sha256(body).hexdigest())).encode()
            return {"x-fal-webhook-request-id": delivery_id, "x-fal-webhook-user-id": FAL_USER_ID,
                    "x-fal-webhook-timestamp": str(now), "x-fal-webhook-signature": self.fal_key.sign(message).hex()}
        if self.kind == "openrouter":
            headers = {"x-openrouter-idempotency-key": delivery_id}
            if secret:
                digest = hmac.new(secret.encode(), f"{now},".encode() + body, hashlib.sha256).hexdigest()
                headers["x-openrouter-signature"] = f"t={now},v1={digest}"
            return headers
        if not secret:
            return {}
        message_id = "msg_" + secrets.token_hex(12)
        signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(now, tz=UTC), body.decode())
        return {"webhook-id": message_id, "webhook-timestamp": str(now), "webhook-signature": signature}
