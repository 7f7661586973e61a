"""GET /v1/models: the aliases the caller's team may use."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, authenticate, services
from gateway.core.request import reject_unknown_model


def _model(alias: str, created: int) -> dict:
    return {"id": alias, "object": "model", "created": created, "owned_by": "sora-gateway"}


async def list_models(request: Request) -> Response:
    principal = await authenticate(request)
    gw = services(request)
    data = [_model(alias, gw.started) for alias in gw.config.models if principal.team.may_use(alias)]
    return JSONResponse({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    principal = await authenticate(request)
    gw = services(request)
    alias = request.path_params["model_id"]
    if alias not in gw.config.models or not principal.team.may_use(alias):
        raise reject_unknown_model(alias)
    return JSONResponse(_model(alias, gw.started))
