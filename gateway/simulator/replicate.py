"""A fake of Replicate's predictions API (PROVIDERS.md §4), under `/v1` like the real one.

- `POST /v1/models/{owner}/{name}/predictions` (official models) or `POST /v1/predictions` with `version`, Bearer,
  `{"input": {...}}` checked against the model's input schema (a misnamed input — `image` where the model wants
  `start_image` — is a 422 with `invalid_fields`, like Replicate's).
- The prediction object on create (201), poll (`GET /v1/predictions/{id}`) and list (`GET /v1/predictions`):
  `starting` → `processing` (with `logs`: the model's tqdm bar, a line per update, " 42%|████▏     | 21/50
  [00:08<00:11,  2.51it/s]") → `succeeded` with `output` a URL string, or `failed` with `error`;
  `POST /v1/predictions/{id}/cancel` cancels.
- Outputs are deleted an hour after the prediction ends (`data_removed: true`, `output: null`, the file 404).
- Errors: `{"title", "detail", "status"}`; a 429 says when the limit resets and carries Retry-After.
- `webhook` (+ `webhook_events_filter`): the prediction object is POSTed there when it ends, signed the Standard
  Webhooks way with the simulator's `webhook_secret` (see `callbacks`).

Prompts: `[refuse]` fails with Replicate's NSFW error, `[fail]` with a plain one, and `[lost]` creates the
prediction but answers its key's first such create with a 502, as a proxy that lost the answer would, and
`[flakypoll]` answers every other poll of the prediction with a 503. (The `sk-flaky-…` keys fail every other
call of any kind, which here includes the list read after a failed create: they would fail every create.)
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .behaviour import outcome_for
from .errors import APIError, json_response, retry_after
from .media import data_url_image, held
from .middleware import Wire, bearer_token
from .provider import ProviderFake
from .state import Reference
from .videos import Progress, progress_of, read_params

RETENTION_S = 3600.0
STEPS = 50  # sampling steps of the fake's tqdm bar
SCHEMAS: dict[str, dict[str, Any]] = {
    "google/veo-3.1": {"duration": (4, 6, 8), "aspect_ratio": ("16:9", "9:16"), "resolution": ("720p", "1080p"),
                       "image": "image", "optional": ("negative_prompt", "generate_audio", "seed", "last_frame")},
    "kwaivgi/kling-v2.1": {"duration": (5, 10), "image": "start_image", "image_required": True,
                           "optional": ("mode", "negative_prompt", "end_image")},
    "minimax/hailuo-02": {"duration": (6, 10), "resolution": ("768p", "1080p"), "image": "first_frame_image",
                          "optional": ("prompt_optimizer",)},
}
VERSIONS = {"5d1a0a2b9c": "community/video-model"}  # version id → a community model (schema of veo's)
FAILURES = {"refuse": "NSFW content detected. Try running it again, or try a different prompt.",
            "fail": "Prediction failed: CUDA out of memory."}


@dataclass(slots=True)
class Prediction:
    id: str
    key: str
    model: str
    prompt: str
    outcome: str
    started: float
    created_at: float
    input: dict[str, Any]
    reference: Reference | None = None
    canceled: bool = False
    polls: int = 0


class ReplicateWire(Wire):
    def missing_key(self) -> APIError:
        return APIError(401, "You did not pass an authentication token")

    def respond(self, error: APIError) -> Response:
        headers = retry_after(error)
        detail = error.message
        if error.status_code == 429:
            detail = f"Request was throttled. Your rate limit resets in ~{headers.get('retry-after', '30')}s."
        elif error.status_code == 401:
            detail = "You did not pass a valid authentication token"
        body: dict[str, Any] = {"title": TITLES.get(error.status_code, "Error"), "detail": detail,
                                "status": error.status_code}
        if isinstance(error, InvalidInput):
            body["invalid_fields"] = error.fields
        return json_response(body, error.status_code, headers)


TITLES = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
          422: "Input validation failed", 429: "Too many requests", 500: "Internal server error",
          502: "Bad gateway"}


class InvalidInput(APIError):
    def __init__(self, field: str, kind: str, description: str) -> None:
        super().__init__(422, description)
        self.fields = [{"type": kind, "field": field, "description": description}]


class ReplicateAPI(ProviderFake):
    kind = "replicate"
    wire_type = ReplicateWire

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models/{owner}/{name}/predictions", self.create_for_model, methods=["POST"]),
            Route("/v1/predictions", self.create_for_version, methods=["POST"]),
            Route("/v1/predictions", self.list_predictions, methods=["GET"]),
            Route("/v1/predictions/{prediction_id}", self.retrieve, methods=["GET"]),
            Route("/v1/predictions/{prediction_id}/cancel", self.cancel, methods=["POST"]),
            Route("/files/replicate/{prediction_id}/output.mp4", self.file, methods=["GET"]),
        ]

    async def create_for_model(self, request: Request) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        if model not in SCHEMAS:
            raise APIError(404, f"The requested resource ({model}) could not be found.")
        return await self.create(request, model, SCHEMAS[model])

    async def create_for_version(self, request: Request) -> Response:
        body = await read_params(request)
        model = VERSIONS.get(body.get("version", ""))
        if model is None:
            raise InvalidInput("version", "invalid", "Invalid version or not permitted")
        return await self.create(request, model, SCHEMAS["google/veo-3.1"], body)

    async def create(self, request: Request, model: str, schema: dict[str, Any],
                     body: dict[str, Any] | None = None) -> Response:
        body = body if body is not None else await read_params(request)
        for name in body:
            if name not in ("input", "version", "webhook", "webhook_events_filter", "stream"):
                raise InvalidInput(name, "additional_property_not_allowed",
                                   f"Additional property {name} is not allowed")
        values = body.get("input")
        if not isinstance(values, dict):
            raise InvalidInput("", "required", "input is required")
        reference = check_input(schema, values)
        outcome = outcome_for(values["prompt"])
        job = Prediction(id=secrets.token_hex(13)[:26], key=bearer_token(request.scope), model=model,
                         prompt=values["prompt"], outcome="complete" if outcome == "error" else outcome,
                         started=time.monotonic(), created_at=time.time(), input=values, reference=reference)
        self.state.provider_jobs[job.id] = job
        self.call_back(job, body, request)
        if self.state.answer_lost(job.key, job.prompt):
            raise APIError(502, "upstream connect error or disconnect/reset before headers")
        return json_response(self.describe(job, request), 201)

    def call_back(self, job: Prediction, body: dict[str, Any], request: Request) -> None:
        """`webhook` with the `completed` event (the default filter has it): the prediction object at its end."""
        url, events = body.get("webhook"), body.get("webhook_events_filter", ["output", "completed"])
        if url is None:
            return
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInput("webhook", "format", "Does not match format 'uri'")
        if not isinstance(events, list) or not set(events) <= {"start", "output", "logs", "completed"}:
            raise InvalidInput("webhook_events_filter", "enum",
                               "webhook_events_filter must be a list of: start, output, logs, completed")
        if "completed" in events:
            self.callbacks.after(url, job.started + self.settings.duration_s,
                                 lambda: (self.describe(job, request), job.id))

    async def list_predictions(self, request: Request) -> Response:
        key = bearer_token(request.scope)
        mine = [j for j in self.state.provider_jobs.values() if isinstance(j, Prediction) and j.key == key]
        return json_response({"next": None, "previous": None,
                              "results": [self.describe(j, request) for j in reversed(mine)]})

    async def retrieve(self, request: Request) -> Response:
        job = self.job(request)
        job.polls += 1
        if "[flakypoll]" in job.prompt and job.polls % 2 == 1:
            raise APIError(503, "Service Unavailable")
        return json_response(self.describe(job, request))

    async def cancel(self, request: Request) -> Response:
        job = self.job(request)
        if self.state_of(job)[0] in ("starting", "processing"):
            job.canceled = True
        return json_response(self.describe(job, request))

    def state_of(self, job: Prediction) -> tuple[str, float | None]:
        """The prediction's status and when it ended (monotonic), if it did."""
        if job.canceled:
            return "canceled", job.started
        progress = progress_of(job, time.monotonic(), self.settings.duration_s)  # type: ignore[arg-type]
        status = {"queued": "starting", "in_progress": "processing", "completed": "succeeded"}.get(
            progress.status, "failed")
        ended = job.started + self.settings.duration_s if status in ("succeeded", "failed") else None
        return status, ended

    def describe(self, job: Prediction, request: Request) -> dict[str, Any]:
        status, ended = self.state_of(job)
        base = str(request.base_url).rstrip("/")
        removed = ended is not None and time.monotonic() - ended > RETENTION_S
        output = f"{base}/files/replicate/{job.id}/output.mp4" if status == "succeeded" and not removed else None
        progress = progress_of(job, time.monotonic(), self.settings.duration_s)  # type: ignore[arg-type]
        return {
            "id": job.id, "model": job.model, "version": "hidden", "input": {} if removed else job.input,
            "logs": "" if removed else logs(status, progress),
            "output": output,
            "data_removed": removed, "error": FAILURES.get(job.outcome) if status == "failed" else None,
            "status": status, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.created_at)),
            "urls": {"get": f"{base}/v1/predictions/{job.id}", "cancel": f"{base}/v1/predictions/{job.id}/cancel",
                     "web": f"https://replicate.com/p/{job.id}"},
            "metrics": {"predict_time": round(self.settings.duration_s, 3)} if ended else {},
        }

    async def file(self, request: Request) -> Response:
        job = self.state.provider_jobs.get(request.path_params["prediction_id"])
        if not isinstance(job, Prediction):
            return Response("Not Found", 404, media_type="text/plain")
        status, ended = self.state_of(job)
        if status != "succeeded" or ended is None or time.monotonic() - ended > RETENTION_S:
            return Response("Not Found", 404, media_type="text/plain")
        await held(self.state)
        return Response(self.assets.video.data, media_type="video/mp4")

    def job(self, request: Request) -> Prediction:
        job = self.state.provider_jobs.get(request.path_params["prediction_id"])
        if not isinstance(job, Prediction) or job.key != bearer_token(request.scope):
            raise APIError(404, "The requested resource could not be found.")
        return job


