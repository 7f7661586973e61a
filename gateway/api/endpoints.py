"""Routes whose endpoints are called with less wrapping than Starlette's own.

Starlette wraps every endpoint in two closures and a `send` wrapper per request, to learn whether the response
started before an exception was raised. Here the exception handlers the app registers (`exception_handlers=`)
apply to what the endpoint raises while it builds its response, exactly as they do in Starlette; a response
that fails once it is being sent fails as it would there, to the layers around the app.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class EndpointRoute(Route):
    def __init__(self, path: str, endpoint: Endpoint, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = _endpoint_app(endpoint)


def _endpoint_app(endpoint: Endpoint) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await _response(endpoint, scope, receive, send)
        await response(scope, receive, send)  # the Request is gone by now: a stream does not keep it open

    return app


async def _response(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> Response:
    request = Request(scope, receive, send)
    try:
        return await endpoint(request)
    except Exception as exc:
        handler = _handler(scope, exc)
        if handler is None:
            raise
        response = await handler(request, exc)
        exc.__traceback__ = None  # an exception instance may be raised again by a later request
        return response


def _handler(scope: Scope, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    handlers, status_handlers = scope.get("starlette.exception_handlers", ({}, {}))
    if isinstance(exc, HTTPException) and exc.status_code in status_handlers:
        return status_handlers[exc.status_code]
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None


class HotRoutes:
    """The few routes most requests take, found without walking the route table or passing Starlette's router
    and exception layers: the edge layer calls their endpoints directly.

    The route found is always the one the router would pick, the first that matches in full: a path a hot
    route matches goes to the router when a route listed before it matches that path and method too. What the
    endpoint raises is handled by the app's exception handlers, as `EndpointRoute` does behind the router.
    """

    def __init__(self, router: Router, hot: list[Route], handlers: Mapping[Any, Callable]) -> None:
        self.router = router
        handlers = {key: value for key, value in handlers.items() if key not in (500, Exception)}  # as Starlette
        statuses = {key: value for key, value in handlers.items() if isinstance(key, int)}
        kinds = {key: value for key, value in handlers.items() if not isinstance(key, int)}
        self.handlers = (kinds, statuses)
        self._by_method: dict[str, list[tuple[Route, frozenset[str], tuple[Route, ...]]]] = {}
        routes = list(router.routes)
        for route in hot:
            earlier = routes[:routes.index(route)]
            for method in route.methods or ():
                before = [r for r in earlier if isinstance(r, Route) and (not r.methods or method in r.methods)]
                literal = frozenset(r.path for r in before if not r.param_convertors)
                self._by_method.setdefault(method, []).append(
                    (route, literal, tuple(r for r in before if r.param_convertors)))
        if any(not isinstance(r, Route) for r in routes):
            self._by_method.clear()  # mounts and hosts match differently: leave every request to the router

    def find(self, scope: Scope) -> Route | None:
        """The hot route for this request with its path parameters put in `scope`, or None for the router."""
        candidates = self._by_method.get(scope["method"])
        if candidates is None or scope.get("root_path"):
            return None
        path = scope["path"]
        for route, literal, parameterised in candidates:
            match = route.path_regex.match(path)
            if match is None:
                continue
            if path in literal or any(r.path_regex.match(path) for r in parameterised):
                return None
            params = match.groupdict()
            for key, value in params.items():
                params[key] = route.param_convertors[key].convert(value)
            if "router" not in scope:
                scope["router"] = self.router
            scope["route"] = route
            scope["endpoint"] = route.endpoint
            scope["path_params"] = {**scope.get("path_params", {}), **params} if "path_params" in scope else params
            scope["starlette.exception_handlers"] = self.handlers
            return route
        return None
