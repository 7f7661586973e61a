"""Characters of the caller's team (`client.videos.create_character`, `get_character`).

    POST   /v1/videos/characters        multipart `name` + `video` (an MP4), `video: {"id": "video_…"}` or
                                        `video_url` (a public http(s) URL of an MP4)
    GET    /v1/videos/characters        the team's characters, oldest first
    GET    /v1/videos/characters/{id}
    DELETE /v1/videos/characters/{id}

The answer is `{"id": "char_…", "object": "character", "name", "created_at"}`. Nothing is sent upstream here: a
character is made on an upstream account when a job that uses it runs there (`gateway.core.characters`).
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, authenticate, services
from gateway.api.videos import Upload, own_job, read_params
from gateway.core.characters import check_name, is_mp4
from gateway.core.images import ImageError, ImageLimits, load_public_bytes
from gateway.core.records import CharacterRecord
from gateway.core.store import read_whole
from gateway.errors import APIError, bad_request


def character_object(record: CharacterRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "character", "name": record.name, "created_at": int(record.created_at)}


async def create_character(request: Request) -> Response:
    gw = services(request)
    principal = await authenticate(request)
    params = await read_params(request, gw.config.server.max_body_bytes)
    name = check_name(params.get("name"))
    if params.get("video_url") is not None and params.get("video") is None:
        media, source, video_id = await _fetched_clip(gw, params["video_url"]), "url", None
    else:
        media, source, video_id = await _clip(request, params.get("video"), principal.team.name)
    record = await gw.videos.characters.create(principal.team.name, name, media, source, video_id)
    return JSONResponse(character_object(record))


async def _clip(request: Request, value: Any, team: str) -> tuple[bytes, str, str | None]:
    """The clip a character is made from: an uploaded MP4, or one of the team's completed videos."""
    if isinstance(value, Upload):
        if not is_mp4(value.data):
            raise bad_request("'video' must be an MP4 file showing the character.", param="video",
                              code="unsupported_file")
        return value.data, "upload", None
    video_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(video_id, str) or not video_id:
        raise bad_request("'video' is required: an uploaded MP4 showing the character, or {\"id\": \"video_…\"}"
                          " of one of your completed videos, or a 'video_url'.", param="video")
    record = await own_job(request, video_id, team)
    clip = await read_whole(services(request).store, record.id) if record.status == "completed" else None
    if clip is None:
        raise APIError(409, f"Video '{video_id}' is not ready: its status is {record.status}. A character can be"
                            " made from a completed video.", code="video_not_ready", param="video")
    return clip, "video", record.id


async def _fetched_clip(gw, url: Any) -> bytes:
    """`video_url`: an MP4 at a public http(s) URL, fetched under the image-URL rules (public addresses only,
    checked on every redirect, with size and time limits)."""
    if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
        raise bad_request("'video_url' must be an http(s) URL of an MP4 showing the character.", param="video_url")
    limits = ImageLimits(max_bytes=gw.config.server.max_body_bytes, timeout_s=gw.videos.image_limits.timeout_s)
    try:
        data = await load_public_bytes(url, limits)
    except TimeoutError:
        raise bad_request(f"video_url did not download within {limits.timeout_s:g} seconds; upload the file"
                          " instead.", param="video_url") from None
    except ImageError as exc:
        raise bad_request(str(exc).replace("image_url", "video_url").replace("image", "video"),
                          param="video_url") from None
    if not is_mp4(data):
        raise bad_request("video_url is not an MP4 file; link or upload an MP4 showing the character.",
                          param="video_url", code="unsupported_file")
    return data


async def list_characters(request: Request) -> Response:
    principal = await authenticate(request)
    records = await services(request).db.list_characters(principal.team.name)
    data = [character_object(r) for r in records]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": False})


async def get_character(request: Request) -> Response:
    principal = await authenticate(request)
    gw = services(request)
    record = await gw.videos.characters.own(principal.team.name, request.path_params["character_id"])
    return JSONResponse(character_object(record))


async def delete_character(request: Request) -> Response:
    principal = await authenticate(request)
    gw = services(request)
    record = await gw.videos.characters.own(principal.team.name, request.path_params["character_id"])
    await gw.db.delete_character(record.id)
    return JSONResponse({"id": record.id, "object": "character.deleted", "deleted": True})
