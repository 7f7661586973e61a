"""GET /v1/usage: the caller's own team usage."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, authenticate, services
from gateway.core.ledger import check_group, parse_time, usage_report


async def team_usage(request: Request) -> Response:
    principal = await authenticate(request)
    q = request.query_params
    group = check_group(q.get("group_by"), ("day", "model", "key"))
    data, total = await usage_report(services(request).db, principal.team.name, parse_time(q.get("since"), "since"),
                                     parse_time(q.get("until"), "until", end=True), group)
    return JSONResponse({"object": "usage", "team": principal.team.name, "group_by": group, "data": data,
                         "total": total})
