"""A fake of Google's Gemini API for Veo, as the official SDK and the cookbook use it (PROVIDERS.md §1).

- `POST /v1beta/models/{model}:predictLongRunning` with `x-goog-api-key` (or `?key=`) and the SDK's body:
  `instances[0]` holds prompt and image (`bytesBase64Encoded` + `mimeType`; `inlineData` is taken too), and
  `parameters` the rest. Fields only Vertex takes (`seed`, `generateAudio`, …) are a 400, as the SDK refuses them;
  a field Google does not know (`lastFrame` under `parameters`) is a 400 as well.
- `GET /v1beta/models/{model}/operations/{id}`: while running, only `name` (proto3 JSON leaves `done: false` out);
  then `done` with `response.generateVideoResponse.generatedSamples[0].video.uri`, or `error`, or for a refused
  prompt `raiMediaFilteredCount`/`raiMediaFilteredReasons` and no samples.
- `GET /v1beta/files/{id}:download?alt=media` needs the key and answers a 302 to the bytes (served without one).
- Errors in Google's envelope: an invalid key is a 400 with reason API_KEY_INVALID, a 429 is RESOURCE_EXHAUSTED
  with a RetryInfo `retryDelay` and no Retry-After header.

- `webhookConfig: {"uris": [...], "user_metadata": {...}}` on create: a thin `video.generated` event (the file's
  uri and the metadata, not the operation) is POSTed to each uri when the video is made, signed the Standard
  Webhooks way with the simulator's `webhook_secret` (see `callbacks`).

Prompts: `[refuse]` (RAI filtered), `[fail]` (an `error` operation), `[nosamples]` (done, nothing in it) and
`[inline]` (the video as `encodedVideo` instead of a uri).
"""
from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from .behaviour import outcome_for
from .errors import APIError, json_response
from .media import held
from .middleware import Wire
from .provider import ProviderFake
from .state import Reference
from .videos import progress_of, sniff

ASPECT_RATIOS = ("16:9", "9:16")
RESOLUTIONS = {"veo-3.1": ("720p", "1080p", "4k"), "veo-3": ("720p", "1080p"), "veo-2": ("720p",)}
DURATIONS = {"veo-2": (5, 6, 7, 8)}
DEFAULT_DURATIONS = (4, 6, 8)
PARAMETERS = ("sampleCount", "durationSeconds", "aspectRatio", "resolution", "personGeneration", "negativePrompt",
              "enhancePrompt")
VERTEX_ONLY = ("storageUri", "fps", "seed", "generateAudio", "pubsubTopic", "mask", "compressionQuality", "labels",
               "resizeMode")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
RAI_REASON = ("Veo could not generate 1 videos based on the prompt provided. You will not be charged for this "
              "request. Try rephrasing the prompt. Support codes: 42237218")
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}
UNREGISTERED = ("Method doesn't allow unregistered callers (callers without established identity). Please use API "
                "Key or other form of API consumer identity to call this API.")


@dataclass(slots=True)
class VeoJob:
    id: str
    key: str
    model: str
    prompt: str
    outcome: str
    started: float
    instance: dict[str, Any]
    parameters: dict[str, Any]
    reference: Reference | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"models/{self.model}/operations/{self.id}"


