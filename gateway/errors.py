"""Errors the HTTP edge raises with an explicit status. The core raises the kinds in `gateway.core.errors`."""
from __future__ import annotations

from collections.abc import Mapping

from gateway.core.errors import GatewayError, bad_request, not_found, shown

__all__ = ["APIError", "bad_request", "not_found", "shown"]


class APIError(GatewayError):
    """A failure with its HTTP status chosen where it is raised (routing, signatures, media ranges)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, headers=headers)
        self.status = status
        self.type = type
