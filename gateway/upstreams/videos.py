"""The OpenAI Videos API dialect: POST /videos (or /videos/edits, /videos/extensions, /videos/characters),
GET /videos/{id} until terminal, GET .../content."""
from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.core.faults import is_refusal
from gateway.core.upstream import GenerationSpec, UpstreamError, UpstreamKey, UpstreamStatus, VideoInput
from gateway.observability.metrics import NULL_METRICS, MetricsSink
from gateway.redaction import NO_SECRETS, Redactor
from gateway.upstreams.http import DownloadBody, clean_status, connection_error, error_from_status
from gateway.upstreams.list_poll import PAGE_SIZE, ListPoller
from gateway.upstreams.reconcile import Claims

MAX_CONNECTIONS = 128  # per upstream
# An idle connection is given up before common servers close theirs (uvicorn and many proxies: 5 s), so a busy
# event loop never sends a create on a connection the server is closing (a reset, counted against the key).
IDLE_CONNECTION_S = 4.0
_DOWNLOADS = 16  # of which content downloads may hold at most this many
_MAX_ERROR_BODY = 64 * 1024


class VideosUpstream:
    """The Videos API dialect over aiohttp.

    This adapter makes most of the gateway's upstream calls (a create per job, list polls, content downloads),
    thousands at a time under load; aiohttp costs about a tenth of a millisecond of CPU per call where httpx's
    pool costs milliseconds at that concurrency (see bench/README.md).
    """

    kind = "videos"
    features = frozenset({"edits", "extensions", "characters"})

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_s: float,
        poll_interval_s: float,
        metrics: MetricsSink = NULL_METRICS,
        redact: Redactor = NO_SECRETS,
    ) -> None:
        """`redact` knows every configured secret: each upstream error and failed job passes through it."""
        self.name = name
        self.redact = redact
        self.base_url = base_url.rstrip("/")
        self.poll_interval_s = poll_interval_s
        self.metrics = metrics
        self._pollers: dict[str, ListPoller] = {}
        self._claimed = Claims()  # videos this process follows
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # A download may take longer than one call in total; it must keep moving, though.
        self._download_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._gate = asyncio.Semaphore(MAX_CONNECTIONS - _DOWNLOADS)
        self._download_gate = asyncio.Semaphore(_DOWNLOADS)

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made inside the running event loop on first use."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS,
                                               keepalive_timeout=IDLE_CONNECTION_S),
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )
        return self._session

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        if spec.remix_of:
            video = await self._call("POST", f"/videos/{spec.remix_of}/remix", key,
                                     json=_with_characters({"prompt": spec.prompt}, spec.characters))
        elif spec.operation != "create":
            video = await self._source_job(spec, key)
        elif spec.image is not None:
            form = _multipart(_form(spec), spec.characters)
            form.add_field("input_reference", spec.image.data, filename=spec.image.filename,
                           content_type=spec.image.mime)
            video = await self._call("POST", "/videos", key, data=form)
        else:
            video = await self._call("POST", "/videos", key, json=_with_characters(_form(spec), spec.characters))
        if not isinstance(video.get("id"), str):
            raise UpstreamError("upstream answered a create without a video id", status=502)
        return self._claimed.add(video["id"])

    async def find_created(self, spec: GenerationSpec, key: UpstreamKey, sent_at: float) -> str | None:
        """After a create whose answer was lost, the video it made: on the key's newest page of videos, one with
        this prompt (and model, size and length, or remix source), created around then, that no job follows yet.
        None when there is none; raises UpstreamError when the list cannot be read."""
        page = await self._call("GET", "/videos", key, params=_page(None))
        wanted = {"prompt": spec.prompt}
        if spec.remix_of:
            wanted["remixed_from_video_id"] = spec.remix_of
        elif spec.operation == "create":
            wanted.update(model=spec.upstream_model, size=spec.size, seconds=str(spec.seconds))
        return self._claimed.claim_made(
            page.get("data"), sent_at, lambda video: all(str(video.get(n)) == v for n, v in wanted.items()))

    async def _source_job(self, spec: GenerationSpec, key: UpstreamKey) -> dict[str, Any]:
        """POST /videos/edits or /videos/extensions, of an upstream video by id or of an uploaded MP4."""
        path = "/videos/edits" if spec.operation == "edit" else "/videos/extensions"
        fields: dict[str, str] = {"prompt": spec.prompt}
        if spec.operation == "extension":
            fields["seconds"] = str(spec.seconds)
        source_id = spec.edit_of or spec.extend_of
        if source_id is not None:
            body = _with_characters({**fields, "video": {"id": source_id}}, spec.characters)
            return await self._call("POST", path, key, json=body)
        if spec.video is None:
            raise UpstreamError(f"an {spec.operation} needs a source video", status=400)
        form = _multipart(fields, spec.characters)
        form.add_field("video", spec.video.data, filename=spec.video.filename, content_type=spec.video.mime)
        return await self._call("POST", path, key, data=form)

    async def create_character(self, name: str, video: VideoInput, key: UpstreamKey) -> str:
        form = aiohttp.FormData()
        form.add_field("name", name)
        form.add_field("video", video.data, filename=video.filename, content_type=video.mime)
        character = await self._call("POST", "/videos/characters", key, data=form)
        if not isinstance(character.get("id"), str):
            raise UpstreamError("upstream answered a character create without an id", status=502)
        return character["id"]

    async def status(self, upstream_id: str, key: UpstreamKey) -> UpstreamStatus:
        return self._status(await self._call("GET", f"/videos/{upstream_id}", key), key)

    def _status(self, video: dict[str, Any], key: UpstreamKey) -> UpstreamStatus:
        return clean_status(to_status(video), self.redact, (key.secret,))

    def track(self, upstream_id: str, key: UpstreamKey) -> AsyncIterator[UpstreamStatus]:
        """Status snapshots until terminal. All jobs of a key share one list call per poll interval; a transient
        poll failure is retried on the next tick."""
        poller = self._pollers.get(key.label)
        if poller is None:
            poller = self._pollers[key.label] = ListPoller(
                lambda after: self._call("GET", "/videos", key, params=_page(after)),
                lambda job_id: self.status(job_id, key), lambda video: self._status(video, key),
                self.poll_interval_s)
        return poller.follow(upstream_id)

    async def download(
        self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus, variant: str
    ) -> AsyncIterator[bytes] | None:
        url = f"{self.base_url}/videos/{upstream_id}/content"
        await self._download_gate.acquire()  # released when the body has been read (or given up)
        try:
            with self.metrics.upstream_call(self.name, key.label, "download") as call:
                response = await self._client().get(url, params={"variant": variant}, headers=_auth(key),
                                                    timeout=self._download_timeout)
                call.status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._download_gate.release()
            raise UpstreamError(f"upstream {self.name} content download failed: {type(exc).__name__}") from None
        except BaseException:
            self._download_gate.release()
            raise
        if response.status >= 400:
            body = await _bounded(response)
            response.release()
            self._download_gate.release()
            if response.status in (400, 404) and variant != "video":
                return None
            raise self._error(response.status, response.reason, response.headers, body, key)
        return DownloadBody(response, self._download_gate)

    async def aclose(self) -> None:
        for poller in self._pollers.values():
            await poller.aclose()
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, key: UpstreamKey, **kwargs: Any) -> dict[str, Any]:
        operation = "submit" if method == "POST" else "poll"
        try:
            async with self._gate:
                with self.metrics.upstream_call(self.name, key.label, operation) as call:
                    async with self._client().request(method, self.base_url + path, headers=_auth(key),
                                                      timeout=self._timeout, **kwargs) as response:
                        call.status = response.status
                        body = await response.read()
                        status, reason, headers = response.status, response.reason, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_error(self.name, exc) from None
        if status >= 400:
            raise self._error(status, reason, headers, body[:_MAX_ERROR_BODY], key)
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name} answered with invalid JSON", status=502) from None
        if not isinstance(decoded, dict):
            raise UpstreamError(f"upstream {self.name} answered with an unexpected body", status=502)
        return decoded

    def _error(self, status: int, reason: str | None, headers: Any, body: bytes, key: UpstreamKey) -> UpstreamError:
        return error_from_status(status, reason, headers, body, upstream=self.name, redact=self.redact,
                                 secrets=(key.secret,))


