"""The OpenAI Videos API, served for the gateway's own jobs.

    POST   /v1/videos                       create (JSON or multipart; `input_reference` as a file or {image_url})
    GET    /v1/videos                       list the team's videos (cursor paging: after, limit, order)
    GET    /v1/videos/{id}                  retrieve, with `openai-poll-after-ms` while the job runs
    DELETE /v1/videos/{id}                  delete the stored files and hide the video
    GET    /v1/videos/{id}/content          the stored file (?variant=video|thumbnail|spritesheet)
    GET    /v1/videos/{id}/content/{exp}.{sig}.mp4   the video through a signed link
    POST   /v1/videos/{id}/remix            a new video from a completed one and a new prompt

Edits, extensions and characters live in `gateway.api.video_edits` and `gateway.api.characters`.

Every generation goes through `VideoService.generate`, exactly as chat completions do: the same keys, quotas,
cache, ledger and upstream rotation. Ids are the gateway's own, so a video made through chat is visible here
and the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import content
from gateway.api.common import JSONResponse, authenticate, bounded_stream, read_json, request_id, services
from gateway.api.inputs import control_character
from gateway.api.shapes import public_status, video_object
from gateway.core.cache import CacheControl
from gateway.core.images import ImageError, load_image, sniff_mime
from gateway.core.records import JobRecord
from gateway.core.request import VideoRequest, check_characters, check_prompt, check_seconds, check_size, resolve_model
from gateway.core.service import Generation
from gateway.core.signing import parse_link_token
from gateway.core.store import MEDIA_TYPES
from gateway.core.upstream import ImageInput
from gateway.core.webhooks import check_request_url
from gateway.errors import APIError, bad_request

DEFAULT_MODEL = "sora-2"  # what OpenAI uses when a create names no model
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 100
POLL_AFTER_DEFAULT_MS = 1000
POLL_AFTER_BOUNDS_MS = (250, 5000)
_MAX_FORM_FILES, _MAX_FORM_FIELDS = 4, 64


def _not_found(video_id: str) -> APIError:
    return APIError(404, f"Video with id '{video_id}' not found.", code="not_found", param="video_id")


async def own_job(request: Request, video_id: str, team: str, *, served: bool = True) -> JobRecord:
    """The job `video_id` of `team`; another team's, a deleted or an unknown id is the same 404.

    With a global cache a team is also handed other teams' videos (a hit or a join): with `served`, those
    count as its own for reading. For a running job this is the live record its poller updates.
    """
    gw = services(request)
    record = await gw.live.find(video_id)
    if record is None or record.deleted:
        raise _not_found(video_id)
    if record.team != team and not (served and await gw.db.served_to(video_id, team)):
        raise _not_found(video_id)
    return record


# -- create -------------------------------------------------------------------------------------------------


async def create_video(request: Request) -> Response:
    """POST /v1/videos: start a job and answer at once with its Video object (a cache hit is already completed)."""
    gw = services(request)
    principal = await authenticate(request)
    params = await read_params(request, gw.config.server.max_body_bytes)
    prompt = _prompt(params, gw.config.server.max_prompt_chars)
    model = resolve_model(gw.config.models, principal.team, params.get("model") or DEFAULT_MODEL)
    request.state.model = model.name
    video_request = VideoRequest(
        model=model,
        prompt=prompt,
        size=check_size(params.get("size"), model),
        seconds=check_seconds(params.get("seconds"), model),
        user=_user(params),
        webhook_url=await _webhook_url(gw, principal, params),
        characters=check_characters(params.get("characters")),
    )
    image = await _input_reference(gw, params.get("input_reference"))
    control = CacheControl.parse(request.headers.get("cache-control"))
    generation = await gw.videos.generate(principal, video_request, request_id(request), control, image=image)
    request.state.cache, request.state.job = generation.cache, generation.record
    return await _generation_response(gw, generation)


async def _generation_response(gw, generation: Generation) -> Response:
    await generation.accepted()  # an upstream that refuses the job is this request's HTTP error
    return JSONResponse(video_object(generation.record, gw.signer.expiry()),
                        headers={"x-cache": generation.cache, **generation.headers})


def _prompt(params: dict[str, Any], limit: int) -> str:
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_request("'prompt' is required: a non-empty string describing the video.", param="prompt")
    return check_prompt(prompt, limit, "prompt")


async def _webhook_url(gw, principal, params: dict[str, Any]) -> str | None:
    url = params.get("webhook_url")
    return None if url is None or url == "" else await check_request_url(url, principal.team, gw.webhooks.resolver)


def _user(params: dict[str, Any]) -> str | None:
    user = params.get("user")
    return user if isinstance(user, str) and user else None


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart body, read into memory (its size is bounded by `max_body_bytes`)."""

    filename: str | None
    content_type: str | None
    data: bytes = field(repr=False)


