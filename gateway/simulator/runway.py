"""A fake of Runway's API (PROVIDERS.md §5), under `/v1` like `api.dev.runwayml.com`.

- Every call needs `X-Runway-Version: 2024-11-06` besides the Bearer key (a 400 without it).
- `POST /v1/text_to_video` and `POST /v1/image_to_video` take strict bodies (a field of the other endpoint is a
  400 with `issues[]`), checked against the model's ratios and durations; the answer is `{"id"}`.
- `GET /v1/tasks/{id}`: `PENDING` on the first poll, `THROTTLED` (waiting for a concurrency slot) on the second
  and while queued, then `RUNNING` with
  `progress` as a fraction, then `SUCCEEDED` with signed `output[]` URLs (served without the key), or `FAILED`
  with `failure` and `failureCode`. `DELETE /v1/tasks/{id}` cancels.
- Errors: `{"error": "text"}`.

Prompts: `[refuse]` fails with `SAFETY.INPUT.TEXT`, `[fail]` with `INTERNAL.BAD_OUTPUT.CODE01`.
"""
from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from .behaviour import outcome_for
from .errors import APIError, json_response, retry_after
from .media import data_url_image, held
from .middleware import Wire, bearer_token
from .provider import ProviderFake
from .state import Reference
from .videos import percent_done, progress_of, read_params

VERSION = "2024-11-06"
_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_I2V_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
MODELS: dict[str, dict[str, Any]] = {
    "gen4.5": {"text": ("1280:720", "720:1280"), "image": _I2V_RATIOS, "duration": tuple(range(2, 11))},
    "gen4_turbo": {"text": None, "image": _I2V_RATIOS, "duration": (5, 10)},
    "veo3.1": {"text": _VEO_RATIOS, "image": _VEO_RATIOS, "duration": (4, 6, 8)},
    "veo3.1_fast": {"text": _VEO_RATIOS, "image": _VEO_RATIOS, "duration": (4, 6, 8)},
    "veo3": {"text": _VEO_RATIOS, "image": _VEO_RATIOS, "duration": (8,)},
}
TEXT_FIELDS = ("model", "promptText", "ratio", "duration", "seed", "audio", "negativePrompt", "contentModeration")
IMAGE_FIELDS = TEXT_FIELDS + ("promptImage",)
FAILURES = {"refuse": ("Your prompt was flagged by our content moderation system.", "SAFETY.INPUT.TEXT"),
            "fail": ("The output did not pass our quality checks.", "INTERNAL.BAD_OUTPUT.CODE01")}


@dataclass(slots=True)
class Task:
    id: str
    key: str
    model: str
    prompt: str
    outcome: str
    started: float
    created_at: float
    body: dict[str, Any]
    reference: Reference | None = None
    cancelled: bool = False
    polls: int = 0
    throttled_answers: int = 0  # how often a poll was told THROTTLED
    signature: str = ""


class RunwayWire(Wire):
    def key_of(self, scope: Scope) -> str:
        return bearer_token(scope)

    def missing_key(self) -> APIError:
        return APIError(401, "Authorization header is missing or invalid.")

    def respond(self, error: APIError) -> Response:
        headers = retry_after(error)
        body: dict[str, Any] = {"error": error.message}
        if isinstance(error, Invalid):
            body["issues"] = error.issues
        return json_response(body, error.status_code, headers)


