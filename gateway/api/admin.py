"""/admin: operator views and actions, behind the admin key."""
from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.api.common import JSONResponse, read_json, require_admin, services
from gateway.config import ConfigError
from gateway.core import ledger
from gateway.core.keys import create_key, key_view, parse_duration
from gateway.core.ledger import check_group, csv_lines, parse_time
from gateway.errors import APIError, bad_request


async def list_upstreams(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    data = []
    for upstream in gw.config.upstreams:
        data.append({
            "name": upstream.name,
            "kind": upstream.kind,
            "base_url": gw.redactor(upstream.base_url),  # a key or password may sit in the URL
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
    if not await pool.enable(label):
        raise APIError(404, f"Upstream '{name}' has no key labelled '{label}'; GET /admin/upstreams lists them.",
                       code="not_found")
    return JSONResponse({"upstream": name, "key": pool.get(label).public(time.monotonic())})


async def create_team_key(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    team = request.path_params["team"]
    if gw.config.team(team) is None:
        raise APIError(404, f"No team named '{team}' in the gateway config.", code="not_found")
    body = await read_json(request, 65536, empty={})
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object like {\"name\": \"ci\", \"expires\": \"30d\"}.")
    name = body.get("name") or "unnamed"
    expires = body.get("expires")
    if not isinstance(name, str) or (expires is not None and not isinstance(expires, str)):
        raise bad_request("'name' and 'expires' must be strings, e.g. {\"name\": \"ci\", \"expires\": \"30d\"}.")
    key, record = await create_key(gw.db, team, name, parse_duration(expires) if expires else None)
    return JSONResponse({**key_view(record), "key": key}, status_code=201)


async def list_keys(request: Request) -> Response:
    require_admin(request)
    records = await services(request).db.list_keys(request.query_params.get("team"))
    return JSONResponse({"object": "list", "data": [key_view(r) for r in records]})


async def revoke_key(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    key_id = request.path_params["key_id"]
    if not await gw.db.revoke_key(key_id):
        raise APIError(404, f"No active key with id '{key_id}'; GET /admin/keys lists them.", code="not_found")
    gw.auth.forget()
    return JSONResponse({"id": key_id, "object": "api_key.revoked", "revoked": True})


async def list_teams(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    data = []
    for team in gw.config.teams:
        data.append({"name": team.name, "models": list(team.models) or list(gw.config.models),
                     "quotas": {k: getattr(team.quotas, k) for k in team.quotas.__slots__},
                     "usage": await gw.quotas.usage(team.name)})
    return JSONResponse({"object": "list", "data": data})


async def usage_report(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    q = request.query_params
    team = q.get("team") or None
    group = check_group(q.get("group_by"), default="day" if team else "team")
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise bad_request(f"Invalid value for 'format': {fmt!r}. Supported values are: 'json', 'csv'.", param="format")
    data, total = await ledger.usage_report(gw.db, team, parse_time(q.get("since"), "since"),
                                            parse_time(q.get("until"), "until", end=True), group, per_team=True)
    if fmt == "csv":
        return StreamingResponse(csv_lines(data, group, per_team=True), media_type="text/csv",
                                 headers={"content-disposition": 'attachment; filename="usage.csv"'})
    return JSONResponse({"object": "usage", "team": team, "group_by": group, "data": data, "total": total})


async def store_usage(request: Request) -> Response:
    require_admin(request)
    gw = services(request)
    where = {"videos": gw.store.location, "serve": gw.config.storage.serve}
    if gw.config.storage.local_videos_dir is not None:
        where["videos_dir"] = str(gw.store.root)
    return JSONResponse({**where, "bytes": await gw.store.usage_bytes(),
                         "cache": {"enabled": gw.config.cache.enabled, "ttl_s": gw.config.cache.ttl_s,
                                   "scope": gw.config.cache.scope}})


async def reload_config(request: Request) -> Response:
    """Re-read the config file; a bad one is rejected and the running config stays in force."""
    require_admin(request)
    gw = services(request)
    try:
        changes = await gw.reload_from_file()
    except ConfigError as exc:
        raise APIError(400, "The config file is invalid, so the running config stays in force: "
                       + "; ".join(exc.problems), code="invalid_config") from None
    return JSONResponse({"reloaded": True, "source": gw.config.source, "changes": changes})


async def webhook_deliveries(request: Request) -> Response:
    """GET /admin/webhooks: counts by state, and every undelivered event with its attempts and last error."""
    require_admin(request)
    return JSONResponse(await services(request).webhooks.pending())