async def _input_reference(gw, value: Any) -> ImageInput | None:
    if value is None or value == "":
        return None
    limits = gw.videos.image_limits
    if isinstance(value, Upload):
        if len(value.data) > limits.max_bytes:
            raise bad_request(f"input_reference is larger than {limits.max_bytes} bytes; upload a smaller image.",
                              param="input_reference")
        mime = sniff_mime(value.data)
        if mime is None:
            raise bad_request("input_reference is not a JPEG, PNG or WebP image; upload one of those formats.",
                              param="input_reference", code="unsupported_file")
        return ImageInput(data=value.data, mime=mime)
    if isinstance(value, dict):
        url = value.get("image_url")
        if url is None and value.get("file_id") is not None:
            raise bad_request("input_reference.file_id is not supported by this gateway; upload the image as"
                              " input_reference or send input_reference.image_url.", param="input_reference.file_id")
        if not isinstance(url, str) or not url:
            raise bad_request("input_reference.image_url must be an https URL or a data: URI of a JPEG, PNG or"
                              " WebP image.", param="input_reference.image_url")
        try:
            return await load_image(url, limits)
        except ImageError as exc:
            raise bad_request(str(exc), param="input_reference.image_url") from None
    raise bad_request("input_reference must be an uploaded image file or an object with 'image_url' (an https URL"
                      " or a data: URI).", param="input_reference")


async def read_params(request: Request, limit: int) -> dict[str, Any]:
    """The body as a dict, from JSON, multipart or a urlencoded form, never reading more than `limit` bytes.

    Form keys in bracket notation (`input_reference[image_url]`, as the OpenAI SDKs send them) become nested
    dicts; file parts become `Upload`s.
    """
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        parser: MultiPartParser | FormParser = MultiPartParser(
            request.headers, bounded_stream(request, limit), max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS,
            max_part_size=limit)
    elif content_type == "application/x-www-form-urlencoded":
        parser = FormParser(request.headers, bounded_stream(request, limit), max_fields=_MAX_FORM_FIELDS,
                            max_part_size=limit)
    else:
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        return body
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"We could not parse the form body of your request: {exc.message}") from None
    params: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                value = Upload(value.filename, value.content_type, await value.read())
            elif (problem := control_character(name, name) or control_character(name, value)) is not None:
                raise problem
            outer, bracket, inner = name.partition("[")
            if bracket and inner.startswith("][") and inner.endswith("]") and "[" not in inner[2:]:
                items = params.get(outer)  # `characters[][id]`, as the SDKs write an array of objects
                if not isinstance(items, list):
                    items = params[outer] = []
                items.append({inner[2:-1]: value})
            elif bracket and inner.endswith("]") and "[" not in inner:
                nested = params.get(outer)
                if not isinstance(nested, dict):
                    nested = params[outer] = {}
                nested[inner[:-1]] = value
            else:
                params[name] = value
    finally:
        await form.close()
    return params


# -- list, retrieve, delete ------------------------------------------------------------------------------