class GeminiWire(Wire):
    def key_of(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-goog-api-key":
                return value.decode("latin-1").strip()
        query = scope.get("query_string", b"").decode("latin-1")
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if name == "key":
                return value
        return ""

    def missing_key(self) -> APIError:
        return APIError(403, UNREGISTERED)

    def respond(self, error: APIError) -> Response:
        return google_error(error)


def google_error(error: APIError) -> Response:
    status, message, details = error.status_code, error.message, []
    if error.code == "invalid_api_key":  # Google says so with a 400
        status, message = 400, "API key not valid. Please pass a valid API key."
        details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]
    elif status == 429:
        delay = error.headers.get("retry-after", "30")
        message = "You exceeded your current quota, please check your plan and billing details."
        details = [{"@type": "type.googleapis.com/google.rpc.Help", "links": [
                       {"description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}]
    elif status == 403 and error.code == "unsupported_country_region_territory":
        status, name = 400, "FAILED_PRECONDITION"
        body = {"error": {"code": 400, "message": "User location is not supported for the API use.",
                          "status": name}}
        return json_response(body, status)
    body = {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}
    if details:
        body["error"]["details"] = details
    return json_response(body, status)


def bad_request(message: str) -> APIError:
    return APIError(400, message)


class GeminiAPI(ProviderFake):
    kind = "gemini"
    wire_type = GeminiWire

    def routes(self) -> list[Route]:
        return [
            Route("/v1beta/models/{model}:predictLongRunning", self.create, methods=["POST"]),
            Route("/v1beta/models/{model}/operations/{operation}", self.operation, methods=["GET"]),
            Route("/v1beta/files/{file}:download", self.download, methods=["GET"]),
            Route("/files/veo/{file}.mp4", self.file, methods=["GET"]),
        ]

    async def create(self, request: Request) -> Response:
        model = request.path_params["model"]
        if not model.startswith("veo-"):
            raise APIError(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                                "predictLongRunning. Call ListModels to see the list of available models and "
                                "their supported methods.")
        body = await read_json(request)
        instance = one_instance(body)
        parameters = check_parameters(body.get("parameters", {}), model)
        prompt = instance.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise bad_request("* GenerateVideoRequest.instances[0].prompt: prompt must not be empty")
        job = VeoJob(id=secrets.token_hex(6), key=self.wire.key_of(request.scope), model=model, prompt=prompt,
                     outcome=veo_outcome(prompt), started=time.monotonic(), instance=instance,
                     parameters=parameters, reference=image_reference(instance))
        self.state.provider_jobs[job.id] = job
        if "webhookConfig" in body:
            self.call_back(job, body["webhookConfig"], request)
        if self.state.answer_lost(job.key, job.prompt):
            raise APIError(502, "upstream connect error or disconnect/reset before headers")
        return json_response({"name": job.name})

    def call_back(self, job: VeoJob, config: Any, request: Request) -> None:
        """`webhookConfig.uris`: a thin `video.generated` event for a video made, echoing the user metadata."""
        uris = config.get("uris") if isinstance(config, dict) else None
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u.startswith(
                ("http://", "https://")) for u in uris):
            raise bad_request("* GenerateVideoRequest.webhook_config.uris: must be a non-empty list of URLs")
        metadata = config.get("user_metadata", config.get("userMetadata"))
        if metadata is not None and not isinstance(metadata, dict):
            raise bad_request("* GenerateVideoRequest.webhook_config.user_metadata: must be an object")

        def event() -> tuple[dict[str, Any], str] | None:
            if job.outcome not in ("complete", "inline"):
                return None  # [U] whether a failed operation is announced at all; this fake does not
            uri = f"{str(request.base_url).rstrip('/')}/v1beta/files/{job.id}:download?alt=media"
            data: dict[str, Any] = {"output_file_uri": uri}
            if metadata is not None:
                data["user_metadata"] = metadata
            return {"id": "evt_" + secrets.token_hex(8), "type": "video.generated",
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}, job.id

        for uri in uris:
            self.callbacks.after(uri, job.started + self.settings.duration_s, event)

    async def operation(self, request: Request) -> Response:
        job = self.job(request, request.path_params["operation"])
        if job.model != request.path_params["model"]:
            raise APIError(404, f"Operation models/{request.path_params['model']}/operations/{job.id} not found.")
        return json_response(self.describe(job, request))

    def describe(self, job: VeoJob, request: Request) -> dict[str, Any]:
        progress = progress_of(job, time.monotonic(), self.settings.duration_s)  # type: ignore[arg-type]
        if progress.status not in ("completed", "failed"):
            return {"name": job.name}
        done: dict[str, Any] = {"name": job.name, "done": True}
        if job.outcome == "fail":
            done["error"] = {"code": 13, "message": "Video generation failed due to an internal error."}
            return done
        result: dict[str, Any] = {}
        if job.outcome == "refuse":
            result = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [RAI_REASON]}
        elif job.outcome == "inline":
            result = {"generatedSamples": [{"video": {
                "encodedVideo": base64.b64encode(self.assets.video.data).decode(), "encoding": "video/mp4"}}]}
        elif job.outcome == "complete":
            uri = f"{str(request.base_url).rstrip('/')}/v1beta/files/{job.id}:download?alt=media"
            result = {"generatedSamples": [{"video": {"uri": uri}}]}
        done["response"] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
            "generateVideoResponse": result}
        return done

    async def download(self, request: Request) -> Response:
        job = self.finished(self.job(request, request.path_params["file"]))
        if request.query_params.get("alt") != "media":
            return json_response({"name": f"files/{job.id}", "mimeType": "video/mp4", "state": "ACTIVE",
                                  "sizeBytes": str(len(self.assets.video.data))})
        signed = secrets.token_urlsafe(12)
        job.extra["signed"] = signed
        return RedirectResponse(f"{str(request.base_url).rstrip('/')}/files/veo/{job.id}.mp4?sig={signed}", 302)

    async def file(self, request: Request) -> Response:
        job = self.state.provider_jobs.get(request.path_params["file"])
        if not isinstance(job, VeoJob) or not job.extra.get("signed") \
                or request.query_params.get("sig") != job.extra["signed"]:
            return Response("Forbidden", 403, media_type="text/plain")
        await held(self.state)
        return Response(self.assets.video.data, media_type="video/mp4")

    def job(self, request: Request, job_id: str) -> VeoJob:
        job = self.state.provider_jobs.get(job_id)
        if not isinstance(job, VeoJob) or job.key != self.wire.key_of(request.scope):
            raise APIError(404, f"Requested entity was not found: {job_id}.")
        return job

    def finished(self, job: VeoJob) -> VeoJob:
        status = progress_of(job, time.monotonic(), self.settings.duration_s).status  # type: ignore[arg-type]
        if status != "completed" or job.outcome != "complete":
            raise APIError(404, f"File files/{job.id} is not ready or does not exist.")
        return job


def veo_outcome(prompt: str) -> str:
    for marker in ("nosamples", "inline"):
        if f"[{marker}]" in prompt:
            return marker
    outcome = outcome_for(prompt)
    return "complete" if outcome == "error" else outcome


async def read_json(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_request("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(body, dict):
        raise bad_request("Invalid JSON payload received. Expected an object.")
    unknown = [name for name in body if name not in ("instances", "parameters", "webhookConfig")]
    if unknown:
        raise bad_request(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    return body


def one_instance(body: dict[str, Any]) -> dict[str, Any]:
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise bad_request("* GenerateVideoRequest.instances: exactly one instance is required")
    instance = instances[0]
    for name in instance:
        if name not in ("prompt", "image", "lastFrame", "referenceImages", "video"):
            raise bad_request(f'Invalid JSON payload received. Unknown name "{name}" at \'instances[0]\': '
                              "Cannot find field.")
    return instance


def check_parameters(parameters: Any, model: str) -> dict[str, Any]:
    if not isinstance(parameters, dict):
        raise bad_request("Invalid JSON payload received. 'parameters' must be an object.")
    for name in parameters:
        if name in VERTEX_ONLY:
            raise bad_request(f"`{name}` isn't supported by the Gemini API; it is only supported on Vertex AI.")
        if name not in PARAMETERS:
            raise bad_request(f'Invalid JSON payload received. Unknown name "{name}" at \'parameters\': '
                              "Cannot find field.")
    family = next((f for f in RESOLUTIONS if model.startswith(f)), "veo-3.1")
    duration = parameters.get("durationSeconds", 8)
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise bad_request(f"Invalid value at 'parameters.duration_seconds' (TYPE_INT32), {orjson.dumps(duration)!r}")
    durations = DURATIONS.get(family, DEFAULT_DURATIONS)
    if duration not in durations:
        raise bad_request(f"The number value for `durationSeconds` is out of bound. Please provide a value between "
                          f"{durations[0]} and {durations[-1]}, inclusive.")
    if parameters.get("aspectRatio", "16:9") not in ASPECT_RATIOS:
        raise bad_request(f"Aspect ratio {parameters['aspectRatio']!r} is not supported. Supported aspect ratios "
                          "are 16:9 and 9:16.")
    if parameters.get("resolution", "720p") not in RESOLUTIONS[family]:
        raise bad_request(f"Resolution {parameters['resolution']!r} is not supported by {model}.")
    if parameters.get("sampleCount", 1) != 1:
        raise bad_request("sampleCount must be 1 for this model.")
    return parameters


def image_reference(instance: dict[str, Any]) -> Reference | None:
    image = instance.get("image")
    if image is None:
        return None
    if not isinstance(image, dict):
        raise bad_request("* GenerateVideoRequest.instances[0].image: must be an object")
    inline = image.get("inlineData") if isinstance(image.get("inlineData"), dict) else None
    encoded = inline.get("data") if inline else image.get("bytesBase64Encoded")
    mime = inline.get("mimeType") if inline else image.get("mimeType")
    if image.get("gcsUri"):
        raise bad_request("`gcsUri` isn't supported by the Gemini API; it is only supported on Vertex AI.")
    try:
        data = base64.b64decode(encoded or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise bad_request("* GenerateVideoRequest.instances[0].image: the image bytes are not valid base64") \
            from None
    if not data or mime not in IMAGE_TYPES or sniff(data) != mime:
        raise bad_request(f"* GenerateVideoRequest.instances[0].image: unsupported or mislabelled image "
                          f"(mimeType {mime!r}); use image/png, image/jpeg or image/webp")
    return Reference("inlineData" if inline else "bytesBase64Encoded", mime, len(data))
