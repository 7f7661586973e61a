"""Replicate's predictions API: `POST /models/{owner}/{name}/predictions` (or `POST /predictions` with a `version`
for `owner/name:version`), `GET /predictions/{id}` until `succeeded | failed | canceled`, then the `output` URL.

Outputs are deleted an hour after the prediction ends, so the video is copied into the store as soon as it is
there (the lifecycle does that before the job completes). Input names differ per model (`image`, `start_image`,
`first_frame_image`); MODELS says which, and what durations and resolutions each takes.

Replicate has no progress figure: a running prediction's `logs` text often ends with the model's tqdm bar
(" 42%|████▏     | 21/50"), whose last percentage is its progress; without one the gateway estimates.
"""
from __future__ import annotations

import base64
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.upstream import GenerationSpec, UpstreamError, UpstreamKey, UpstreamStatus
from gateway.upstreams.http import clean_status, error_from_status, json_document
from gateway.upstreams.log_progress import percent_in
from gateway.upstreams.provider_http import ProviderUpstream
from gateway.upstreams.reconcile import Claims
from gateway.upstreams.shapes import aspect_and_resolution, cannot

if TYPE_CHECKING:
    pass

log = logging.getLogger("gateway.upstreams")
STATES = {"starting": "queued", "processing": "in_progress", "succeeded": "completed", "failed": "failed",
          "canceled": "failed", "cancelled": "failed"}
_REFUSAL = re.compile(r"nsfw|flagged|safety|content policy|sensitive", re.IGNORECASE)
_ID = re.compile(r"[A-Za-z0-9]{1,64}")


@dataclass(frozen=True, slots=True)
class Model:
    """What the models under one id prefix take."""

    prefix: str
    seconds: tuple[int, ...]
    image_field: str = "image"
    aspect_ratios: tuple[str, ...] | None = None  # None: no aspect_ratio input
    resolutions: tuple[str, ...] | None = None  # None: no resolution input
    size: Callable[[str], str] | None = None  # a model that takes `size` in its own format instead
    image_required: bool = False


MODELS = (
    Model("google/veo-3.1", (4, 6, 8), "image", ("16:9", "9:16"), ("720p", "1080p")),
    Model("google/veo-3", (4, 6, 8), "image", ("16:9", "9:16"), ("720p", "1080p")),
    Model("kwaivgi/kling-v2.1", (5, 10), "start_image", image_required=True),
    Model("kwaivgi/kling", (5, 10), "start_image", ("16:9", "9:16", "1:1")),
    Model("minimax/hailuo", (6, 10), "first_frame_image", None, ("768p", "1080p")),
    Model("bytedance/seedance", tuple(range(2, 13)), "image", ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9"),
          ("480p", "720p", "1080p")),
    Model("wan-video/", (5, 10), "image", size=lambda size: size.replace("x", "*")),
    Model("runwayml/gen4-turbo", (5, 10), "image", ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9"),
          image_required=True),
)
GENERIC = Model("", (), "image")  # a model the table does not know: prompt, duration and image only


def model_of(model: str) -> Model:
    return next((m for m in MODELS if model.startswith(m.prefix)), GENERIC)