async def list_videos(request: Request) -> Response:
    """GET /v1/videos: the caller's team's videos, newest first unless `order=asc`, in OpenAI's list shape."""
    principal = await authenticate(request)
    gw = services(request)
    team = principal.team.name
    query = request.query_params
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid value for 'order': {order!r}. Supported values are: 'asc' and 'desc'.",
                          param="order")
    after = query.get("after") or None
    if after is not None:
        anchor = await gw.db.get_job(after)
        if anchor is None or anchor.team != team:
            raise bad_request(f"Invalid value for 'after': no video with id {after!r} in your list. Pass the"
                              " last_id of the previous page.", param="after")
    records, has_more = await gw.db.list_jobs(team, after=after, limit=limit, order=order)
    expires = gw.signer.expiry()
    data = [video_object(_live(gw, record), expires) for record in records]
    return JSONResponse({
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    })


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return LIST_LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise bad_request(f"Invalid value for 'limit': {raw!r}. Expected an integer from 1 to {LIST_LIMIT_MAX}.",
                          param="limit")
    return limit


def _live(gw, record: JobRecord) -> JobRecord:
    """The poller's up-to-date record for a running job (the database only holds coarse progress)."""
    handle = gw.live.live(record.id)
    return handle.record if handle is not None else record


async def retrieve_video(request: Request) -> Response:
    principal = await authenticate(request)
    gw = services(request)
    record = await own_job(request, request.path_params["video_id"], principal.team.name)
    expires = gw.signer.expiry()
    if record.status in ("completed", "failed"):  # a finished video is polled as it was: encoded once a second
        return Response(gw.live.encoded(record, expires, lambda r: orjson.dumps(video_object(r, expires))),
                        media_type="application/json")
    headers = {"openai-poll-after-ms": str(poll_after_ms(gw, record))}
    return JSONResponse(video_object(record, expires), headers=headers)


def poll_after_ms(gw, record: JobRecord) -> int:
    """How long a poller should wait before asking again: the pace at which the gateway itself learns news.

    A Videos-dialect job changes only when its upstream is polled, so polling the gateway faster than that
    returns the same answer; chat relays push progress as it happens, for which the SDK's default is right.
    """
    upstream = gw.upstream_config(record.upstream)
    if upstream is None or upstream.kind != "videos":
        return POLL_AFTER_DEFAULT_MS
    low, high = POLL_AFTER_BOUNDS_MS
    return int(min(max(upstream.poll_interval_s * 1000, low), high))


async def delete_video(request: Request) -> Response:
    """DELETE /v1/videos/{id}: remove the stored files and hide the video from every endpoint and the cache.

    A video still being generated can be deleted too: it disappears at once, but its job runs to the end,
    since the upstream cannot be told to stop. It keeps counting against the team's concurrent jobs until
    then, its ledger row is closed as usual (the upstream charges for it), and whatever it produces is
    discarded instead of stored (see `Lifecycle._store`). The row stays in the database for the ledger.
    """
    principal = await authenticate(request)
    gw = services(request)
    video_id = request.path_params["video_id"]
    record = await own_job(request, video_id, principal.team.name, served=False)
    await gw.db.update_job(video_id, deleted=True)
    record.deleted = True  # for a running job, the live record: its poller discards the result
    await gw.store.delete(video_id)
    await gw.videos.forget(record)
    return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})


# -- content ----------------------------------------------------------------------------------------------


async def video_content(request: Request) -> Response:
    variant = request.query_params.get("variant", "video")
    if variant not in MEDIA_TYPES:
        raise bad_request(f"Invalid value for 'variant': {variant!r}. Supported values are: 'video', 'thumbnail'"
                          f" and 'spritesheet'.", param="variant")
    sig, exp = request.query_params.get("sig"), request.query_params.get("exp")
    signed = (exp or "", sig or "") if sig is not None or exp is not None else None
    return await _content(request, variant, signed)


async def signed_video_content(request: Request) -> Response:
    """GET /v1/videos/{id}/content/{exp}.{sig}.mp4: the same file, with the signature in the path."""
    signed = parse_link_token(request.path_params["token"])
    if signed is None:
        raise APIError(404, "This is not a video link: the last part of the path must be {exp}.{sig}.mp4 as the"
                            " gateway hands it out.", code="not_found")
    return await _content(request, "video", signed)


