"""A fake of fal's queue API (PROVIDERS.md §3), at the root like `queue.fal.run`.

- `POST /{model_id}` with `Authorization: Key …` and the model's own input, checked against the model's schema
  (`duration` is a string enum that differs per family; image-to-video is its own model id and needs
  `image_url`); a bad input is a 422 with `detail[]`, an unknown model a 404.
- The answer: `IN_QUEUE` with `request_id`, `queue_position` and the `status_url`/`response_url`/`cancel_url`,
  which name only `{owner}/{app}`, not the model's subpath.
- `GET …/requests/{id}/status`: HTTP **202** while `IN_QUEUE` or `IN_PROGRESS`, **200** once `COMPLETED`. Every
  request waits in the queue for its first QUEUE_POLLS status reads, whatever the clock says, with a falling
  `queue_position` (the submit said QUEUE_POLLS); its run (`duration_s`) starts when it leaves the queue. With
  `?logs=1` the answer carries `logs`: the model's lines, "Sampling step k/50" as it runs (the newest says how
  far it is); `[quietlogs]` in the prompt keeps the figures out of them.
- `GET …/requests/{id}`: `{"video": {"url", "content_type", "file_name", "file_size"}}` with a public link; a
  refused prompt is a 422 `content_policy_violation` here, after `COMPLETED`. `PUT …/cancel` cancels.
- Errors: `{"detail": …}`; a missing or bad key is 401 `{"detail": "Unauthorized"}`.
- `?fal_webhook=<url>` on submit: `{request_id, gateway_request_id, status: "OK"|"ERROR", payload}` is POSTed
  there at the end, ED25519-signed with a key published at `GET /.well-known/jwks.json` (see `callbacks`).

Prompts: `[refuse]` (422 content_policy_violation on the result), `[fail]` (a `COMPLETED` status carrying
`error`, and a 500 on the result) and `[quietlogs]` (logs without progress figures).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from .behaviour import outcome_for
from .errors import APIError, json_response, retry_after
from .media import data_url_image, held
from .middleware import Wire
from .provider import ProviderFake
from .state import Reference
from .videos import percent_done, progress_of, read_params

_VEO = {"duration": ("4s", "6s", "8s"), "aspect_ratio": ("16:9", "9:16"), "resolution": ("720p", "1080p"),
        "optional": ("negative_prompt", "generate_audio", "seed", "auto_fix", "safety_tolerance")}
_KLING = {"duration": ("5", "10"), "aspect_ratio": ("16:9", "9:16", "1:1"),
          "optional": ("negative_prompt", "cfg_scale")}
SCHEMAS: dict[str, dict[str, Any]] = {
    "fal-ai/veo3.1": {**_VEO, "resolution": ("720p", "1080p", "4k")},
    "fal-ai/veo3.1/fast": {**_VEO, "resolution": ("720p", "1080p", "4k")},
    "fal-ai/veo3.1/image-to-video": {**_VEO, "aspect_ratio": ("auto", "16:9", "9:16"), "image": "image_url"},
    "fal-ai/veo3.1/fast/image-to-video": {**_VEO, "aspect_ratio": ("auto", "16:9", "9:16"), "image": "image_url"},
    "fal-ai/kling-video/v2.1/master/text-to-video": _KLING,
    "fal-ai/kling-video/v2.1/master/image-to-video": {**_KLING, "image": "image_url"},
    "fal-ai/minimax/hailuo-02/standard/text-to-video": {"duration": ("6", "10"), "optional": ("prompt_optimizer",)},
}
QUEUE_POLLS = 2  # status reads a request spends in the queue (or the run's length, unpolled)
STEPS = 50  # sampling steps the fake's log lines count
CONTENT_POLICY = ("The content could not be processed because it contained material flagged by a content "
                  "checker.")


@dataclass(slots=True)
class FalJob:
    id: str
    key: str
    model: str
    app: str  # {owner}/{app}: what the queue URLs name
    prompt: str
    outcome: str
    started: float | None  # monotonic, when it left the queue; None while queued
    input: dict[str, Any]
    queued_at: float = 0.0  # monotonic, when it was submitted
    reference: Reference | None = None
    cancelled: bool = False
    polls: int = 0  # status reads so far


class FalWire(Wire):
    def key_of(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return token.strip() if scheme.lower() == "key" else ""
        return ""

    def missing_key(self) -> APIError:
        return APIError(401, "Unauthorized")

    def is_open(self, path: str) -> bool:
        return path.startswith(("/files/", "/.well-known/")) or super().is_open(path)

    def respond(self, error: APIError) -> Response:
        if isinstance(error, Unprocessable):
            return error.response()
        headers = retry_after(error)
        detail: Any = error.message
        if error.code == "invalid_api_key":
            detail = "Unauthorized"
        return json_response({"detail": detail}, error.status_code, headers)


class Unprocessable(APIError):
    """fal's 422: `detail` is a list of field errors."""

    def __init__(self, field: str, message: str, type: str = "value_error") -> None:
        super().__init__(422, message)
        self.detail = [{"loc": ["body", field], "msg": message, "type": type}]

    def response(self) -> Response:
        return json_response({"detail": self.detail}, 422)


