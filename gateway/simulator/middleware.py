"""Authentication, fault injection and call recording, in front of both dialects."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .behaviour import profile_for
from .errors import APIError
from .settings import SimulatorSettings
from .state import Call, SimulatorState

# Served without a key and never faulted: relays hand out public CDN links, and the control routes are ours.
OPEN_PREFIXES = ("/files/", "/_sim/")

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're "
    "accessing the API from your browser and are prompted for a username and password. You can obtain an API "
    "key from https://platform.openai.com/account/api-keys."
)


class Wire:
    """How a dialect's clients send their key and see errors: OpenAI's ways, unless a provider fake says otherwise."""

    def key_of(self, scope: Scope) -> str:
        return bearer_token(scope)

    def missing_key(self) -> APIError:
        return APIError(401, MISSING_KEY)

    def is_open(self, path: str) -> bool:
        """Served without a key and never faulted."""
        return path.startswith(OPEN_PREFIXES)

    def respond(self, error: APIError) -> Response:
        return error.response()


class SimulatorMiddleware:
    def __init__(self, app: ASGIApp, state: SimulatorState, settings: SimulatorSettings,
                 wire: Wire | None = None) -> None:
        self.app = app
        self.state = state
        self.settings = settings
        self.wire = wire or Wire()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim/"):
            await self.app(scope, receive, send)
            return

        key = self.wire.key_of(scope)
        recorder = CallRecorder(self.state, scope["method"], scope["path"], key)

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-request-id", "req_" + secrets.token_hex(16))
                recorder.record(message["status"])
            await send(message)

        if self.settings.quote_key and key:
            send_recorded = KeyQuoter(send_recorded, key)
        try:
            await self.handle(scope, receive, send_recorded, key, recorder)
        except Exception:
            recorder.record(500)
            raise

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, key: str, recorder: CallRecorder
    ) -> None:
        if self.wire.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not key:
            await self.wire.respond(self.wire.missing_key())(scope, receive, send)
            return

        fault = profile_for(key, self.settings).fault
        if fault == "hang":
            recorder.record(0)
            await wait_for_disconnect(receive)
            return
        if fault == "slow" or (fault == "slowcreate" and scope["method"] == "POST"):
            await asyncio.sleep(self.settings.slow_s)
        error = self.injected_error(fault, key, scope["method"])
        if error is not None:
            await self.wire.respond(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def injected_error(self, fault: str, key: str, method: str) -> APIError | None:
        if fault == "429":
            return rate_limited(self.settings.retry_after_s)
        if fault == "401":
            return APIError(401, f"Incorrect API key provided: {mask(key)}.", code="invalid_api_key")
        if fault == "403":
            return APIError(
                403,
                "Country, region, or territory not supported",
                type="request_forbidden",
                code="unsupported_country_region_territory",
            )
        if fault == "500":
            return APIError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type="server_error",
                code="server_error",
            )
        if (fault == "flaky" or fault == "flakyread" and method == "GET") \
                and self.state.next_call_number(key) % 2 == 1:
            return APIError(502, "Bad gateway.", type="server_error", code="bad_gateway")
        return None


class KeyQuoter:
    """Wraps `send` so every error message and failed job in the response quotes the caller's key, in the forms
    relays have been seen to use (plain, as a bearer header, inside a URL)."""

    def __init__(self, send: Send, key: str) -> None:
        self.send = send
        self.quote = f" (key {key}; Authorization: Bearer {key}; see https://relay.example/keys?k={key})"
        self.start: Message | None = None
        self.json = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            self.json = content_type.startswith(b"application/json")
            if self.json:
                self.start = message  # held until the body is known: its length changes
                return
        elif message["type"] == "http.response.body":
            message = {**message, "body": self.rewrite(message.get("body", b""))}
            if self.start is not None:
                start, self.start = self.start, None
                headers = [(n, v) for n, v in start.get("headers", []) if n != b"content-length"]
                headers.append((b"content-length", str(len(message["body"])).encode()))
                await self.send({**start, "headers": headers})
        await self.send(message)

    def rewrite(self, body: bytes) -> bytes:
        if self.json:
            try:
                return orjson.dumps(self.quoted(orjson.loads(body))) if body else body
            except orjson.JSONDecodeError:
                return body
        lines = []
        for line in body.split(b"\n"):
            if line.startswith(b"data: {"):
                try:
                    line = b"data: " + orjson.dumps(self.quoted(orjson.loads(line[6:])))
                except orjson.JSONDecodeError:
                    pass
            lines.append(line)
        return b"\n".join(lines)

    def quoted(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.quoted(item) for item in value]
        if not isinstance(value, dict):
            return value
        out = {name: self.quoted(item) for name, item in value.items()}
        error = out.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            out["error"] = {**error, "message": error["message"] + self.quote}
        for field in ("content", "reasoning_content"):
            text = out.get(field)
            if isinstance(text, str) and ("❌" in text or "失败" in text):
                out[field] = text.rstrip("\n") + self.quote + "\n\n"
        return out


class CallRecorder:
    """Records one request exactly once, as soon as its status is known."""

    def __init__(self, state: SimulatorState, method: str, path: str, key: str) -> None:
        self.state = state
        self.method = method
        self.path = path
        self.key = key
        self.recorded = False

    def record(self, status: int) -> None:
        if not self.recorded:
            self.recorded = True
            self.state.record(Call(self.method, self.path, self.key, status))


def rate_limited(retry_after_s: float) -> APIError:
    message = (
        "Rate limit reached for sora-2 in organization org-simulator on requests per minute (RPM): "
        f"Limit 25, Used 25, Requested 1. Please try again in {retry_after_s:g}s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    headers = {
        "retry-after": f"{retry_after_s:g}",
        "retry-after-ms": str(int(retry_after_s * 1000)),
        "x-ratelimit-limit-requests": "25",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": f"{retry_after_s:g}s",
    }
    return APIError(429, message, type="requests", code="rate_limit_exceeded", headers=headers)


async def wait_for_disconnect(receive: Receive) -> None:
    """Never answer. Returns when the client goes away; cancellable, so the server can still shut down."""
    while (await receive())["type"] != "http.disconnect":
        pass


def bearer_token(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def mask(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]