async def _content(request: Request, variant: str, signed: tuple[str, str] | None) -> Response:
    gw = services(request)
    video_id = request.path_params["video_id"]
    record = await _content_record(request, video_id, variant, signed)
    if record.status != "completed":
        raise APIError(409, f"Video '{video_id}' is not ready: its status is {record.status}. Retrieve it until"
                            " the status is 'completed'.", code="video_not_ready")
    meta = await gw.store.stat(video_id, variant)
    if meta is None and variant != "video" and await gw.lifecycle.fetch_preview(record, variant):
        meta = await gw.store.stat(video_id, variant)
    if meta is None:
        raise APIError(404, f"Video '{video_id}' has no {variant} content: the upstream that made it did not"
                            f" provide one.", code="not_found", param="variant")
    storage = gw.config.storage
    if storage.serve == "redirect":
        return await content.redirect(gw.store, video_id, variant, storage.redirect_ttl_s)
    return await content.serve(request, gw.store, video_id, variant, meta)


async def _content_record(request: Request, video_id: str, variant: str,
                          signed: tuple[str, str] | None) -> JobRecord:
    """The job behind a content request: a valid signed link, or the owning team's key.

    A link whose signature has expired still works for a request that carries the owning team's key, so a
    program holding an old chat history can fetch its videos again without asking for new links.
    """
    gw = services(request)
    if signed is not None:
        problem = gw.signer.verify(video_id, variant, *signed)
        if problem is None:
            record = await gw.live.find(video_id)
            if record is None or record.deleted:
                raise _not_found(video_id)
            return record
        if "authorization" not in request.headers:
            raise APIError(403, f"This video link is not valid: {problem}.", code="invalid_signature")
    principal = await authenticate(request)
    return await own_job(request, video_id, principal.team.name)


# -- remix ------------------------------------------------------------------------------------------------


async def remix_video(request: Request) -> Response:
    """POST /v1/videos/{id}/remix: a new video from one of the team's completed videos and a new prompt.

    It takes the same path as a conversational remix in chat completions (`VideoRequest.remix_of`), so the
    job goes to the upstream key that made the source, keeps its model, size and duration, and is priced,
    cached and accounted like any other generation.
    """
    gw = services(request)
    principal = await authenticate(request)
    source = await own_job(request, request.path_params["video_id"], principal.team.name)
    params = await read_params(request, gw.config.server.max_body_bytes)
    prompt = _prompt(params, gw.config.server.max_prompt_chars)
    _check_remixable(gw, source)
    model = gw.config.models.get(source.model)
    request.state.model = source.model
    if model is None:
        raise bad_request(f"Video '{source.id}' cannot be remixed: its model '{source.model}' is no longer offered"
                          " by this gateway.", param="video_id", code="video_not_remixable")
    if not principal.team.may_use(source.model):
        raise APIError(403, f"Your team may not use the model '{source.model}' of this video. Ask your platform"
                            " team to allow it.", code="model_not_allowed", param="video_id")
    video_request = VideoRequest(model=model, prompt=prompt, size=source.size, seconds=source.seconds,
                                 remix_of=source.id, user=_user(params),
                                 webhook_url=await _webhook_url(gw, principal, params),
                                 characters=check_characters(params.get("characters")))
    control = CacheControl.parse(request.headers.get("cache-control"))
    generation = await gw.videos.generate(principal, video_request, request_id(request), control)
    request.state.cache, request.state.job = generation.cache, generation.record
    return await _generation_response(gw, generation)


def _check_remixable(gw, source: JobRecord) -> None:
    """Refuse clearly what `VideoService` would otherwise quietly turn into a fresh video."""
    if source.status != "completed":
        raise bad_request(f"Video '{source.id}' cannot be remixed: its status is '{public_status(source)}'; only"
                          " completed videos can be remixed.", param="video_id", code="video_not_remixable")
    upstream = gw.upstream_config(source.upstream)
    if upstream is None or upstream.kind != "videos":
        raise bad_request(f"Video '{source.id}' cannot be remixed: the upstream that made it does not support"
                          " remixing. Create a new video instead.", param="video_id", code="video_not_remixable")
