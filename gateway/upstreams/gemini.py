"""Google's Gemini API (Veo): `POST {model}:predictLongRunning`, `GET {operation name}` until `done`, then the
video from `response.generateVideoResponse.generatedSamples[0].video.uri`, fetched with the key through a redirect.

A `done` operation with no samples is not a video: with `raiMediaFilteredCount` it is a refusal by Google's safety
filters (terminal, not billed, never a reason to change keys), without it a failure.

The Gemini API reports no progress for a running operation (a `metadata.progress` is taken if one ever comes),
so the gateway estimates it.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.faults import Action, Decision, KeyEffect, Operation
from gateway.core.upstream import GenerationSpec, UpstreamError, UpstreamKey, UpstreamStatus
from gateway.upstreams.http import clean_status, error_from_status, json_document
from gateway.upstreams.provider_http import ProviderUpstream

if TYPE_CHECKING:
    pass

# size → (aspectRatio, resolution); Veo makes 16:9 and 9:16 only.
SIZES = {
    "1280x720": ("16:9", "720p"), "720x1280": ("9:16", "720p"),
    "1920x1080": ("16:9", "1080p"), "1080x1920": ("9:16", "1080p"),
    "3840x2160": ("16:9", "4k"), "2160x3840": ("9:16", "4k"),
}
# model id prefix → (what it can make: resolutions, durationSeconds); the first match wins.
MODELS: tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...] = (
    ("veo-3.1", ("720p", "1080p", "4k"), (4, 6, 8)),
    ("veo-3", ("720p", "1080p"), (4, 6, 8)),
    ("veo-2", ("720p",), (5, 6, 7, 8)),
    ("", ("720p", "1080p", "4k"), (4, 6, 8)),  # a model this table does not know yet: the newest family's range
)
CORRELATION = "sora_gateway_job"  # the key of our token in webhookConfig.user_metadata
_TOKENS = 10_000
_OPERATION = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*")
_GRPC = {1: "cancelled", 2: "unknown", 3: "invalid_argument", 4: "deadline_exceeded", 5: "not_found",
         7: "permission_denied", 8: "resource_exhausted", 9: "failed_precondition", 13: "internal",
         14: "unavailable"}


class GeminiUpstream(ProviderUpstream):
    kind = "gemini"
    on_ambiguous_create = "fail"  # no list to look a lost create up in: never risk paying twice
    # The fault table's rows for what Gemini means differently: a model this key cannot use is a 404 on the
    # create (another key or project may have it).
    faults = {(Operation.SUBMIT, 404): Decision(KeyEffect.NONE, Action.OTHER_KEY)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tokens: dict[str, str] = {}  # the token a create's webhookConfig carries → its operation name

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of:
            raise UpstreamError(f"upstream {self.name} (Gemini API) cannot remix a video", status=400)
        model = (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model
        url = self.http.url(f"models/{model}:predictLongRunning")
        body = self.body(spec, model)
        token = ""
        if self.callbacks is not None:
            # Google's thin event is not known to name the operation: a token of ours in user_metadata does
            token = secrets.token_urlsafe(16)
            body["webhookConfig"] = {"uris": [self.callbacks.url], "user_metadata": {CORRELATION: token}}
        answer = await self.http.call("POST", url, key, _auth(key), json=body, operation="submit")
        name = answer.body.get("name")
        if not isinstance(name, str) or not _OPERATION.fullmatch(name) or ".." in name:
            raise UpstreamError(f"upstream {self.name} answered a create without an operation name", status=502)
        if token:
            self._tokens[token] = name
            while len(self._tokens) > _TOKENS:
                self._tokens.pop(next(iter(self._tokens)))
        return name

    def check(self, spec: GenerationSpec) -> None:
        """Raise the 400 a request for `spec` would get before any call (UpstreamError); check-config uses it."""
        self.shape(spec, (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model)

    def body(self, spec: GenerationSpec, model: str) -> dict[str, Any]:
        aspect, resolution = self.shape(spec, model)
        instance: dict[str, Any] = {"prompt": spec.prompt}
        if spec.image is not None:
            instance["image"] = {"bytesBase64Encoded": base64.b64encode(spec.image.data).decode("ascii"),
                                 "mimeType": spec.image.mime}
        parameters = {**spec.params, "sampleCount": 1, "durationSeconds": spec.seconds, "aspectRatio": aspect,
                      "resolution": resolution}
        return {"instances": [instance], "parameters": parameters}

    def shape(self, spec: GenerationSpec, model: str) -> tuple[str, str]:
        """aspectRatio and resolution for the request; a 400 saying what the model makes when it cannot."""
        resolutions, durations = next((r, d) for prefix, r, d in MODELS if model.startswith(prefix))
        sizes = [size for size, (_, res) in SIZES.items() if res in resolutions]
        if spec.size not in sizes:
            raise UpstreamError(f"{model} (upstream {self.name}) cannot make {spec.size} videos; it makes "
                                f"{', '.join(sizes)}", status=400, code="invalid_value", param="size")
        if spec.seconds not in durations:
            raise UpstreamError(f"{model} (upstream {self.name}) cannot make {spec.seconds}-second videos; it makes "
                                f"{', '.join(map(str, durations))} seconds", status=400, code="invalid_value",
                                param="seconds")
        return SIZES[spec.size]

    async def status(self, upstream_id: str, key: UpstreamKey) -> UpstreamStatus:
        answer = await self.http.call("GET", self.http.url(upstream_id), key, _auth(key))
        return clean_status(to_status(answer.body), self.redact, (key.secret,))

    def callback_job(self, document: dict[str, Any]) -> str | None:
        """The operation a `video.generated` event is about: its name when the event carries one, else the one
        our token in its user metadata (either casing, at the top or under `data`) was sent with."""
        data = document.get("data") if isinstance(document.get("data"), dict) else {}
        for where in (data, document):
            for field in ("operation", "operation_name", "operationName", "name"):
                name = where.get(field)
                if isinstance(name, str) and "/operations/" in name and _OPERATION.fullmatch(name) \
                        and ".." not in name:
                    return name
            for field in ("user_metadata", "userMetadata"):
                metadata = where.get(field)
                token = metadata.get(CORRELATION) if isinstance(metadata, dict) else None
                if isinstance(token, str) and token in self._tokens:
                    return self._tokens[token]
        return None

    async def download(self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus,
                       variant: str) -> AsyncIterator[bytes] | None:
        if variant != "video":
            return None  # Veo makes no thumbnails
        if final.video_url:
            return await self.http.download(final.video_url, key, _auth(key))
        # the video came inline (encodedVideo): read the operation again rather than keep it in memory
        answer = await self.http.call("GET", self.http.url(upstream_id), key, _auth(key), operation="download")
        video = _first_video(answer.body)
        if isinstance(video.get("uri"), str):
            return await self.http.download(video["uri"], key, _auth(key))
        try:
            data = base64.b64decode(video.get("encodedVideo") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            data = b""
        if not data:
            raise UpstreamError(f"upstream {self.name} has no video for the operation", status=404)
        return _once(data)

    def _error(self, status: int, reason: str | None, headers: Mapping[str, str], body: bytes,
               key: UpstreamKey) -> UpstreamError:
        """Google's envelope, `{"error": {"code", "message", "status", "details"}}`, in the fault table's terms:
        an invalid key is a 400 with reason API_KEY_INVALID, and FAILED_PRECONDITION (billing, region) is about
        the key too."""
        error = _envelope(body)
        state = error.get("status") if isinstance(error.get("status"), str) else None
        plain = orjson.dumps({"error": {"message": error.get("message"), "code": state.lower() if state else None}})
        exc = error_from_status(status, reason, headers, plain if error else body, upstream=self.name,
                                redact=self.redact, secrets=(key.secret,))
        if status == 400 and "API_KEY_INVALID" in _reasons(error):
            exc.status = 401
        elif status == 400 and state == "FAILED_PRECONDITION":
            exc.status = 403
        return exc


def to_status(operation: dict[str, Any]) -> UpstreamStatus:
    if not operation.get("done"):  # proto3 JSON leaves `done: false` out
        progress = _progress(operation.get("metadata"))
        if progress is None:
            return UpstreamStatus("in_progress", progress_estimated=True)
        return UpstreamStatus("in_progress", progress)
    error = operation.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") if isinstance(error.get("message"), str) else None
        return UpstreamStatus("failed", error_code=_GRPC.get(code, "upstream_error") if isinstance(code, int)
                              else "upstream_error", error_message=message or "the provider reported a failure")
    if _first_video(operation):
        uri = _first_video(operation).get("uri")
        return UpstreamStatus("completed", 100.0, video_url=uri if isinstance(uri, str) else None)
    result = _result(operation)
    if result.get("raiMediaFilteredCount") or result.get("raiMediaFilteredReasons"):
        reasons = result.get("raiMediaFilteredReasons")
        text = " ".join(r for r in reasons if isinstance(r, str)) if isinstance(reasons, list) else ""
        return UpstreamStatus("failed", error_code="content_policy_violation", refused=True,
                              error_message=text or "the provider's safety filters blocked the video")
    return UpstreamStatus("failed", error_code="upstream_error",
                          error_message="the provider finished the job without a video or a reason")


def _result(operation: dict[str, Any]) -> dict[str, Any]:
    response = operation.get("response")
    result = response.get("generateVideoResponse") if isinstance(response, dict) else None
    return result if isinstance(result, dict) else {}


def _first_video(operation: dict[str, Any]) -> dict[str, Any]:
    samples = _result(operation).get("generatedSamples")
    sample = samples[0] if isinstance(samples, list) and samples else None
    video = sample.get("video") if isinstance(sample, dict) else None
    return video if isinstance(video, dict) and (video.get("uri") or video.get("encodedVideo")) else {}


def _progress(metadata: Any) -> float | None:
    value = metadata.get("progress") if isinstance(metadata, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return min(max(float(value), 0.0), 99.0)
    return None


def _envelope(body: bytes) -> dict[str, Any]:
    document = json_document(body)
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def _reasons(error: dict[str, Any]) -> set[str]:
    details = error.get("details") if isinstance(error.get("details"), list) else []
    return {d["reason"] for d in details if isinstance(d, dict) and isinstance(d.get("reason"), str)}


def _auth(key: UpstreamKey) -> dict[str, str]:
    return {"x-goog-api-key": key.secret}


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
