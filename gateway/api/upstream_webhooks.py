"""`POST /upstream-webhooks/{upstream}`: where providers call back when a job of ours moves.

No team key: the provider's signature over the raw body is the only proof, checked before anything else is
read from the call. 204 for a verified call (a duplicate and one about a job this instance does not follow
included: a provider would only retry them), 401 in OpenAI's envelope for a signature that is bad, missing or
too old, 404 for an upstream that does not exist or has no webhooks configured.
"""
from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import read_body, services
from gateway.errors import APIError
from gateway.upstreams.callbacks import Forged, KeysUnavailable

log = logging.getLogger("gateway.http")


async def receive(request: Request) -> Response:
    gw = services(request)
    name = request.path_params["upstream"]
    upstream = gw.upstreams.get(name)
    callbacks = getattr(upstream, "callbacks", None)
    job_of = getattr(upstream, "callback_job", None)
    if callbacks is None or job_of is None:
        raise APIError(404, "No upstream with webhooks configured has this name.", code="not_found")
    body = bytes(await read_body(request, gw.config.server.max_body_bytes))
    try:
        outcome = await callbacks.receive(request.headers, body, job_of)
    except Forged as exc:
        log.warning("upstream webhook refused", extra={"upstream": name, "reason": str(exc)})
        raise APIError(401, "The webhook's signature is missing, invalid or outside the allowed time window.",
                       code="invalid_signature") from None
    except KeysUnavailable:
        raise APIError(503, "The provider's signing keys cannot be read right now; deliver the webhook again"
                            " later.", code="keys_unavailable", type="server_error",
                       headers={"retry-after": "30"}) from None
    log.info("upstream webhook", extra={"upstream": name, "outcome": outcome})
    return Response(status_code=204)
