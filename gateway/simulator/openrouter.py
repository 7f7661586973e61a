"""A fake of OpenRouter's video API (PROVIDERS.md §2), under `/api/v1` like the real one.

- `POST /api/v1/videos` (Bearer) answers **202** with `polling_url` relative to the origin
  (`/api/v1/videos/{id}`), as in OpenRouter's OpenAPI example; a value outside the model's published set is a 400,
  and so is a field the schema does not have.
- `GET /api/v1/videos/{id}`: `pending` → `in_progress` → `completed` with `unsigned_urls` and `usage`, or `failed`
  with `error` ("Content policy violation" for a refused prompt).
- `GET /api/v1/videos/{id}/content?index=0`: the MP4, and without the key the 401 OpenRouter gives.
- `GET /api/v1/videos/models`: what each model takes (`supported_durations`, `_resolutions`, `_aspect_ratios`).
- Errors: `{"error": {"code": <int>, "message"}}`; a 429 carries Retry-After.
- `callback_url`: the `video.generation.completed|failed` envelope is POSTed there at the end, with
  `X-OpenRouter-Idempotency-Key` and, when `webhook_secret` is set, `X-OpenRouter-Signature` (see `callbacks`).

Prompts: `[refuse]` fails with "Content policy violation", `[fail]` with "Provider returned error", and
`[moderate]` is refused at once with a 403, as OpenRouter's moderation does.
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
from .videos import progress_of, read_params

MODELS: dict[str, dict[str, Any]] = {
    "google/veo-3.1": {"supported_durations": [4, 6, 8], "supported_resolutions": ["720p", "1080p"],
                       "supported_aspect_ratios": ["16:9", "9:16"], "supported_frame_images": ["first_frame",
                                                                                                "last_frame"]},
    "google/veo-3.1-fast": {"supported_durations": [4, 6, 8], "supported_resolutions": ["720p", "1080p"],
                            "supported_aspect_ratios": ["16:9", "9:16"], "supported_frame_images": ["first_frame"]},
    "kwaivgi/kling-v3.0-std": {"supported_durations": [5, 10], "supported_resolutions": ["720p", "1080p"],
                               "supported_aspect_ratios": ["16:9", "9:16", "1:1"],
                               "supported_frame_images": ["first_frame"]},
    "minimax/hailuo-2.3": {"supported_durations": [6, 10], "supported_resolutions": ["768p", "1080p"],
                           "supported_aspect_ratios": ["16:9"], "supported_frame_images": ["first_frame"]},
}
FIELDS = ("model", "prompt", "duration", "resolution", "aspect_ratio", "size", "frame_images", "input_references",
          "generate_audio", "seed", "callback_url", "provider", "creativity", "upscale_factor")
FAILURES = {"refuse": "Content policy violation", "fail": "Provider returned error"}
MISSING_AUTH = "Missing Authentication header"


@dataclass(slots=True)
class RouterJob:
    id: str
    key: str
    model: str
    prompt: str
    outcome: str
    started: float
    body: dict[str, Any]
    reference: Reference | None = None


class OpenRouterWire(Wire):
    def missing_key(self) -> APIError:
        return APIError(401, MISSING_AUTH)

    def is_open(self, path: str) -> bool:
        return path == "/api/v1/videos/models" or super().is_open(path)

    def respond(self, error: APIError) -> Response:
        headers = retry_after(error)
        return json_response({"error": {"code": error.status_code, "message": error.message}}, error.status_code,
                             headers)


class OpenRouterAPI(ProviderFake):
    kind = "openrouter"
    wire_type = OpenRouterWire

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/videos/models", self.models, methods=["GET"]),
            Route("/api/v1/videos", self.create, methods=["POST"]),
            Route("/api/v1/videos/{job_id}", self.retrieve, methods=["GET"]),
            Route("/api/v1/videos/{job_id}/content", self.content, methods=["GET"]),
        ]

    async def models(self, request: Request) -> Response:
        return json_response({"data": [{"id": model, "canonical_slug": model, "name": model, **caps}
                                       for model, caps in MODELS.items()]})

    async def create(self, request: Request) -> Response:
        body = await read_params(request)
        unknown = [name for name in body if name not in FIELDS]
        if unknown:
            raise APIError(400, f"Unrecognized key(s) in object: '{unknown[0]}'")
        model = body.get("model")
        if model not in MODELS:
            raise APIError(400, f"Model {model!r} does not exist or does not generate video")
        check_against(MODELS[model], body)
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        if "[moderate]" in prompt:
            raise APIError(403, f"{model} requires moderation on OpenRouter. Your input was flagged for "
                                "\"violence\".")
        outcome = outcome_for(prompt)
        job = RouterJob(id="job-" + secrets.token_hex(8), key=bearer_token(request.scope), model=model,
                        prompt=prompt, outcome="complete" if outcome == "error" else outcome,
                        started=time.monotonic(), body=body, reference=frame_reference(body.get("frame_images")))
        self.state.provider_jobs[job.id] = job
        callback = body.get("callback_url")
        if callback is not None:
            if not isinstance(callback, str) or not callback.startswith(("http://", "https://")):
                raise APIError(400, "Invalid url at \"callback_url\"")
            self.callbacks.after(callback, job.started + self.settings.duration_s,
                                 lambda: self.webhook_body(job, request))
        if self.state.answer_lost(job.key, job.prompt):
            raise APIError(502, "upstream connect error or disconnect/reset before headers")
        return json_response({"id": job.id, "polling_url": f"/api/v1/videos/{job.id}", "status": "pending",
                              "generation_id": "gen-" + job.id[4:]}, 202)

    async def retrieve(self, request: Request) -> Response:
        return json_response(self.describe(self.job(request), request))

    def describe(self, job: RouterJob, request: Request) -> dict[str, Any]:
        progress = progress_of(job, time.monotonic(), self.settings.duration_s)  # type: ignore[arg-type]
        status = {"queued": "pending"}.get(progress.status, progress.status)
        base = str(request.base_url).rstrip("/")
        out: dict[str, Any] = {"id": job.id, "polling_url": f"{base}/api/v1/videos/{job.id}", "status": status,
                               "generation_id": "gen-" + job.id[4:]}
        if status == "completed":
            out["unsigned_urls"] = [f"{base}/api/v1/videos/{job.id}/content?index=0"]
            out["usage"] = {"cost": 0.5, "is_byok": False}
        elif status == "failed":
            out["error"] = FAILURES[job.outcome]
        return out

    def webhook_body(self, job: RouterJob, request: Request) -> tuple[dict[str, Any], str] | None:
        """The `video.generation.<status>` envelope, and its idempotency key `<job id>-<status>`."""
        data = self.describe(job, request)
        if data["status"] not in ("completed", "failed"):
            return None
        data.pop("polling_url")
        data["model"] = job.model
        envelope = {"type": f"video.generation.{data['status']}",
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "data": data}
        return envelope, f"{job.id}-{data['status']}"

    async def content(self, request: Request) -> Response:
        job = self.job(request)
        status = progress_of(job, time.monotonic(), self.settings.duration_s).status  # type: ignore[arg-type]
        if status != "completed" or job.outcome != "complete":
            raise APIError(404, "Video not found or not ready")
        if request.query_params.get("index", "0") != "0":
            raise APIError(400, "index out of range")
        await held(self.state)
        return Response(self.assets.video.data, media_type="video/mp4")

    def job(self, request: Request) -> RouterJob:
        job = self.state.provider_jobs.get(request.path_params["job_id"])
        if not isinstance(job, RouterJob) or job.key != bearer_token(request.scope):
            raise APIError(404, "Video generation job not found")
        return job


def check_against(caps: dict[str, Any], body: dict[str, Any]) -> None:
    for field, allowed in (("duration", caps["supported_durations"]),
                           ("resolution", caps["supported_resolutions"]),
                           ("aspect_ratio", caps["supported_aspect_ratios"])):
        value = body.get(field)
        if value is None:
            continue
        if field == "duration" and (isinstance(value, bool) or not isinstance(value, int)):
            raise APIError(400, f"Expected number, received {type(value).__name__} at \"duration\"")
        if value not in allowed:
            raise APIError(400, f"{field} {value!r} is not supported by {body['model']}; supported: "
                                f"{', '.join(map(str, allowed))}")


def frame_reference(frames: Any) -> Reference | None:
    if frames is None:
        return None
    if not isinstance(frames, list) or not frames:
        raise APIError(400, "Expected array, received object at \"frame_images\"")
    frame = frames[0]
    url = frame.get("image_url", {}).get("url") if isinstance(frame, dict) else None
    if not isinstance(frame, dict) or frame.get("type") != "image_url" or not isinstance(url, str) \
            or frame.get("frame_type") not in ("first_frame", "last_frame"):
        raise APIError(400, "Invalid frame_images[0]: expected {type: 'image_url', image_url: {url}, frame_type}")
    if url.startswith(("http://", "https://")):
        return Reference("image_url", value=url)
    image = data_url_image(url)
    if image is None:
        raise APIError(400, "frame_images[0].image_url.url is not a URL or a valid data URL of an image")
    return Reference(frame["frame_type"], image[0], len(image[1]))