def to_status(video: dict[str, Any]) -> UpstreamStatus:
    status = video.get("status")
    if not isinstance(status, str) or status not in ("queued", "in_progress", "completed", "failed"):
        status = "in_progress"
    progress = video.get("progress")
    known = isinstance(progress, (int, float)) and not isinstance(progress, bool) and math.isfinite(progress)
    progress = min(max(float(progress), 0.0), 100.0) if known else 0.0
    if status == "in_progress" and not known:  # a relay that leaves the figure out: the gateway estimates
        return UpstreamStatus("in_progress", progress_estimated=True)
    if status != "failed":
        return UpstreamStatus(status, 100.0 if status == "completed" else progress)
    error = video.get("error") if isinstance(video.get("error"), dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) and error.get("code") else "upstream_error"
    message = error.get("message") if isinstance(error.get("message"), str) else None
    return UpstreamStatus(
        "failed",
        progress,
        error_code=code,
        error_message=message or "the upstream reported a failed video",
        refused=is_refusal(code),
    )


def _page(after: str | None) -> dict[str, str | int]:
    params: dict[str, str | int] = {"limit": PAGE_SIZE, "order": "desc"}
    if after:
        params["after"] = after
    return params


def _with_characters(body: dict[str, Any], characters: tuple[str, ...]) -> dict[str, Any]:
    return {**body, "characters": [{"id": c} for c in characters]} if characters else body


def _multipart(fields: dict[str, str], characters: tuple[str, ...]) -> aiohttp.FormData:
    """A form as the openai SDK writes one: an array of objects as repeated `characters[][id]` fields."""
    form = aiohttp.FormData()
    for field, value in fields.items():
        form.add_field(field, value)
    for character in characters:
        form.add_field("characters[][id]", character)
    return form


def _form(spec: GenerationSpec) -> dict[str, str]:
    return {"model": spec.upstream_model, "prompt": spec.prompt, "size": spec.size, "seconds": str(spec.seconds)}


def _auth(key: UpstreamKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        return b""


