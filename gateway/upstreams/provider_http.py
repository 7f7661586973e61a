"""What the provider dialects (gemini, openrouter, fal, replicate, runway) share: JSON calls over one pooled
aiohttp session, polling one job until it ends, and downloads that carry the key only to the provider's own
origin."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import aiohttp
import orjson

from gateway.core.faults import Action, FaultRows, Operation, backoff_s, decide
from gateway.core.upstream import UpstreamError, UpstreamKey, UpstreamStatus
from gateway.net import FetchPolicy, Resolver, origin_of
from gateway.observability.metrics import NULL_METRICS, MetricsSink
from gateway.redaction import NO_SECRETS, Redactor
from gateway.upstreams.http import MAX_ERROR_BODY, DownloadBody, connection_error, error_from_status, guarded_download

if TYPE_CHECKING:
    from gateway.upstreams.callbacks import Callbacks

MAX_CONNECTIONS = 64  # per upstream
_DOWNLOADS = 8  # of which downloads may hold at most this many
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 4
MEDIA_TOTAL_S = 600.0
_LINK_GONE = frozenset({401, 403, 404, 410})  # statuses of a provider's link kept as they are

ErrorFor = Callable[[int, str | None, Mapping[str, str], bytes, UpstreamKey], UpstreamError]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


class ProviderHTTP:
    """The HTTP side of one provider upstream. `error_for` turns a failed answer into an UpstreamError in the
    fault table's terms (a dialect whose provider says "bad key" with a 400 translates it there)."""

    def __init__(self, name: str, base_url: str, *, timeout_s: float, metrics: MetricsSink = NULL_METRICS,
                 redact: Redactor = NO_SECRETS, max_media_bytes: int = 1024 ** 3, error_for: ErrorFor | None = None,
                 resolver: Resolver | None = None, media_transport: Any = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.own_origin = origin_of(self.base_url)
        self.metrics = metrics
        self.redact = redact
        self.max_media_bytes = max_media_bytes
        self.error_for = error_for or self.default_error
        self._resolver = resolver
        self._media_transport = media_transport
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._download_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._gate = asyncio.Semaphore(MAX_CONNECTIONS - _DOWNLOADS)
        self._download_gate = asyncio.Semaphore(_DOWNLOADS)
        self._session: aiohttp.ClientSession | None = None

    def url(self, path_or_url: str) -> str:
        """A path on the base URL, or a provider-given URL (absolute, or relative to the base URL's origin)."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        if path_or_url.startswith("/"):
            return urljoin(self.base_url + "/", path_or_url)
        return f"{self.base_url}/{path_or_url}"

    def on_own_origin(self, url: str) -> bool:
        return self.own_origin is not None and origin_of(url) == self.own_origin

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS),
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )
        return self._session

    async def call(self, method: str, url: str, key: UpstreamKey, headers: Mapping[str, str], *,
                   json: Any = None, operation: str = "poll") -> Answer:
        """One JSON call; the key goes only to the provider's own origin. Raises UpstreamError."""
        if not self.on_own_origin(url):
            raise UpstreamError(f"upstream {self.name} handed out a URL off its base_url origin; not followed",
                                status=502)
        try:
            async with self._gate:
                with self.metrics.upstream_call(self.name, key.label, operation) as call:
                    async with self._client().request(method, url, headers=dict(headers), json=json,
                                                      timeout=self._timeout, allow_redirects=False) as response:
                        call.status = response.status
                        body = await response.content.read(16 * 1024 * 1024)
                        status, reason, answer_headers = response.status, response.reason, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise connection_error(self.name, exc) from None
        if status >= 300:
            raise self.error_for(status, reason, answer_headers, body[:MAX_ERROR_BODY], key)
        try:
            decoded = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name} answered with invalid JSON", status=502) from None
        if not isinstance(decoded, dict):
            raise UpstreamError(f"upstream {self.name} answered with an unexpected body", status=502)
        return Answer(status, decoded)

    def default_error(self, status: int, reason: str | None, headers: Mapping[str, str], body: bytes,
                      key: UpstreamKey) -> UpstreamError:
        return error_from_status(status, reason, headers, body, upstream=self.name, redact=self.redact,
                                 secrets=(key.secret,))

    async def download(self, url: str, key: UpstreamKey, headers: Mapping[str, str],
                       variant: str = "video") -> AsyncIterator[bytes]:
        """The bytes at `url`, following redirects. Hops on the provider's origin carry `headers` (its key); a
        hop anywhere else goes through the fetch guard without them, like any URL from outside."""
        target = self.url(url)
        for _ in range(_MAX_REDIRECTS + 1):
            if not self.on_own_origin(target):
                return await self._guarded(target, key, variant)
            await self._download_gate.acquire()
            try:
                with self.metrics.upstream_call(self.name, key.label, "download") as call:
                    response = await self._client().get(target, headers=dict(headers), allow_redirects=False,
                                                        timeout=self._download_timeout)
                    call.status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._download_gate.release()
                raise UpstreamError(f"upstream {self.name} {variant} download failed: {type(exc).__name__}") \
                    from None
            except BaseException:
                self._download_gate.release()
                raise
            location = response.headers.get("location")
            if response.status in _REDIRECTS and location:
                response.release()
                self._download_gate.release()
                target = urljoin(target, location)
                continue
            if response.status >= 300:
                body = await _bounded(response)
                response.release()
                self._download_gate.release()
                raise self.error_for(response.status, response.reason, response.headers, body, key)
            return DownloadBody(response, self._download_gate)  # type: ignore[return-value]
        raise UpstreamError(f"upstream {self.name} redirected its {variant} more than {_MAX_REDIRECTS} times",
                            status=502)

    async def _guarded(self, url: str, key: UpstreamKey, variant: str) -> AsyncIterator[bytes]:
        policy = FetchPolicy(max_bytes=self.max_media_bytes, timeout_s=self._timeout_s, total_s=MEDIA_TOTAL_S,
                             what=f"the upstream's {variant} link")
        return await guarded_download(url, policy, key, upstream=self.name, link=f"its {variant} link",
                                      passed=_LINK_GONE, metrics=self.metrics, redact=self.redact,
                                      resolver=self._resolver, transport=self._media_transport)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class Wakeups:
    """Upstream job id → the events its followers wait on between polls, so a provider's callback (a hint that
    the job moved) makes them poll at once instead of at the next interval.

    A hint that comes before anyone waits on the id (the provider can be faster than the gateway writing down
    its job) is kept for a while, so the follower that starts then polls at once too. Both are bounded: a hint
    costs one poll, with the job's own key, and the answer of that poll is what counts."""

    def __init__(self, early_s: float = 60.0, early_max: int = 4096) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._early: dict[str, float] = {}  # id → when its hint came, oldest first
        self._early_s = early_s
        self._early_max = early_max

    @contextlib.contextmanager
    def watching(self, upstream_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        came = self._early.pop(upstream_id, None)
        if came is not None and time.monotonic() - came <= self._early_s:
            event.set()
        self._waiting.setdefault(upstream_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(upstream_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[upstream_id]

    def wake(self, upstream_id: str) -> bool:
        """Wake the followers of `upstream_id`; False when this process has none (the hint is kept a while)."""
        events = self._waiting.get(upstream_id)
        if events:
            for event in events:
                event.set()
            return True
        now = time.monotonic()
        self._early.pop(upstream_id, None)
        self._early[upstream_id] = now
        while self._early and (len(self._early) > self._early_max
                               or now - next(iter(self._early.values())) > self._early_s):
            self._early.pop(next(iter(self._early)))
        return False


async def _pause(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    try:
        async with asyncio.timeout(seconds):
            await wake.wait()
    except TimeoutError:
        pass
    wake.clear()


class ProviderUpstream:
    """What the provider dialects share: their HTTP side, polling one job until it ends (woken early by the
    provider's verified callbacks, where configured) and closing. A dialect adds `submit`, `download`,
    `status(upstream_id, key)` and `_error` (the fault table's reading of the provider's error answers), and
    `wake_id` where its callbacks name a job otherwise than its upstream id."""

    kind: str
    faults: FaultRows = {}

    def __init__(self, name: str, base_url: str, *, timeout_s: float, poll_interval_s: float,
                 metrics: MetricsSink = NULL_METRICS, redact: Redactor = NO_SECRETS,
                 max_media_bytes: int = 1024 ** 3, callbacks: Callbacks | None = None) -> None:
        self.name = name
        self.poll_interval_s = poll_interval_s
        self.redact = redact
        self.callbacks = callbacks  # the provider is asked to call back when a job ends; None: polling only
        self.http = ProviderHTTP(name, base_url, timeout_s=timeout_s, metrics=metrics, redact=redact,
                                 max_media_bytes=max_media_bytes, error_for=self._error)

    def wake_id(self, upstream_id: str) -> str:
        return upstream_id

    def track(self, upstream_id: str, key: UpstreamKey) -> AsyncIterator[UpstreamStatus]:
        return follow_job(lambda: self.status(upstream_id, key), self.poll_interval_s, self.faults,
                          self.callbacks.wakeups if self.callbacks else None, self.wake_id(upstream_id))

    async def aclose(self) -> None:
        await self.http.aclose()


async def follow_job(read: Callable[[], Awaitable[UpstreamStatus]], interval_s: float,
                     faults: FaultRows | None = None, wakeups: Wakeups | None = None,
                     wake_id: str = "") -> AsyncIterator[UpstreamStatus]:
    """Poll one job until a terminal status. A failed read is retried after a backoff when the fault table says
    so (5xx, 429, timeouts); one that says the job is gone is raised for the follower to count.

    With `wakeups`, a callback about `wake_id` ends the wait before the next read early: the status still comes
    from the read, so a callback can make a job's end known sooner but never decides it."""
    failures = 0
    with wakeups.watching(wake_id) if wakeups is not None else contextlib.nullcontext() as wake:
        while True:
            await _pause(min(interval_s * (2 ** min(failures, 5)), 60.0) if failures else interval_s, wake)
            try:
                status = await read()
            except UpstreamError as exc:
                if decide(Operation.POLL, exc.status, faults).action is Action.GONE:
                    raise
                failures += 1
                await _pause(backoff_s(failures, base=interval_s), wake)
                continue
            failures = 0
            if status.done:
                break
            yield status
    yield status  # the last one after the watch ended: a follower that stops here leaves nothing behind


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.content.read(MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        return b""
