"""fal's queue API: `POST {base_url}/{model_id}` (`Authorization: Key …`), then the `status_url` it returns (HTTP 202
while `IN_QUEUE`/`IN_PROGRESS`, 200 once `COMPLETED`), then the `response_url` for the output, whose `video.url` is
a public CDN link. A request that failed still reaches `COMPLETED`: the failure is in the status's `error` or in
the answer of the result GET (422 `detail[]`, `content_policy_violation` for a refusal).

The status is read with `?logs=1`: while `IN_QUEUE` it carries `queue_position`, and while `IN_PROGRESS` the
model's log lines, whose newest percentage or step count ("42%", "step 21/50") is the job's progress. A log with
none leaves the figure to the gateway's estimate.

Each model family takes its own input (`duration` as `"8s"` for Veo, `"5"` for Kling; `image_url` or
`start_image_url`), and image-to-video is a separate model id; FAMILIES says which, and the config's
`upstream_model_image` overrides the image model it derives.
"""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from gateway.core.upstream import GenerationSpec, UpstreamError, UpstreamKey, UpstreamStatus
from gateway.upstreams.http import clean_status, error_from_status, json_document
from gateway.upstreams.log_progress import newest_percent
from gateway.upstreams.provider_http import ProviderUpstream

if TYPE_CHECKING:
    pass
from gateway.upstreams.shapes import aspect_and_resolution, cannot

STATES = {"IN_QUEUE": "queued", "IN_PROGRESS": "in_progress", "COMPLETED": "completed"}
FAILED_STATES = ("FAILED", "CANCELED", "CANCELLED", "ERROR")  # seen in third-party schemas, not in fal's SDK


def _to_image_to_video(model: str) -> str:
    return model.replace("text-to-video", "image-to-video") if "text-to-video" in model \
        else model + "/image-to-video"


@dataclass(frozen=True, slots=True)
class Family:
    """What the models under one id prefix take."""

    prefix: str
    seconds: tuple[int, ...]
    duration: Callable[[int], str]
    aspect_ratios: tuple[str, ...] | None  # None: the model takes no aspect_ratio
    resolutions: tuple[str, ...] | None
    image_field: str = "image_url"


FAMILIES = (
    Family("fal-ai/veo3.1", (4, 6, 8), lambda s: f"{s}s", ("16:9", "9:16"), ("720p", "1080p", "4k")),
    Family("fal-ai/veo3", (4, 6, 8), lambda s: f"{s}s", ("16:9", "9:16"), ("720p", "1080p")),
    Family("fal-ai/kling-video/v3", tuple(range(3, 16)), str, ("16:9", "9:16", "1:1"), None, "start_image_url"),
    Family("fal-ai/kling-video", (5, 10), str, ("16:9", "9:16", "1:1"), None),
    Family("fal-ai/minimax", (6, 10), str, None, None),
    Family("fal-ai/bytedance/seedance", tuple(range(2, 13)), str, ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16"),
           ("480p", "720p", "1080p")),
    Family("bytedance/seedance-2.0", tuple(range(4, 16)), str, ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16"),
           ("480p", "720p", "1080p", "4k")),
    Family("wan/", (5, 10, 15), str, None, ("720p", "1080p")),
    Family("fal-ai/wan", (5, 10), str, None, ("720p", "1080p")),
)
GENERIC = Family("", (), str, None, None)  # a model the table does not know: prompt, duration and image only


def family_of(model: str) -> Family:
    return next((f for f in FAMILIES if model.startswith(f.prefix)), GENERIC)