class FalAPI(ProviderFake):
    kind = "fal"
    wire_type = FalWire

    def routes(self) -> list[Route]:
        return [
            Route("/files/fal/{request_id}/output.mp4", self.file, methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/{owner}/{app}/requests/{request_id}/status", self.status, methods=["GET"]),
            Route("/{owner}/{app}/requests/{request_id}/cancel", self.cancel, methods=["PUT"]),
            Route("/{owner}/{app}/requests/{request_id}", self.result, methods=["GET"]),
            Route("/{model_id:path}", self.submit, methods=["POST"]),
        ]

    async def submit(self, request: Request) -> Response:
        model = request.path_params["model_id"]
        schema = SCHEMAS.get(model)
        if schema is None:
            raise APIError(404, f"Application '{model}' not found")
        body = await read_params(request)
        reference = check_input(schema, body)
        prompt = body["prompt"]
        outcome = outcome_for(prompt)
        job = FalJob(id=secrets.token_hex(8) + "-" + secrets.token_hex(4), key=self.wire.key_of(request.scope),
                     model=model, app="/".join(model.split("/")[:2]), prompt=prompt,
                     outcome="complete" if outcome == "error" else outcome, started=None, input=body,
                     reference=reference, queued_at=time.monotonic())
        self.state.provider_jobs[job.id] = job
        webhook = request.query_params.get("fal_webhook")
        if webhook is not None:
            if not webhook.startswith(("http://", "https://")):
                raise Unprocessable("fal_webhook", "the webhook URL must be an http(s) URL")
            self.callbacks.after(webhook, job.queued_at + 2 * self.settings.duration_s,  # queue, then the run
                                 lambda: (self.webhook_body(job, request), job.id))
        if self.state.answer_lost(job.key, job.prompt):
            raise APIError(502, "upstream connect error or disconnect/reset before headers")
        base = f"{str(request.base_url).rstrip('/')}/{job.app}/requests/{job.id}"
        return json_response({"status": "IN_QUEUE", "request_id": job.id, "response_url": base,
                              "status_url": base + "/status", "cancel_url": base + "/cancel",
                              "queue_position": QUEUE_POLLS, "gateway_request_id": job.id})

    async def status(self, request: Request) -> Response:
        job = self.job(request)
        job.polls += 1
        if job.started is None and job.polls > QUEUE_POLLS:
            job.started = time.monotonic()  # a job polled often leaves the queue after QUEUE_POLLS reads
        state = self.state_of(job)
        body: dict[str, Any] = {"status": state, "request_id": job.id,
                                "response_url": str(request.url).removesuffix("/status").split("?")[0]}
        if state == "IN_QUEUE":
            body["queue_position"] = max(0, QUEUE_POLLS - job.polls)
            return json_response(body, 202)
        elapsed = time.monotonic() - (job.started or time.monotonic())
        if request.query_params.get("logs") in ("1", "true"):
            body["logs"] = self.logs(job, elapsed, state)
        if state == "IN_PROGRESS":
            return json_response(body, 202)
        body["metrics"] = {"inference_time": round(elapsed, 3)}
        if job.outcome == "fail":
            body["error"] = "Internal server error"
            body["error_type"] = "internal_server_error"
        return json_response(body, 200)

    def logs(self, job: FalJob, elapsed: float, state: str) -> list[dict[str, Any]]:
        """The model's log so far: a line per fifth of the run, the newest saying how far it is."""
        done = 100 if state == "COMPLETED" else percent_done(elapsed, self.settings.duration_s)
        lines = ["Loading the model", "Starting video generation"]
        if "[quietlogs]" in job.prompt:
            lines.append("Generating video")
        else:
            lines += [f"Sampling step {STEPS * p // 100}/{STEPS}" for p in range(0, done, 20)]
            lines.append(f"Sampling step {STEPS * done // 100}/{STEPS}")
        if state == "COMPLETED":
            lines.append("Encoding the video")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return [{"message": line, "level": "INFO", "source": "USER", "timestamp": stamp} for line in lines]

    async def result(self, request: Request) -> Response:
        job = self.job(request)
        state = self.state_of(job)
        if state != "COMPLETED":
            return json_response({"detail": "Request is still in progress", "status": state}, 400)
        if job.outcome == "refuse":
            raise Unprocessable("prompt", CONTENT_POLICY, "content_policy_violation")
        if job.outcome == "fail":
            raise APIError(500, "Internal server error")
        cdn = self.settings.public_url or str(request.base_url).rstrip("/")  # where the "CDN" is, when set
        url = f"{cdn}/files/fal/{job.id}/output.mp4"
        return json_response({"video": {"url": url, "content_type": "video/mp4", "file_name": "output.mp4",
                                        "file_size": len(self.assets.video.data)}},
                             headers={"x-fal-request-id": job.id})

    def webhook_body(self, job: FalJob, request: Request) -> dict[str, Any]:
        """What fal POSTs to `fal_webhook`: the result as `payload` (`status: "OK"`), or the error (`"ERROR"`)."""
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if job.outcome == "refuse":
            return {**body, "status": "ERROR", "error": "Invalid status code: 422",
                    "payload": {"detail": [{"loc": ["body", "prompt"], "msg": CONTENT_POLICY,
                                            "type": "content_policy_violation"}]}}
        if job.outcome == "fail" or job.cancelled:
            return {**body, "status": "ERROR", "error": "Invalid status code: 500",
                    "payload": {"detail": "Internal server error"}}
        cdn = self.settings.public_url or str(request.base_url).rstrip("/")
        return {**body, "status": "OK", "payload": {"video": {
            "url": f"{cdn}/files/fal/{job.id}/output.mp4", "content_type": "video/mp4", "file_name": "output.mp4",
            "file_size": len(self.assets.video.data)}}}

    async def jwks(self, request: Request) -> Response:
        return json_response(self.callbacks.jwks())

    async def cancel(self, request: Request) -> Response:
        job = self.job(request)
        if self.state_of(job) == "COMPLETED":
            return json_response({"status": "ALREADY_COMPLETED"}, 400)
        job.cancelled = True
        return json_response({"status": "CANCELLATION_REQUESTED"}, 202)

    async def file(self, request: Request) -> Response:
        job = self.state.provider_jobs.get(request.path_params["request_id"])
        if not isinstance(job, FalJob) or self.state_of(job) != "COMPLETED" or job.outcome != "complete":
            return Response("Not Found", 404, media_type="text/plain")
        await held(self.state)
        return Response(self.assets.video.data, media_type="video/mp4")

    def state_of(self, job: FalJob) -> str:
        if job.cancelled:
            return "COMPLETED"
        if job.started is None and time.monotonic() - job.queued_at >= self.settings.duration_s:
            job.started = job.queued_at + self.settings.duration_s  # and any job after the run's length in it
        if job.started is None:
            return "IN_QUEUE"
        progress = progress_of(job, time.monotonic(), self.settings.duration_s)  # type: ignore[arg-type]
        return {"queued": "IN_PROGRESS", "in_progress": "IN_PROGRESS"}.get(progress.status, "COMPLETED")

    def job(self, request: Request) -> FalJob:
        job = self.state.provider_jobs.get(request.path_params["request_id"])
        app = f"{request.path_params['owner']}/{request.path_params['app']}"
        if not isinstance(job, FalJob) or job.key != self.wire.key_of(request.scope) or job.app != app:
            raise APIError(404, "Request not found")
        return job


def check_input(schema: dict[str, Any], body: dict[str, Any]) -> Reference | None:
    known = {"prompt", "duration", "aspect_ratio", "resolution", schema.get("image"), *schema.get("optional", ())}
    for name in body:
        if name not in known or (name in ("aspect_ratio", "resolution") and name not in schema):
            raise Unprocessable(name, "extra fields not permitted", "value_error.extra")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise Unprocessable("prompt", "field required", "value_error.missing")
    for name in ("duration", "aspect_ratio", "resolution"):
        if name in body and name in schema and body[name] not in schema[name]:
            permitted = ", ".join(f"'{v}'" for v in schema[name])
            raise Unprocessable(name, f"unexpected value; permitted: {permitted}", "value_error.const")
    image_field = schema.get("image")
    if image_field is None:
        return None
    url = body.get(image_field)
    if not isinstance(url, str):
        raise Unprocessable(image_field, "field required", "value_error.missing")
    if url.startswith(("http://", "https://")):
        return Reference("image_url", value=url)
    image = data_url_image(url)
    if image is None:
        raise Unprocessable(image_field, "Could not read the image: send a URL or a base64 data URI of one")
    return Reference(image_field, image[0], len(image[1]))
