"""OpenRouter's video API: `POST /videos` (202 with a `polling_url`, often relative to the origin), `GET` it until
a terminal status, then the bytes from `unsigned_urls[0]`, which need the key like every other call.

What a model takes (durations, resolutions, aspect ratios) is published at `GET /videos/models`; the dialect
reads it once an hour, so a request the model cannot make is a 400 that lists what it can, before a paid call.
A running job has no progress figure: the gateway estimates it.
"""
from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.faults import Action, Decision, KeyEffect, Operation
from gateway.core.upstream import GenerationSpec, UpstreamError, UpstreamKey, UpstreamStatus
from gateway.upstreams.http import clean_status, error_from_status, json_document
from gateway.upstreams.provider_http import ProviderUpstream
from gateway.upstreams.shapes import aspect_and_resolution, cannot

if TYPE_CHECKING:
    pass

log = logging.getLogger("gateway.upstreams")
CATALOG_TTL_S = 3600.0
STATES = {"pending": "queued", "in_progress": "in_progress", "completed": "completed", "failed": "failed",
          "cancelled": "failed", "expired": "failed"}
_REFUSAL = re.compile(r"content policy|moderation|flagged|safety", re.IGNORECASE)
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")


class OpenRouterUpstream(ProviderUpstream):
    kind = "openrouter"
    on_ambiguous_create = "fail"  # no list to look a lost create up in: never risk paying twice
    # A 403 on the create is OpenRouter's moderation or guardrail refusing the prompt, not the key.
    faults = {(Operation.SUBMIT, 403): Decision(KeyEffect.NONE, Action.CLIENT)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._polling: dict[str, str] = {}  # job id → the polling_url it came with
        self._catalog: dict[str, dict[str, Any]] = {}
        self._catalog_at = -CATALOG_TTL_S

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of:
            raise UpstreamError(f"upstream {self.name} (OpenRouter) cannot remix a video", status=400)
        model = (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model
        body = await self.body(spec, model, key)
        answer = await self.http.call("POST", self.http.url("videos"), key, _auth(key), json=body,
                                      operation="submit")
        job_id = answer.body.get("id")
        if not isinstance(job_id, str) or not _ID.fullmatch(job_id):
            raise UpstreamError(f"upstream {self.name} answered a create without a job id", status=502)
        polling = answer.body.get("polling_url")
        if isinstance(polling, str) and self.http.on_own_origin(self.http.url(polling)):
            self._polling[job_id] = self.http.url(polling)  # relative to the origin, not to base_url
        return job_id

    def check(self, spec: GenerationSpec) -> None:
        """Raise the 400 a request for `spec` would get before any call (UpstreamError); check-config uses it."""
        if aspect_and_resolution(spec.size) is None:  # what each model takes is only known from the API
            raise cannot(self.name, spec.upstream_model, f"{spec.size} videos", "size", _sizes({}))

    async def body(self, spec: GenerationSpec, model: str, key: UpstreamKey) -> dict[str, Any]:
        shape = aspect_and_resolution(spec.size)
        capabilities = await self.capabilities(model, key)
        if shape is None or not _fits(capabilities, "supported_aspect_ratios", shape[0]) \
                or not _fits(capabilities, "supported_resolutions", shape[1]):
            raise cannot(self.name, model, f"{spec.size} videos", "size", _sizes(capabilities))
        if not _fits(capabilities, "supported_durations", spec.seconds):
            durations = ", ".join(str(d) for d in capabilities["supported_durations"])
            raise cannot(self.name, model, f"{spec.seconds}-second videos", "seconds", f"{durations} seconds")
        body: dict[str, Any] = {**spec.params, "model": model, "prompt": spec.prompt, "duration": spec.seconds,
                                "aspect_ratio": shape[0], "resolution": shape[1]}
        if self.callbacks is not None:
            body["callback_url"] = self.callbacks.url
        if spec.image is not None:
            data = base64.b64encode(spec.image.data).decode("ascii")
            body["frame_images"] = [{"type": "image_url", "frame_type": "first_frame",
                                     "image_url": {"url": f"data:{spec.image.mime};base64,{data}"}}]
        return body

    async def capabilities(self, model: str, key: UpstreamKey) -> dict[str, Any]:
        """The model's entry of `GET /videos/models`; {} when it is not listed or the list cannot be read (the
        provider then judges the request itself)."""
        if time.monotonic() - self._catalog_at > CATALOG_TTL_S:
            try:
                # public: no key, so a key's rate limit or refusal does not hide the list
                answer = await self.http.call("GET", self.http.url("videos/models"), key, {})
                data = answer.body.get("data")
                self._catalog = {m["id"]: m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)} \
                    if isinstance(data, list) else {}
                self._catalog_at = time.monotonic()
            except UpstreamError as exc:
                self._catalog_at = time.monotonic() - CATALOG_TTL_S + 60.0  # try again in a minute
                log.info("OpenRouter model list not read", extra={"upstream": self.name, "error": exc.message})
        return self._catalog.get(model, {})

    async def status(self, job_id: str, key: UpstreamKey) -> UpstreamStatus:
        url = self._polling.get(job_id) or self.http.url(f"videos/{job_id}")
        answer = await self.http.call("GET", url, key, _auth(key))
        status = to_status(answer.body)
        if status.status == "failed":
            self._polling.pop(job_id, None)
        return clean_status(status, self.redact, (key.secret,))

    def callback_job(self, document: dict[str, Any]) -> str | None:
        """The job a callback is about: `data.id` of its `video.generation.*` envelope."""
        data = document.get("data")
        job_id = data.get("id") if isinstance(data, dict) else None
        return job_id if isinstance(job_id, str) and _ID.fullmatch(job_id) else None

    async def download(self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus,
                       variant: str) -> AsyncIterator[bytes] | None:
        if variant != "video":
            return None
        self._polling.pop(upstream_id, None)
        url = final.video_url or self.http.url(f"videos/{upstream_id}/content?index=0")
        return await self.http.download(url, key, _auth(key))

    def _error(self, status: int, reason: str | None, headers: Mapping[str, str], body: bytes,
               key: UpstreamKey) -> UpstreamError:
        """`{"error": {"code": <int>, "message", "metadata"}}`; a 403 is moderation (`metadata.reasons`)."""
        document = json_document(body)
        error = document.get("error") if isinstance(document, dict) else None
        message = error.get("message") if isinstance(error, dict) and isinstance(error.get("message"), str) else None
        if status == 403:  # the moderation's own words tell the client what to change
            text = self.redact.outside_text(message or "refused by moderation", (key.secret,), 300)
            return UpstreamError(f"upstream {self.name} refused the prompt (HTTP 403): {text}", status=403,
                                 code="content_policy_violation", param="prompt")
        if isinstance(error, dict):  # its numeric code says nothing the status does not
            body = orjson.dumps({"error": {"message": message}})
        return error_from_status(status, reason, headers, body, upstream=self.name, redact=self.redact,
                                 secrets=(key.secret,))


def to_status(job: dict[str, Any]) -> UpstreamStatus:
    status = STATES.get(job.get("status"), "in_progress") if isinstance(job.get("status"), str) else "in_progress"
    if status == "completed":
        urls = job.get("unsigned_urls")
        url = urls[0] if isinstance(urls, list) and urls and isinstance(urls[0], str) else None
        return UpstreamStatus("completed", 100.0, video_url=url)
    if status == "in_progress":
        return UpstreamStatus("in_progress", progress_estimated=True)
    if status != "failed":
        return UpstreamStatus(status)  # type: ignore[arg-type]
    error = job.get("error") if isinstance(job.get("error"), str) else ""
    refused = bool(_REFUSAL.search(error))
    code = "content_policy_violation" if refused else {"cancelled": "cancelled", "expired": "expired"}.get(
        job["status"], "upstream_error")
    return UpstreamStatus("failed", error_code=code, refused=refused,
                          error_message=error or f"the provider reported the job {job['status']}")


def _fits(capabilities: dict[str, Any], field: str, value: Any) -> bool:
    allowed = capabilities.get(field)
    return not isinstance(allowed, list) or not allowed or value in allowed


def _sizes(capabilities: dict[str, Any]) -> str:
    ratios = capabilities.get("supported_aspect_ratios") or ["16:9", "9:16", "1:1", "…"]
    resolutions = capabilities.get("supported_resolutions") or ["480p", "720p", "1080p", "…"]
    return f"aspect ratios {', '.join(ratios)} at {', '.join(resolutions)} (e.g. 1280x720 is 16:9 at 720p)"


def _auth(key: UpstreamKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}