class FalUpstream(ProviderUpstream):
    kind = "fal"
    on_ambiguous_create = "fail"  # no list to look a lost create up in: never risk paying twice
    faults: dict = {}  # fal's statuses mean what the common rows say; its quirks are in the answers' bodies

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._status_urls: dict[str, str] = {}
        self._completed: set[str] = set()  # status said COMPLETED: the next read goes straight to the result

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of:
            raise UpstreamError(f"upstream {self.name} (fal) cannot remix a video", status=400)
        model = spec.upstream_model
        if spec.image is not None:
            model = spec.image_model or _to_image_to_video(spec.upstream_model)
        url = self.http.url(model)
        if self.callbacks is not None:
            url += "?fal_webhook=" + quote(self.callbacks.url, safe="")
        answer = await self.http.call("POST", url, key, _auth(key), json=self.input(spec, model),
                                      operation="submit")
        response_url, status_url = answer.body.get("response_url"), answer.body.get("status_url")
        if not isinstance(response_url, str) or not self.http.on_own_origin(response_url):
            raise UpstreamError(f"upstream {self.name} answered a submit without a usable response_url", status=502)
        # The URLs name only {owner}/{app}, not the model's subpath: keep what fal returned, never rebuild it.
        upstream_id = response_url.removeprefix(self.http.base_url + "/")
        if isinstance(status_url, str) and self.http.on_own_origin(status_url):
            self._status_urls[upstream_id] = status_url
        return upstream_id

    def check(self, spec: GenerationSpec) -> None:
        """Raise the 400 a request for `spec` would get before any call (UpstreamError); check-config uses it."""
        self.input(spec, spec.upstream_model)

    def input(self, spec: GenerationSpec, model: str) -> dict[str, Any]:
        family = family_of(spec.upstream_model)
        body: dict[str, Any] = {**spec.params, "prompt": spec.prompt}
        if family.seconds and spec.seconds not in family.seconds:
            raise cannot(self.name, model, f"{spec.seconds}-second videos", "seconds",
                         f"{', '.join(map(str, family.seconds))} seconds")
        body["duration"] = family.duration(spec.seconds)
        shape = aspect_and_resolution(spec.size)
        if family.aspect_ratios is not None or family.resolutions is not None:
            fits = shape is not None and (family.aspect_ratios is None or shape[0] in family.aspect_ratios) \
                and (family.resolutions is None or shape[1] in family.resolutions)
            if not fits:
                raise cannot(self.name, model, f"{spec.size} videos", "size", _sizes(family))
        if family.aspect_ratios is not None and shape is not None:
            body["aspect_ratio"] = shape[0]
        if family.resolutions is not None and shape is not None:
            body["resolution"] = shape[1]
        if spec.image is not None:
            data = base64.b64encode(spec.image.data).decode("ascii")
            body[family.image_field] = f"data:{spec.image.mime};base64,{data}"
        return body

    async def status(self, upstream_id: str, key: UpstreamKey) -> UpstreamStatus:
        if upstream_id in self._completed:
            return await self.result(upstream_id, key)
        url = self._status_urls.get(upstream_id) or self.http.url(upstream_id + "/status")
        answer = await self.http.call("GET", url + ("&" if "?" in url else "?") + "logs=1", key, _auth(key))
        job = answer.body
        state = job.get("status") if isinstance(job.get("status"), str) else None
        if state in FAILED_STATES or job.get("error"):
            self._forget(upstream_id)
            return self._clean(_failure(job), key)
        if state == "COMPLETED" or (state is None and answer.status == 200):
            self._completed.add(upstream_id)
            return await self.result(upstream_id, key)
        return running(job)

    async def result(self, upstream_id: str, key: UpstreamKey) -> UpstreamStatus:
        try:
            answer = await self.http.call("GET", self.http.url(upstream_id), key, _auth(key))
        except UpstreamError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise  # a read: the next poll tries again
            refused = exc.code == "content_policy_violation"
            self._forget(upstream_id)
            return self._clean(UpstreamStatus("failed", error_code=exc.code or "upstream_error", refused=refused,
                                              error_message=exc.message), key)
        video = answer.body.get("video")
        url = video.get("url") if isinstance(video, dict) else None
        if not isinstance(url, str):
            return UpstreamStatus("failed", error_code="upstream_error",
                                  error_message="the provider's result has no video")
        return UpstreamStatus("completed", 100.0, video_url=url)

    def wake_id(self, upstream_id: str) -> str:
        return _request_id(upstream_id)  # fal's callbacks name the request alone

    def callback_job(self, document: dict[str, Any]) -> str | None:
        """The request a callback is about (`request_id`; its followers wait on that last part of our id)."""
        request_id = document.get("request_id")
        return request_id if isinstance(request_id, str) and request_id else None

    async def download(self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus,
                       variant: str) -> AsyncIterator[bytes] | None:
        self._forget(upstream_id)
        if variant != "video" or not final.video_url:
            return None
        # fal's CDN links are public: off the queue's origin they go through the fetch guard, without the key
        return await self.http.download(final.video_url, key, _auth(key))

    def _forget(self, upstream_id: str) -> None:
        self._status_urls.pop(upstream_id, None)
        self._completed.discard(upstream_id)

    def _clean(self, status: UpstreamStatus, key: UpstreamKey) -> UpstreamStatus:
        return clean_status(status, self.redact, (key.secret,))

    def _error(self, status: int, reason: str | None, headers: Mapping[str, str], body: bytes,
               key: UpstreamKey) -> UpstreamError:
        """`{"detail": "text" | [{"loc", "msg", "type"}]}`; a `content_policy_violation` detail is a refusal."""
        document = json_document(body)
        detail = document.get("detail") if isinstance(document, dict) else None
        if isinstance(detail, list):
            items = [d for d in detail if isinstance(d, dict)]
            refused = any(d.get("type") == "content_policy_violation" for d in items)
            first = items[0] if items else {}
            loc = first.get("loc") if isinstance(first.get("loc"), list) else []
            message = "; ".join(str(d.get("msg")) for d in items if d.get("msg")) or None
            body = orjson.dumps({"error": {
                "message": message, "code": "content_policy_violation" if refused else "invalid_value",
                "param": str(loc[-1]) if loc and loc[0] == "body" else None}})
        return error_from_status(status, reason, headers, body, upstream=self.name, redact=self.redact,
                                 secrets=(key.secret,))


