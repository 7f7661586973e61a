"""GET /dashboard: a usage page the gateway serves itself, and the JSON it reads.

    GET /dashboard                  the page (HTML, CSS and JS from the package; no CDN)
    GET /dashboard/{asset}          its script and style sheet
    GET /dashboard/api/summary      usage by day, running jobs, recent failures (admin key: every team)

An admin's page also reads GET /admin/upstreams and GET /admin/teams. The key is kept in the page's session
storage and sent as a bearer header; it never goes into a URL or a cookie.
"""
from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, authenticate, services
from gateway.core.dashboard import summary
from gateway.errors import APIError

_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
# The page loads only its own files and talks only to this gateway.
_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
                               " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("gateway.dashboard").joinpath(name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_asset("index.html"), media_type="text/html", headers=_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in _ASSETS:
        raise APIError(404, f"The dashboard has no file named '{name}'.", code="not_found")
    return Response(_asset(name), media_type=_ASSETS[name], headers=_HEADERS)


async def summary_data(request: Request) -> Response:
    gw = services(request)
    if gw.auth.is_admin(request.headers.get("authorization")):
        team = None
    else:
        team = (await authenticate(request)).team.name
    return JSONResponse(await summary(gw.db, gw.live, team))
