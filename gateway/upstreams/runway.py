"""Runway's API: `POST /text_to_video` or `/image_to_video` (strict bodies: the wrong endpoint is a 400), then
`GET /tasks/{id}` until `SUCCEEDED | FAILED | CANCELLED`; every call carries `X-Runway-Version`.

`THROTTLED` is a task waiting for a concurrency slot: queued, not failed. `RUNNING` carries `progress` as a
fraction. `SAFETY.*` failure codes are moderation: refusals. Output URLs are signed and expire in a day or two,
so the video is copied into the store at once.
"""
from __future__ import annotations

import base64
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core.upstream import GenerationSpec, UpstreamError, UpstreamKey, UpstreamStatus
from gateway.upstreams.http import clean_status, error_from_status, json_document
from gateway.upstreams.provider_http import ProviderUpstream
from gateway.upstreams.shapes import cannot

API_VERSION = "2024-11-06"
STATES = {"PENDING": "queued", "THROTTLED": "queued", "RUNNING": "in_progress", "SUCCEEDED": "completed",
          "FAILED": "failed", "CANCELLED": "failed"}
_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")
_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_GEN4_I2V_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    seconds: tuple[int, ...]
    text_ratios: tuple[str, ...] | None  # None: image-to-video only
    image_ratios: tuple[str, ...]


MODELS = {m.name: m for m in (
    Model("gen4.5", tuple(range(2, 11)), ("1280:720", "720:1280"), _GEN4_I2V_RATIOS),
    Model("gen4_turbo", (5, 10), None, _GEN4_I2V_RATIOS),
    Model("veo3.1", (4, 6, 8), _VEO_RATIOS, _VEO_RATIOS),
    Model("veo3.1_fast", (4, 6, 8), _VEO_RATIOS, _VEO_RATIOS),
    Model("veo3", (8,), _VEO_RATIOS, _VEO_RATIOS),
)}


class RunwayUpstream(ProviderUpstream):
    kind = "runway"
    on_ambiguous_create = "fail"  # no list to look a lost create up in: never risk paying twice
    faults: dict = {}  # Runway's statuses mean what the common rows say

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of:
            raise UpstreamError(f"upstream {self.name} (Runway) cannot remix a video", status=400)
        model = (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model
        endpoint, body = self.request(spec, model)
        answer = await self.http.call("POST", self.http.url(endpoint), key, _headers(key), json=body,
                                      operation="submit")
        task_id = answer.body.get("id")
        if not isinstance(task_id, str) or not _ID.fullmatch(task_id):
            raise UpstreamError(f"upstream {self.name} answered a create without a task id", status=502)
        return task_id

    def check(self, spec: GenerationSpec) -> None:
        """Raise the 400 a request for `spec` would get before any call (UpstreamError); check-config uses it."""
        self.request(spec, (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model)

    def request(self, spec: GenerationSpec, model: str) -> tuple[str, dict[str, Any]]:
        """The endpoint and its body; Runway's sizes are its ratios (`1280x720` is `1280:720`)."""
        table = MODELS.get(model)
        ratio = spec.size.replace("x", ":")
        body: dict[str, Any] = {**spec.params, "model": model, "promptText": spec.prompt, "ratio": ratio,
                                "duration": spec.seconds}
        if table is not None:
            if spec.image is None and table.text_ratios is None:
                raise UpstreamError(f"{model} (upstream {self.name}) makes videos from an image only; send an "
                                    "input image (input_reference, or an image_url part in chat)", status=400,
                                    code="invalid_value", param="input_reference")
            ratios = table.image_ratios if spec.image is not None else table.text_ratios or ()
            if ratio not in ratios:
                raise cannot(self.name, model, f"{spec.size} videos", "size",
                             ", ".join(r.replace(":", "x") for r in ratios))
            if spec.seconds not in table.seconds:
                raise cannot(self.name, model, f"{spec.seconds}-second videos", "seconds",
                             f"{', '.join(map(str, table.seconds))} seconds")
        if spec.image is None:
            return "text_to_video", body
        data = base64.b64encode(spec.image.data).decode("ascii")
        body["promptImage"] = f"data:{spec.image.mime};base64,{data}"
        return "image_to_video", body

    async def status(self, task_id: str, key: UpstreamKey) -> UpstreamStatus:
        answer = await self.http.call("GET", self.http.url(f"tasks/{task_id}"), key, _headers(key))
        return clean_status(to_status(answer.body), self.redact, (key.secret,))

    async def download(self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus,
                       variant: str) -> AsyncIterator[bytes] | None:
        if variant != "video" or not final.video_url:
            return None
        # signed, public URLs: through the fetch guard, without the key
        return await self.http.download(final.video_url, key, _headers(key))

    def _error(self, status: int, reason: str | None, headers: Mapping[str, str], body: bytes,
               key: UpstreamKey) -> UpstreamError:
        """Runway's errors are `{"error": "text"}` (and sometimes `issues[]` naming the field)."""
        document = json_document(body)
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            issues = document.get("issues") if isinstance(document.get("issues"), list) else []
            path = issues[0].get("path") if issues and isinstance(issues[0], dict) else None
            param = str(path[0]) if isinstance(path, list) and path else None
            body = orjson.dumps({"error": {"message": document["error"], "param": param}})
        return error_from_status(status, reason, headers, body, upstream=self.name, redact=self.redact,
                                 secrets=(key.secret,))


def to_status(task: dict[str, Any]) -> UpstreamStatus:
    raw = task.get("status")
    status = STATES.get(raw, "in_progress") if isinstance(raw, str) else "in_progress"
    if status == "completed":
        output = task.get("output")
        url = output[0] if isinstance(output, list) and output and isinstance(output[0], str) else None
        if url is None:
            return UpstreamStatus("failed", error_code="upstream_error", error_message="the task has no output")
        return UpstreamStatus("completed", 100.0, video_url=url)
    if status == "in_progress":
        progress = _percent(task.get("progress"))
        if progress is None:  # a RUNNING answer without its fraction: the gateway estimates
            return UpstreamStatus("in_progress", progress_estimated=True)
        return UpstreamStatus("in_progress", progress)
    if status == "queued":
        return UpstreamStatus("queued")
    code = task.get("failureCode") if isinstance(task.get("failureCode"), str) else ""
    message = task.get("failure") if isinstance(task.get("failure"), str) else ""
    refused = code.startswith("SAFETY.")
    return UpstreamStatus("failed", error_code="content_policy_violation" if refused else
                          ("cancelled" if raw == "CANCELLED" else "upstream_error"), refused=refused,
                          error_message=(f"{message} ({code})" if code else message) or
                          f"the provider reported the task {raw}")


def _percent(progress: Any) -> float | None:
    if isinstance(progress, (int, float)) and not isinstance(progress, bool) and math.isfinite(progress):
        return min(max(float(progress) * 100.0, 0.0), 99.0)
    return None


def _headers(key: UpstreamKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}", "X-Runway-Version": API_VERSION}