def running(job: dict[str, Any]) -> UpstreamStatus:
    """A job not done yet: its place in the queue, or its progress as its logs tell it."""
    state = job.get("status")
    if isinstance(state, str) and STATES.get(state) == "queued":
        position = job.get("queue_position")
        known = isinstance(position, int) and not isinstance(position, bool) and position >= 0
        return UpstreamStatus("queued", queue_position=position if known else None)
    logs = job.get("logs") if isinstance(job.get("logs"), list) else []
    messages = [entry["message"] for entry in logs if isinstance(entry, dict) and isinstance(entry.get("message"), str)]
    percent = newest_percent(messages)
    if percent is None:
        return UpstreamStatus("in_progress", progress_estimated=True)
    return UpstreamStatus("in_progress", percent)


def _failure(job: dict[str, Any]) -> UpstreamStatus:
    error = job.get("error")
    text = error if isinstance(error, str) else orjson.dumps(error).decode() if error else None
    kind = job.get("error_type") if isinstance(job.get("error_type"), str) else None
    refused = kind == "content_policy_violation"
    return UpstreamStatus("failed", error_code=kind or "upstream_error", refused=refused,
                          error_message=text or f"the provider reported the request {job.get('status')}")


def _request_id(upstream_id: str) -> str:
    """`{owner}/{app}/requests/{request_id}` → the request id fal's callbacks name."""
    return upstream_id.rsplit("/", 1)[-1]


def _sizes(family: Family) -> str:
    ratios = ", ".join(family.aspect_ratios or ("any aspect ratio",))
    resolutions = ", ".join(family.resolutions or ("its own resolution",))
    return f"aspect ratios {ratios} at {resolutions} (e.g. 1280x720 is 16:9 at 720p)"


def _auth(key: UpstreamKey) -> dict[str, str]:
    return {"Authorization": f"Key {key.secret}"}
