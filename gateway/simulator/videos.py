"""The OpenAI Videos API dialect: /v1/videos and friends.

A job's status is a pure function of the time since it was created: queued for the first tenth of `duration_s`,
then in_progress with a rising progress, then completed at `duration_s`. Jobs whose prompt asks for a failure end
`failed` halfway through, as moderation rejections tend to arrive early. Jobs belong to the key that created
them: another key gets a 404, as another account would. So do characters (`/v1/videos/characters`): a create,
edit or extension naming a character of another key is a 400. Edits and extensions (`/v1/videos/edits`,
`/v1/videos/extensions`) start from a completed video of the same key (`{"id"}`) or an uploaded MP4.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .assets import Assets
from .behaviour import outcome_for
from .errors import APIError, invalid_type, invalid_value, json_response, missing_parameter, quoted_list
from .middleware import bearer_token
from .settings import SimulatorSettings
from .state import Character, Reference, SimulatorState, VideoJob

MODELS = ("sora-2", "sora-2-pro")
MODEL_SNAPSHOTS = ("sora-2-2025-10-06", "sora-2-pro-2025-10-06", "sora-2-2025-12-08")
SECONDS = ("4", "8", "12")
EXTENSION_SECONDS = ("4", "8", "12", "16", "20")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
VARIANTS = ("video", "thumbnail", "spritesheet")
REFERENCE_TYPES = ("image/jpeg", "image/png", "image/webp", "video/mp4")

QUEUED_SHARE = 0.1  # of duration_s spent queued
FAILURE_SHARE = 0.5  # of duration_s after which a failing job fails
EXPIRES_AFTER_S = 3600
MAX_PART_BYTES = 64 * 1024 * 1024  # data URLs arrive as plain form fields and can be large

FAILURES = {
    "refuse": {"code": "moderation_blocked", "message": "Your request was blocked by our moderation system."},
    "fail": {"code": "internal_error", "message": "Video generation failed."},
}

BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you "
    "have trouble figuring out how to fix this, please contact us through our help center at "
    "help.openai.com.)"
)


@dataclass(frozen=True, slots=True)
class Progress:
    status: str
    progress: int


def progress_of(job: VideoJob, now: float, duration_s: float) -> Progress:
    elapsed = now - job.started
    failing = job.outcome in FAILURES
    end = duration_s * (FAILURE_SHARE if failing else 1.0)
    if elapsed >= end:
        if failing:
            return Progress("failed", percent_done(end, duration_s))
        return Progress("completed", 100)
    if elapsed < QUEUED_SHARE * duration_s:
        return Progress("queued", 0)
    return Progress("in_progress", percent_done(elapsed, duration_s))


def percent_done(elapsed: float, duration_s: float) -> int:
    queued = QUEUED_SHARE * duration_s
    if duration_s <= queued:
        return 0
    return max(0, min(99, int(100 * (elapsed - queued) / (duration_s - queued))))


def video_object(job: VideoJob, progress: Progress, duration_s: float) -> dict[str, Any]:
    completed_at = expires_at = None
    if progress.status == "completed":
        completed_at = int(job.created_at + duration_s)
        expires_at = completed_at + EXPIRES_AFTER_S
    error = FAILURES[job.outcome] if progress.status == "failed" else None
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": progress.status,
        "progress": progress.progress,
        "created_at": int(job.created_at),
        "completed_at": completed_at,
        "expires_at": expires_at,
        "prompt": job.prompt,
        "seconds": job.seconds,
        "size": job.size,
        "remixed_from_video_id": job.remixed_from_video_id,
        "error": error,
        "quality": "standard",
    }


class VideosAPI:
    def __init__(self, state: SimulatorState, settings: SimulatorSettings, assets: Assets) -> None:
        self.state = state
        self.settings = settings
        self.assets = assets

    def routes(self) -> list[Route]:
        return [
            Route("/v1/videos/characters", self.create_character, methods=["POST"]),
            Route("/v1/videos/characters/{character_id}", self.get_character, methods=["GET"]),
            Route("/v1/videos/edits", self.edit, methods=["POST"]),
            Route("/v1/videos/extensions", self.extend, methods=["POST"]),
            Route("/v1/videos", self.create, methods=["POST"]),
            Route("/v1/videos", self.list_videos, methods=["GET"]),
            Route("/v1/videos/{video_id}", self.retrieve, methods=["GET"]),
            Route("/v1/videos/{video_id}", self.delete, methods=["DELETE"]),
            Route("/v1/videos/{video_id}/content", self.content, methods=["GET"]),
            Route("/v1/videos/{video_id}/remix", self.remix, methods=["POST"]),
        ]

    async def create(self, request: Request) -> Response:
        params = await read_params(request)
        prompt = parse_prompt(params)
        key = bearer_token(request.scope)
        job = self.start_job(
            key=key,
            model=parse_choice(params, "model", MODELS, extra=MODEL_SNAPSHOTS),
            prompt=prompt,
            seconds=parse_seconds(params),
            size=parse_choice(params, "size", SIZES),
            reference=await parse_reference(params.get("input_reference")),
            characters=self.parse_characters(params, key),
        )
        if self.state.answer_lost(key, prompt):
            raise APIError(502, "upstream connect error or disconnect/reset before headers")
        return self.render(job)

    async def create_character(self, request: Request) -> Response:
        params = await read_params(request)
        name = params.get("name")
        if name is None:
            raise missing_parameter("name")
        if not isinstance(name, str) or not name.strip():
            raise invalid_type("name", "a non-empty string", name)
        video = params.get("video")
        if not isinstance(video, UploadFile):
            raise missing_parameter("video")
        data = await video.read()
        mime = sniff(data) or video.content_type or "application/octet-stream"
        if mime != "video/mp4":
            raise APIError(400, f"Invalid file 'video': unsupported mimetype ('{mime}'). Supported file formats are"
                                " 'video/mp4'.", param="video", code="unsupported_file")
        character = Character(id="char_" + secrets.token_hex(24), key=bearer_token(request.scope), name=name,
                              created_at=time.time(), size=len(data))
        self.state.characters[character.id] = character
        return json_response(character_object(character))

    async def get_character(self, request: Request) -> Response:
        character_id = request.path_params["character_id"]
        character = self.state.characters.get(character_id)
        if character is None or character.key != bearer_token(request.scope):
            raise APIError(404, f"Character with id '{character_id}' not found.")
        return json_response(character_object(character))

    async def edit(self, request: Request) -> Response:
        params = await read_params(request)
        prompt = parse_prompt(params)
        key = bearer_token(request.scope)
        source, origin = await self.parse_source(params.get("video"), key)
        job = self.start_job(
            key=key, model=origin.model if origin else MODELS[0], prompt=prompt,
            seconds=origin.seconds if origin else SECONDS[0], size=origin.size if origin else SIZES[0],
            characters=self.parse_characters(params, key), source=source, operation="edit",
        )
        return self.render(job)

    async def extend(self, request: Request) -> Response:
        params = await read_params(request)
        prompt = parse_prompt(params)
        key = bearer_token(request.scope)
        seconds = parse_seconds(params, EXTENSION_SECONDS, required=True)
        source, origin = await self.parse_source(params.get("video"), key)
        total = int(seconds) + (int(origin.seconds) if origin else 0)  # an extension reports the stitched length
        job = self.start_job(
            key=key, model=origin.model if origin else MODELS[0], prompt=prompt, seconds=str(total),
            size=origin.size if origin else SIZES[0], characters=self.parse_characters(params, key),
            source=source, operation="extension",
        )
        return self.render(job)

    async def parse_source(self, value: Any, key: str) -> tuple[Reference, VideoJob | None]:
        """An edit's or extension's `video`: {"id"} of a completed video of this key, or an uploaded MP4."""
        if value is None:
            raise missing_parameter("video")
        if isinstance(value, UploadFile):
            data = await value.read()
            mime = sniff(data) or value.content_type or "application/octet-stream"
            if mime != "video/mp4":
                raise APIError(400, f"Invalid file 'video': unsupported mimetype ('{mime}'). Supported file formats"
                                    " are 'video/mp4'.", param="video", code="unsupported_file")
            return Reference("file", mime, len(data)), None
        video_id = value.get("id") if isinstance(value, dict) else None
        if not isinstance(video_id, str):
            raise APIError(400, "Invalid 'video': expected a file upload or an object with 'id'.", param="video")
        origin = self.state.videos.get(video_id)
        if origin is None or origin.key != key:
            raise APIError(404, f"Video with id '{video_id}' not found.", param="video")
        status = progress_of(origin, time.monotonic(), self.settings.duration_s).status
        if status != "completed":
            raise APIError(400, f"Video '{video_id}' is not completed: its status is '{status}'.", param="video")
        return Reference("video_id", value=video_id), origin

    def parse_characters(self, params: dict[str, Any], key: str) -> tuple[str, ...]:
        """`characters: [{"id"}]`; a character made with another key (another account) does not exist here."""
        value = params.get("characters")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise invalid_type("characters", "an array", value)
        ids = []
        for i, item in enumerate(value):
            character_id = item.get("id") if isinstance(item, dict) else None
            character = self.state.characters.get(character_id) if isinstance(character_id, str) else None
            if character is None or character.key != key:
                raise APIError(400, f"Invalid 'characters[{i}].id': character '{character_id}' not found.",
                               param=f"characters[{i}].id", code="invalid_value")
            ids.append(character_id)
        return tuple(ids)

    async def list_videos(self, request: Request) -> Response:
        query = request.query_params
        limit = parse_limit(query.get("limit"))
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid_value("order", order, ("asc", "desc"))
        key = bearer_token(request.scope)
        jobs = [job for job in self.state.videos.values() if job.key == key]
        if order == "desc":
            jobs.reverse()
        start = 0
        if after := query.get("after"):
            ids = [job.id for job in jobs]
            if after not in ids:
                raise APIError(400, f"Invalid 'after': no video with id '{after}'.", param="after")
            start = ids.index(after) + 1
        page = jobs[start : start + limit]
        now = time.monotonic()
        return json_response(
            {
                "object": "list",
                "data": [self.describe(job, now) for job in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": start + limit < len(jobs),
            }
        )

    async def retrieve(self, request: Request) -> Response:
        job = self.job_for(request)
        poll_after_ms = max(10, min(1000, int(self.settings.duration_s * 1000 / 20)))
        return self.render(job, headers={"openai-poll-after-ms": str(poll_after_ms)})

    async def delete(self, request: Request) -> Response:
        job = self.job_for(request)
        del self.state.videos[job.id]
        return json_response({"id": job.id, "object": "video.deleted", "deleted": True})

    async def content(self, request: Request) -> Response:
        job = self.job_for(request)
        variant = request.query_params.get("variant", "video")
        if variant not in VARIANTS:
            raise invalid_value("variant", variant, VARIANTS)
        status = progress_of(job, time.monotonic(), self.settings.duration_s).status
        if status != "completed":
            raise APIError(404, f"Video '{job.id}' is not ready: its status is '{status}'.")
        if variant in self.state.content_errors:
            raise APIError(self.state.content_errors[variant], f"The {variant} of video '{job.id}' is not available.")
        gate = self.state.content_gate
        if gate is not None and not gate.is_set():
            self.state.content_held += 1
            await asyncio.to_thread(gate.wait, 60)  # a test that forgets to open it still ends
        asset = self.assets.variant(variant)
        return Response(asset.data, media_type=asset.media_type)

    async def remix(self, request: Request) -> Response:
        source = self.job_for(request)
        params = await read_params(request)
        prompt = parse_prompt(params)
        status = progress_of(source, time.monotonic(), self.settings.duration_s).status
        if status != "completed":
            raise APIError(
                400, f"Video '{source.id}' cannot be remixed: its status is '{status}', not 'completed'."
            )
        job = self.start_job(
            key=source.key,
            model=source.model,
            prompt=prompt,
            seconds=source.seconds,
            size=source.size,
            remixed_from_video_id=source.id,
            characters=self.parse_characters(params, source.key),
        )
        return self.render(job)

    def start_job(
        self,
        *,
        key: str,
        model: str,
        prompt: str,
        seconds: str,
        size: str,
        reference: Reference | None = None,
        remixed_from_video_id: str | None = None,
        characters: tuple[str, ...] = (),
        source: Reference | None = None,
        operation: str = "create",
    ) -> VideoJob:
        outcome = outcome_for(prompt)
        job = VideoJob(
            id="video_" + secrets.token_hex(24),
            key=key,
            model=model,
            prompt=prompt,
            seconds=seconds,
            size=size,
            outcome="complete" if outcome == "error" else outcome,
            created_at=time.time(),
            started=time.monotonic(),
            remixed_from_video_id=remixed_from_video_id,
            reference=reference,
            characters=characters,
            source=source,
            operation="remix" if remixed_from_video_id else operation,
        )
        self.state.videos[job.id] = job
        return job

    def job_for(self, request: Request) -> VideoJob:
        video_id = request.path_params["video_id"]
        job = self.state.videos.get(video_id)
        if job is None or job.key != bearer_token(request.scope):
            raise APIError(404, f"Video with id '{video_id}' not found.")
        return job

    def describe(self, job: VideoJob, now: float) -> dict[str, Any]:
        return video_object(job, progress_of(job, now, self.settings.duration_s), self.settings.duration_s)

    def render(self, job: VideoJob, headers: dict[str, str] | None = None) -> Response:
        return json_response(self.describe(job, time.monotonic()), headers=headers)


async def read_params(request: Request) -> dict[str, Any]:
    """The body as a dict, whether JSON or a form. Form keys like `input_reference[image_url]` become dicts."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_part_size=MAX_PART_BYTES)
        params: dict[str, Any] = {}
        for name, value in form.multi_items():
            outer, bracket, inner = name.partition("[")
            if bracket and inner.startswith("]"):  # `characters[][id]`: one array item per field
                items = params.setdefault(outer, [])
                items.append({inner[2:-1]: value} if inner.startswith("][") and inner.endswith("]") else value)
            elif bracket and inner.endswith("]"):
                params.setdefault(outer, {})[inner[:-1]] = value
            else:
                params[name] = value
        return params
    body = await request.body()
    if not body.strip():
        return {}
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise APIError(400, BAD_JSON) from None
    if not isinstance(params, dict):
        raise APIError(
            400, f"Invalid type for request body: expected an object, but got {type(params).__name__}."
        )
    return params


