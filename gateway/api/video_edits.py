"""Edits and extensions of a finished video, as the OpenAI Videos API takes them.

    POST /v1/videos/edits        {"prompt", "video": {"id": "video_…"} or an uploaded MP4}
    POST /v1/videos/extensions   {"prompt", "seconds": 4|8|12|16|20, "video": …}

Both are generations like any other (`VideoService.generate`, the one lifecycle): the same quotas, cache, ledger
and team rules. A source by id must be one of the team's completed videos; it keeps its model and size and runs
on the upstream key that made it. An extension is priced by its own seconds; its Video object reports the
stitched length, as OpenAI's does.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import authenticate, request_id, services
from gateway.api.videos import DEFAULT_MODEL, Upload, _generation_response, _prompt, _user, own_job, read_params
from gateway.core.cache import CacheControl
from gateway.core.characters import is_mp4
from gateway.core.records import JobRecord
from gateway.core.request import VideoRequest, check_characters, check_extension_seconds, resolve_model
from gateway.core.upstream import VideoInput
from gateway.errors import bad_request


async def edit_video(request: Request) -> Response:
    return await _from_source(request, "edit")


async def extend_video(request: Request) -> Response:
    return await _from_source(request, "extension")


async def _from_source(request: Request, operation: str) -> Response:
    gw = services(request)
    principal = await authenticate(request)
    params = await read_params(request, gw.config.server.max_body_bytes)
    prompt = _prompt(params, gw.config.server.max_prompt_chars)
    source, upload = await _source(request, params.get("video"), principal.team.name)
    model = resolve_model(gw.config.models, principal.team,
                          source.model if source else params.get("model") or DEFAULT_MODEL)
    request.state.model = model.name
    if operation == "extension":
        seconds = check_extension_seconds(params.get("seconds"))
    else:
        seconds = source.seconds if source else model.seconds
    video_request = VideoRequest(
        model=model, prompt=prompt, size=source.size if source else model.size, seconds=seconds,
        user=_user(params), operation=operation, source_id=source.id if source else None,
        characters=check_characters(params.get("characters")),
    )
    control = CacheControl.parse(request.headers.get("cache-control"))
    generation = await gw.videos.generate(principal, video_request, request_id(request), control, video=upload)
    request.state.cache, request.state.job = generation.cache, generation.record
    return await _generation_response(gw, generation)


async def _source(request: Request, value: Any, team: str) -> tuple[JobRecord | None, VideoInput | None]:
    """`video`: one of the team's videos by id (another team's is a 404), or an uploaded MP4."""
    if isinstance(value, Upload):
        if not is_mp4(value.data):
            raise bad_request("'video' must be an MP4 file; upload an MP4, or send {\"id\": \"video_…\"} of one of"
                              " your completed videos.", param="video", code="unsupported_file")
        return None, VideoInput(value.data)
    video_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(video_id, str) or not video_id:
        raise bad_request("'video' is required: {\"id\": \"video_…\"} of one of your completed videos, or an"
                          " uploaded MP4.", param="video")
    return await own_job(request, video_id, team), None
