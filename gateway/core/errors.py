"""The failures a client can cause or see, in the gateway's words and free of HTTP.

Core code raises these; `gateway.api.errors` holds the one table that turns each kind into a status, an OpenAI
error type and headers.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping


class GatewayError(Exception):
    """A failure the client should see. `headers` are extra response headers (rate-limit state, say)."""

    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def for_another_caller(self) -> GatewayError:
        """The same failure for another client that shared the work: a copy, so headers added for one caller
        never reach the other."""
        other = copy.copy(self)
        other.headers = {}
        return other


class InvalidRequest(GatewayError):
    """The request cannot be served as sent; the message says what to change."""


class Unauthenticated(GatewayError):
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    pass


class NotFound(GatewayError):
    default_code = "not_found"


class Conflict(GatewayError):
    pass


class TooLarge(GatewayError):
    default_code = "request_too_large"


class RateLimited(GatewayError):
    """A request-rate limit: retry after `retry_after` seconds."""

    default_code = "rate_limit_exceeded"


class QuotaExceeded(GatewayError):
    """A usage quota or budget is spent for now."""

    default_code = "quota_exceeded"


class ContentRefused(GatewayError):
    """The provider's content policy refused the prompt or the image."""

    default_code = "content_policy_violation"


class UpstreamRejected(GatewayError):
    """The upstream refused the request as invalid; sending it again unchanged will not help."""

    default_code = "invalid_request"


class UpstreamFailed(GatewayError):
    default_code = "upstream_error"


class UpstreamUnavailable(GatewayError):
    """Every upstream key for the model is busy, resting or disabled."""

    default_code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    default_code = "upstream_timeout"


class GatewayRestarting(GatewayError):
    default_code = "gateway_restarting"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def not_found(message: str, code: str = "not_found") -> NotFound:
    return NotFound(message, code=code)


def shown(value: object, limit: int = 40) -> str:
    """A client's value for an error message: short, on one line, never a repr of a whole structure."""
    if isinstance(value, str):
        text = value[:limit].encode("unicode_escape").decode("ascii")
        return f"'{text}…'" if len(value) > limit else f"'{text}'"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**limit else "a huge number"
    return "an array" if isinstance(value, (list, tuple)) else "an object"
