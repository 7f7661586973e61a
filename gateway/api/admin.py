"""/admin: operator views and actions, behind the admin key."""
from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, require_admin, services
from gateway.errors import APIError


async def list_upstreams(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    data = []
    for upstream in gw.config.upstreams:
        data.append({
            "name": upstream.name,
            "kind": upstream.kind,
            "base_url": upstream.base_url,
            "max_concurrent_per_key": upstream.max_concurrent_per_key,
            "keys": gw.pools[upstream.name].snapshot(),
        })
    return JSONResponse({"object": "list", "data": data})


async def enable_upstream_key(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    name, label = request.path_params["upstream"], request.path_params["label"]
    pool = gw.pools.get(name)
    if pool is None:
        raise APIError(404, f"No upstream named '{name}'.", code="not_found")
    if not pool.enable(label):
        raise APIError(404, f"Upstream '{name}' has no key labelled '{label}'; GET /admin/upstreams lists them.",
                       code="not_found")
    return JSONResponse({"upstream": name, "key": pool.get(label).public(time.monotonic())})