def parse_prompt(params: dict[str, Any]) -> str:
    prompt = params.get("prompt")
    if prompt is None:
        raise missing_parameter("prompt")
    if not isinstance(prompt, str):
        raise invalid_type("prompt", "a string", prompt)
    if not prompt:
        raise APIError(
            400,
            "Invalid 'prompt': string too short. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param="prompt",
            code="string_below_min_length",
        )
    return prompt


def parse_choice(
    params: dict[str, Any], name: str, allowed: tuple[str, ...], extra: tuple[str, ...] = ()
) -> str:
    value = params.get(name)
    if value is None:
        return allowed[0]
    if not isinstance(value, str):
        raise invalid_type(name, "a string", value)
    if value not in allowed + extra:
        raise invalid_value(name, value, allowed)
    return value


def parse_seconds(params: dict[str, Any], allowed: tuple[str, ...] = SECONDS, required: bool = False) -> str:
    value = params.get("seconds")
    if value is None:
        if required:
            raise missing_parameter("seconds")
        return allowed[0]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise invalid_type("seconds", "a string", value)
    if value not in allowed:
        raise invalid_value("seconds", value, allowed)
    return value


def character_object(character: Character) -> dict[str, Any]:
    return {"id": character.id, "object": "character", "name": character.name,
            "created_at": int(character.created_at)}


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise APIError(
            400, f"Invalid 'limit': expected an integer, but got '{raw}' instead.", param="limit"
        ) from None
    if limit < 1:
        raise APIError(
            400,
            f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {limit} instead.",
            param="limit",
            code="integer_below_min_value",
        )
    if limit > 100:
        raise APIError(
            400,
            f"Invalid 'limit': integer above maximum value. Expected a value <= 100, but got {limit} instead.",
            param="limit",
            code="integer_above_max_value",
        )
    return limit


