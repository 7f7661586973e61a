"""Routes whose endpoints are called with less wrapping than Starlette's own.

Starlette wraps every endpoint in two closures and a `send` wrapper per request, to learn whether the response
started before an exception was raised. Here the exception handlers the app registers (`exception_handlers=`)
apply to what the endpoint raises while it builds its response, exactly as they do in Starlette; a response
that fails once it is being sent fails as it would there, to the layers around the app.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class EndpointRoute(Route):
    def __init__(self, path: str, endpoint: Endpoint, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = _endpoint_app(endpoint)


def _endpoint_app(endpoint: Endpoint) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _handler(scope, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            exc.__traceback__ = None  # an exception instance may be raised again by a later request
        await response(scope, receive, send)

    return app


def _handler(scope: Scope, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    handlers, status_handlers = scope.get("starlette.exception_handlers", ({}, {}))
    if isinstance(exc, HTTPException) and exc.status_code in status_handlers:
        return status_handlers[exc.status_code]
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None
