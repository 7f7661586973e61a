"""The OpenAI Videos API, served for the gateway's own jobs."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from gateway.api.common import JSONResponse, authenticate, services
from gateway.api.shapes import video_object
from gateway.backends.records import JobRecord
from gateway.backends.store import MEDIA_TYPES
from gateway.core.jobs import JobHandle
from gateway.errors import APIError, bad_request


def _not_found(video_id: str) -> APIError:
    return APIError(404, f"Video with id '{video_id}' not found.", code="not_found", param="video_id")


async def own_job(request: Request, video_id: str, team: str) -> JobRecord:
    found = await services(request).jobs.find(video_id)
    record = found.record if isinstance(found, JobHandle) else found
    if record is None or record.team != team or record.deleted:
        raise _not_found(video_id)
    return record


async def retrieve_video(request: Request) -> Response:
    principal = await authenticate(request)
    gw = services(request)
    record = await own_job(request, request.path_params["video_id"], principal.team.name)
    headers = {} if record.status in ("completed", "failed") else {"openai-poll-after-ms": "1000"}
    return JSONResponse(video_object(record, gw.signer.expiry()), headers=headers)


async def video_content(request: Request) -> Response:
    gw = services(request)
    video_id = request.path_params["video_id"]
    variant = request.query_params.get("variant", "video")
    if variant not in MEDIA_TYPES:
        raise bad_request(f"Invalid value for 'variant': {variant!r}. Supported values are: 'video', 'thumbnail'"
                          f" and 'spritesheet'.", param="variant")
    sig, exp = request.query_params.get("sig"), request.query_params.get("exp")
    if sig is not None or exp is not None:
        problem = gw.signer.verify(video_id, variant, exp or "", sig or "")
        if problem is not None:
            raise APIError(403, f"This video link is not valid: {problem}.", code="invalid_signature")
        found = await gw.jobs.find(video_id)
        record = found.record if isinstance(found, JobHandle) else found
        if record is None or record.deleted:
            raise _not_found(video_id)
    else:
        principal = await authenticate(request)
        record = await own_job(request, video_id, principal.team.name)
    if record.status != "completed":
        raise APIError(409, f"Video '{video_id}' is not ready: its status is {record.status}. Retrieve it until"
                            " the status is 'completed'.", code="video_not_ready")
    path = gw.store.path(video_id, variant)
    if not path.is_file():
        raise APIError(404, f"Video '{video_id}' has no {variant} content.", code="not_found", param="variant")
    return FileResponse(path, media_type=MEDIA_TYPES[variant], content_disposition_type="inline",
                        headers={"cache-control": "private, max-age=3600"})