class Invalid(APIError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(400, f"Validation of body failed: {message}")
        self.issues = [{"path": [path], "message": message}]


class RunwayAPI(ProviderFake):
    kind = "runway"
    wire_type = RunwayWire
    calls_back = False  # Runway publishes no webhooks

    def routes(self) -> list[Route]:
        return [
            Route("/v1/text_to_video", self.text_to_video, methods=["POST"]),
            Route("/v1/image_to_video", self.image_to_video, methods=["POST"]),
            Route("/v1/tasks/{task_id}", self.retrieve, methods=["GET"]),
            Route("/v1/tasks/{task_id}", self.delete, methods=["DELETE"]),
            Route("/files/runway/{task_id}.mp4", self.file, methods=["GET"]),
        ]

    async def text_to_video(self, request: Request) -> Response:
        return await self.create(request, image=False)

    async def image_to_video(self, request: Request) -> Response:
        return await self.create(request, image=True)

    async def create(self, request: Request, *, image: bool) -> Response:
        check_version(request)
        body = await read_params(request)
        for name in body:
            if name not in (IMAGE_FIELDS if image else TEXT_FIELDS):
                raise Invalid(name, f"Unrecognized key: '{name}'")
        model = body.get("model")
        caps = MODELS.get(model) if isinstance(model, str) else None
        if caps is None:
            raise Invalid("model", f"Invalid enum value. Expected {' | '.join(repr(m) for m in MODELS)}")
        ratios = caps["image" if image else "text"]
        if ratios is None:
            raise Invalid("model", f"{model} is not available for text_to_video; use image_to_video")
        if body.get("ratio") not in ratios:
            raise Invalid("ratio", f"Invalid enum value. Expected {' | '.join(repr(r) for r in ratios)}")
        duration = body.get("duration")
        if duration is not None and (isinstance(duration, bool) or duration not in caps["duration"]):
            raise Invalid("duration", f"Invalid duration. Expected one of {list(caps['duration'])}")
        prompt = body.get("promptText") if isinstance(body.get("promptText"), str) else ""
        if not image and not prompt:
            raise Invalid("promptText", "Required")
        reference = prompt_image(body.get("promptImage")) if image else None
        outcome = outcome_for(prompt)
        task = Task(id=str(uuid.uuid4()), key=bearer_token(request.scope), model=model, prompt=prompt,
                    outcome="complete" if outcome == "error" else outcome, started=time.monotonic(),
                    created_at=time.time(), body=body, reference=reference)
        self.state.provider_jobs[task.id] = task
        if self.state.answer_lost(task.key, task.prompt):
            raise APIError(502, "upstream connect error or disconnect/reset before headers")
        return json_response({"id": task.id})

    async def retrieve(self, request: Request) -> Response:
        check_version(request)
        return json_response(self.describe(self.task(request), request))

    async def delete(self, request: Request) -> Response:
        check_version(request)
        self.task(request).cancelled = True
        return Response(status_code=204)

    def describe(self, task: Task, request: Request) -> dict[str, Any]:
        out: dict[str, Any] = {"id": task.id, "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                                          time.gmtime(task.created_at))}
        if task.cancelled:
            return {**out, "status": "CANCELLED"}
        task.polls += 1
        now = time.monotonic()
        progress = progress_of(task, now, self.settings.duration_s)  # type: ignore[arg-type]
        # Every task waits for a concurrency slot once, whatever the clock says: PENDING, then THROTTLED.
        if task.polls == 1:
            return {**out, "status": "PENDING"}
        if task.polls == 2 or progress.status == "queued":
            task.throttled_answers += 1
            return {**out, "status": "THROTTLED"}
        if progress.status == "in_progress":
            fraction = percent_done(now - task.started, self.settings.duration_s) / 100
            return {**out, "status": "RUNNING", "progress": round(fraction, 3)}
        if progress.status == "failed":
            failure, code = FAILURES[task.outcome]
            return {**out, "status": "FAILED", "failure": failure, "failureCode": code}
        task.signature = task.signature or secrets.token_urlsafe(12)
        base = str(request.base_url).rstrip("/")
        return {**out, "status": "SUCCEEDED", "output": [f"{base}/files/runway/{task.id}.mp4?_jwt={task.signature}"]}

    async def file(self, request: Request) -> Response:
        task = self.state.provider_jobs.get(request.path_params["task_id"])
        if not isinstance(task, Task) or not task.signature or request.query_params.get("_jwt") != task.signature:
            return Response("Forbidden", 403, media_type="text/plain")
        await held(self.state)
        return Response(self.assets.video.data, media_type="video/mp4")

    def task(self, request: Request) -> Task:
        task = self.state.provider_jobs.get(request.path_params["task_id"])
        if not isinstance(task, Task) or task.key != bearer_token(request.scope):
            raise APIError(404, "Task not found.")
        return task


def check_version(request: Request) -> None:
    version = request.headers.get("x-runway-version")
    if version != VERSION:
        raise APIError(400, "You must provide a valid X-Runway-Version header; the current version is "
                            f"{VERSION}." if version is None else f"Unsupported API version: {version!r}.")


def prompt_image(value: Any) -> Reference:
    if not isinstance(value, str):
        raise Invalid("promptImage", "Required")
    if value.startswith("https://"):
        return Reference("image_url", value=value)
    image = data_url_image(value)
    if image is None or len(image[1]) > 5 * 1024 * 1024:
        raise Invalid("promptImage", "Invalid data URI: an image of at most 5 MB is expected")
    return Reference("promptImage", image[0], len(image[1]))