def logs(status: str, progress: Progress) -> str:
    """What a video model prints: a setup line, then its tqdm bar, one line per fifth of the run."""
    if status == "starting":
        return ""
    done = 100 if status == "succeeded" else progress.progress
    lines = ["Using seed: 1234"]
    for percent in [*range(0, done, 20), done]:
        step, bar = STEPS * percent // 100, "█" * (percent // 10)
        lines.append(f"{percent:3d}%|{bar:<10}| {step}/{STEPS} [00:{step // 5:02d}<00:{(STEPS - step) // 5:02d}, "
                     "2.50it/s]")
    return "\n".join(lines) + "\n"


def check_input(schema: dict[str, Any], values: dict[str, Any]) -> Reference | None:
    known = {"prompt", "duration", "aspect_ratio", "resolution", schema["image"], *schema.get("optional", ())}
    for name in values:
        if name not in known or (name in ("aspect_ratio", "resolution") and name not in schema):
            raise InvalidInput(f"input.{name}", "additional_property_not_allowed",
                               f"Additional property {name} is not allowed")
    if not isinstance(values.get("prompt"), str) or not values["prompt"]:
        raise InvalidInput("input.prompt", "required", "prompt is required")
    for name in ("duration", "aspect_ratio", "resolution"):
        if name in values and name in schema and values[name] not in schema[name]:
            allowed = ", ".join(map(str, schema[name]))
            raise InvalidInput(f"input.{name}", "enum", f"{name} must be one of the following: {allowed}")
    if isinstance(values.get("duration"), str):
        raise InvalidInput("input.duration", "invalid_type", "Invalid type. Expected: integer, given: string")
    image_field = schema["image"]
    url = values.get(image_field)
    if url is None:
        if schema.get("image_required"):
            raise InvalidInput(f"input.{image_field}", "required", f"{image_field} is required")
        return None
    if not isinstance(url, str):
        raise InvalidInput(f"input.{image_field}", "invalid_type", "Invalid type. Expected: string")
    if url.startswith(("http://", "https://")):
        return Reference("image_url", value=url)
    image = data_url_image(url)
    if image is None:
        raise InvalidInput(f"input.{image_field}", "format", "Does not match format 'uri'")
    return Reference(image_field, image[0], len(image[1]))