async def parse_reference(value: Any) -> Reference | None:
    if value is None:
        return None
    if isinstance(value, UploadFile):
        data = await value.read()
        mime = sniff(data) or value.content_type or "application/octet-stream"
        check_reference_type(mime)
        return Reference("file", mime, len(data))
    if not isinstance(value, dict):
        raise invalid_type("input_reference", "an object", value)
    if image_url := value.get("image_url"):
        return parse_image_url(image_url)
    if file_id := value.get("file_id"):
        if not isinstance(file_id, str):
            raise invalid_type("input_reference.file_id", "a string", file_id)
        return Reference("file_id", value=file_id)
    raise APIError(
        400,
        "Invalid 'input_reference': expected one of 'image_url' or 'file_id'.",
        param="input_reference",
    )


def parse_image_url(url: Any) -> Reference:
    param = "input_reference.image_url"
    if not isinstance(url, str):
        raise invalid_type(param, "a string", url)
    if url.startswith(("http://", "https://")):
        return Reference("image_url", value=url)
    header, comma, payload = url.partition(",")
    if not (url.startswith("data:") and comma and header.endswith(";base64")):
        raise APIError(400, f"Invalid '{param}': expected an http(s) URL or a base64 data URL.", param=param)
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise APIError(400, f"Invalid '{param}': the data URL is not valid base64.", param=param) from None
    mime = header[len("data:") : -len(";base64")]
    check_reference_type(mime)
    return Reference("image_url", mime, len(data), url[:64])


def check_reference_type(mime: str) -> None:
    if mime not in REFERENCE_TYPES:
        raise APIError(
            400,
            f"Invalid file 'input_reference': unsupported mimetype ('{mime}'). "
            f"Supported file formats are {quoted_list(REFERENCE_TYPES)}.",
            param="input_reference",
            code="unsupported_file",
        )


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return None