class ReplicateUpstream(ProviderUpstream):
    kind = "replicate"
    faults: dict = {}  # Replicate's statuses mean what the common rows say (422: the input; 429: nothing created)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claimed = Claims()  # predictions this process follows

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of:
            raise UpstreamError(f"upstream {self.name} (Replicate) cannot remix a video", status=400)
        model = (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model
        name, _, version = model.partition(":")
        body: dict[str, Any] = {"input": self.input(spec, name)}
        if self.callbacks is not None:  # the end only: the poll it prompts reads everything else
            body["webhook"], body["webhook_events_filter"] = self.callbacks.url, ["completed"]
        if version:  # a community model is run by version id
            url, body["version"] = self.http.url("predictions"), version
        else:
            url = self.http.url(f"models/{name}/predictions")
        answer = await self.http.call("POST", url, key, _auth(key), json=body, operation="submit")
        prediction_id = answer.body.get("id")
        if not isinstance(prediction_id, str) or not _ID.fullmatch(prediction_id):
            raise UpstreamError(f"upstream {self.name} answered a create without a prediction id", status=502)
        return self._claimed.add(prediction_id)

    async def find_created(self, spec: GenerationSpec, key: UpstreamKey, sent_at: float) -> str | None:
        """After a create whose answer was lost, the prediction it made: one of the key's newest predictions
        with this input, created around then, that no job follows yet. None when there is none; raises
        UpstreamError when the list cannot be read."""
        model = (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model
        sent = self.input(spec, model.partition(":")[0])
        answer = await self.http.call("GET", self.http.url("predictions"), key, _auth(key))
        return self._claimed.claim_made(answer.body.get("results"), sent_at,
                                        lambda prediction: _same_input(prediction.get("input"), sent), _ID.fullmatch)

    def check(self, spec: GenerationSpec) -> None:
        """Raise the 400 a request for `spec` would get before any call (UpstreamError); check-config uses it."""
        model = (spec.image_model or spec.upstream_model) if spec.image else spec.upstream_model
        self.input(spec, model.partition(":")[0])

    def input(self, spec: GenerationSpec, model: str) -> dict[str, Any]:
        table = model_of(model)
        if table.seconds and spec.seconds not in table.seconds:
            raise cannot(self.name, model, f"{spec.seconds}-second videos", "seconds",
                         f"{', '.join(map(str, table.seconds))} seconds")
        if table.image_required and spec.image is None:
            raise UpstreamError(f"{model} (upstream {self.name}) makes videos from an image only; send an "
                                "input image (input_reference, or an image_url part in chat)", status=400,
                                code="invalid_value", param="input_reference")
        body: dict[str, Any] = {**spec.params, "prompt": spec.prompt, "duration": spec.seconds}
        shape = aspect_and_resolution(spec.size)
        if table.aspect_ratios is not None or table.resolutions is not None:
            fits = shape is not None and (table.aspect_ratios is None or shape[0] in table.aspect_ratios) \
                and (table.resolutions is None or shape[1] in table.resolutions)
            if not fits:
                ratios = ", ".join(table.aspect_ratios or ("the model's own aspect ratio",))
                resolutions = ", ".join(table.resolutions or ("its own resolution",))
                raise cannot(self.name, model, f"{spec.size} videos", "size",
                             f"aspect ratios {ratios} at {resolutions} (e.g. 1280x720 is 16:9 at 720p)")
            if table.aspect_ratios is not None:
                body["aspect_ratio"] = shape[0]
            if table.resolutions is not None:
                body["resolution"] = shape[1]
        if table.size is not None:
            body["size"] = table.size(spec.size)
        if spec.image is not None:
            data = base64.b64encode(spec.image.data).decode("ascii")
            body[table.image_field] = f"data:{spec.image.mime};base64,{data}"
        return body

    async def status(self, prediction_id: str, key: UpstreamKey) -> UpstreamStatus:
        answer = await self.http.call("GET", self.http.url(f"predictions/{prediction_id}"), key, _auth(key))
        return clean_status(to_status(answer.body), self.redact, (key.secret,))

    def callback_job(self, document: dict[str, Any]) -> str | None:
        """The prediction a callback is about: its body is the prediction object."""
        prediction_id = document.get("id")
        return prediction_id if isinstance(prediction_id, str) and _ID.fullmatch(prediction_id) else None

    async def download(self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus,
                       variant: str) -> AsyncIterator[bytes] | None:
        if variant != "video" or not final.video_url:
            return None
        # replicate.delivery links are public: through the fetch guard, without the key
        return await self.http.download(final.video_url, key, _auth(key))

    def _error(self, status: int, reason: str | None, headers: Mapping[str, str], body: bytes,
               key: UpstreamKey) -> UpstreamError:
        """`{"title", "detail", "status"}`, with `invalid_fields` naming the input that is wrong on a 422."""
        document = json_document(body)
        if isinstance(document, dict) and isinstance(document.get("detail"), str):
            fields = document.get("invalid_fields") if isinstance(document.get("invalid_fields"), list) else []
            field = fields[0].get("field") if fields and isinstance(fields[0], dict) else None
            param = field.removeprefix("input.") if isinstance(field, str) and field else None
            body = orjson.dumps({"error": {"message": document["detail"], "param": param}})
        return error_from_status(status, reason, headers, body, upstream=self.name, redact=self.redact,
                                 secrets=(key.secret,))


def to_status(prediction: dict[str, Any]) -> UpstreamStatus:
    raw = prediction.get("status")
    status = STATES.get(raw, "in_progress") if isinstance(raw, str) else "in_progress"
    if status == "completed":
        output = prediction.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if prediction.get("data_removed") or not isinstance(url, str):
            return UpstreamStatus("failed", error_code="upstream_error",
                                  error_message="the provider's output is gone (Replicate deletes it after an hour)")
        return UpstreamStatus("completed", 100.0, video_url=url)
    if status == "queued":
        return UpstreamStatus("queued")
    if status == "in_progress":
        logs = prediction.get("logs")
        percent = percent_in(logs) if isinstance(logs, str) else None
        if percent is None:
            return UpstreamStatus("in_progress", progress_estimated=True)
        return UpstreamStatus("in_progress", percent)
    error = prediction.get("error") if isinstance(prediction.get("error"), str) else ""
    refused = bool(_REFUSAL.search(error))
    code = "content_policy_violation" if refused else ("cancelled" if raw != "failed" else "upstream_error")
    return UpstreamStatus("failed", error_code=code, refused=refused,
                          error_message=error or f"the provider reported the prediction {raw}")


def _same_input(echoed: Any, sent: dict[str, Any]) -> bool:
    """The prediction's input is the one sent: every scalar input equal (files may come back as other URLs)."""
    if not isinstance(echoed, dict):
        return False
    return all(echoed.get(name) == value for name, value in sent.items()
               if not (isinstance(value, str) and value.startswith("data:")))


def _auth(key: UpstreamKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}
