"""Prometheus metrics of one gateway.

Each app gets its own `CollectorRegistry` (several apps may live in one process, as they do in the tests), held by
a `Metrics` object that the app factory passes to the parts that record something. Those parts default to
`NULL_METRICS`, which records nothing, so they can be built without a gateway around them.

Labels carry names that are safe to show and bounded in number: route templates (`/v1/videos/{video_id}`, never a
raw path), team names, upstream names and key labels (`relay-a:1a2b3c4d`), never a key.
"""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.core.quota import LIMITS

CACHE_RESULTS = ("hit", "miss", "joined")
KEY_STATES = ("healthy", "cooling", "disabled")
ACTIVE_JOB_STATES = ("queued", "in_progress")

_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0)
_FIRST_CHUNK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_INTERVAL_S = 0.5
_LEDGER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class RequestTiming:
    """Where the time of one HTTP request went: when it started, and how long it spent in upstream submissions."""

    __slots__ = ("started", "upstream_s")

    def __init__(self, started: float) -> None:
        self.started = started
        self.upstream_s = 0.0


# The request being served by the current task. Tasks a request starts (a job's poller) inherit it, which is why
# only submissions are charged to it: they are the upstream calls a response waits for.
current_request: contextvars.ContextVar[RequestTiming | None] = contextvars.ContextVar(
    "sora_gateway_request", default=None)


class UpstreamCall:
    """Times one upstream HTTP call: set `status` once the upstream answered; an exception counts as a failure."""

    __slots__ = ("_key", "_metrics", "_operation", "_started", "_upstream", "status")

    def __init__(self, metrics: MetricsSink, upstream: str, key: str, operation: str) -> None:
        self._metrics = metrics
        self._upstream = upstream
        self._key = key
        self._operation = operation
        self._started = 0.0
        self.status: int | str | None = None

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        status = self.status if self.status is not None else _failure(exc_type)
        self._metrics.record_upstream_call(self._upstream, self._key, self._operation, str(status),
                                           time.perf_counter() - self._started)


def _failure(exc_type: type[BaseException] | None) -> str:
    if exc_type is None:
        return "unknown"
    if issubclass(exc_type, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    return "error"


class _NullCall:
    __slots__ = ("status",)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


async def watch_loop_lag(metrics: MetricsSink, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """Record how late the event loop wakes a timer, until cancelled. A busy loop (more work arriving than one
    core does) shows here before anywhere else: every request and stream waits that long for its next step."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.loop_lag(max(loop.time() - due, 0.0))


class MetricsSink:
    """What the gateway records, as methods that do nothing. `Metrics` records them for real."""

    def request(self, route: str, method: str, status: int, team: str, overhead_s: float) -> None: ...

    def upstream_call(self, upstream: str, key: str, operation: str) -> UpstreamCall | _NullCall:
        """A context manager around one upstream call; `operation` is submit, poll or download."""
        return _NullCall()

    def record_upstream_call(self, upstream: str, key: str, operation: str, status: str, seconds: float) -> None: ...

    def job_finished(self, upstream: str, outcome: str, seconds: float) -> None: ...

    def first_chunk(self, route: str, seconds: float) -> None: ...

    def stream_opened(self) -> None: ...

    def stream_closed(self) -> None: ...

    def loop_lag(self, seconds: float) -> None: ...

    def cache_result(self, result: str) -> None: ...

    def quota_rejected(self, limit: str) -> None: ...

    def ledger_write(self, operation: str, seconds: float) -> None: ...

    def ui_task(self, ui: str, task: str) -> None: ...

    def webhook_delivery(self, outcome: str) -> None:
        """One delivery attempt: delivered, retry (it failed and will be tried again) or failed (given up)."""

    def upstream_callback(self, upstream: str, outcome: str) -> None:
        """One provider webhook: accepted (it woke a follower), duplicate, forged or unknown (no follower)."""


NULL_METRICS = MetricsSink()


class Metrics(MetricsSink):
    """Every collector of one gateway, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("sora_gateway_requests", "HTTP requests answered, by route template, method,"
                                " status and team.", ["route", "method", "status", "team"], registry=r)
        self.overhead = Histogram("sora_gateway_overhead_seconds", "Time the gateway itself spent on a request"
                                  " until its response started, upstream submissions excluded.", ["route"],
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.upstream_calls = Counter("sora_gateway_upstream_calls", "Upstream HTTP calls, by upstream, key label,"
                                      " operation and HTTP status (or timeout, error).",
                                      ["upstream", "key", "operation", "status"], registry=r)
        self.upstream_seconds = Histogram("sora_gateway_upstream_call_seconds", "Duration of upstream HTTP calls"
                                          " until their response headers.", ["upstream", "operation"],
                                          buckets=_UPSTREAM_BUCKETS, registry=r)
        self.job_duration = Histogram("sora_gateway_job_duration_seconds", "Time from a job's creation to its end,"
                                      " by upstream and outcome.", ["upstream", "outcome"], buckets=_JOB_BUCKETS,
                                      registry=r)
        self.first_chunks = Histogram("sora_gateway_stream_first_chunk_seconds", "Time from a streaming request's"
                                      " arrival to its first chunk.", ["route"], buckets=_FIRST_CHUNK_BUCKETS,
                                      registry=r)
        self.open_streams = Gauge("sora_gateway_open_streams", "Streaming responses in progress.", registry=r)
        self.loop_lags = Histogram("sora_gateway_event_loop_lag_seconds", "How late the event loop ran a timer"
                                   f" set every {LOOP_LAG_INTERVAL_S:g} s: the wait any ready work has in front of it.",
                                   buckets=_LOOP_LAG_BUCKETS, registry=r)
        self.cache = Counter("sora_gateway_cache_lookups", "Generation requests by cache result: hit (a finished"
                             " video), joined (an identical job in flight) or miss (a new job).", ["result"],
                             registry=r)
        self.quota_rejections = Counter("sora_gateway_quota_rejections", "Requests refused by a team quota, by the"
                                        " limit that refused them.", ["limit"], registry=r)
        self.ledger_writes = Histogram("sora_gateway_ledger_write_seconds", "Duration of ledger writes (a request's"
                                       " row, or a job's row closed with the job).", ["operation"],
                                       buckets=_LEDGER_BUCKETS, registry=r)
        self.ui_tasks = Counter("sora_gateway_ui_tasks", "Chat UI housekeeping requests (titles, tags, follow-ups,"
                                " …) answered without a video, by UI and task.", ["ui", "task"], registry=r)
        self.webhooks = Counter("sora_gateway_webhook_deliveries", "Webhook delivery attempts by outcome:"
                                " delivered, retry (failed, to be tried again) or failed (given up).", ["outcome"],
                                registry=r)
        self.upstream_callbacks = Counter("sora_gateway_upstream_callbacks", "Provider webhooks received, by"
                                          " upstream and outcome: accepted (it woke the job's follower), duplicate"
                                          " (a replay or a retry), forged (refused: bad, missing or stale"
                                          " signature) or unknown (verified, but no job followed here).",
                                          ["upstream", "outcome"], registry=r)
        for outcome in ("delivered", "retry", "failed"):
            self.webhooks.labels(outcome)
        self._cache_children = {result: self.cache.labels(result) for result in CACHE_RESULTS}
        for limit in LIMITS:
            self.quota_rejections.labels(limit)
        self._ledger_children: dict[str, Any] = {}
        self._request_children: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}  # bounded like the labels
        self._live = LiveStateCollector()
        r.register(self._live)

    def watch(self, pools: Mapping[str, Any], job_states: Callable[[], Iterable[str]]) -> None:
        """Report key states (from each pool's `snapshot()`) and active jobs by state, read at scrape time."""
        self._live.pools = pools
        self._live.job_states = job_states

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def request(self, route: str, method: str, status: int, team: str, overhead_s: float) -> None:
        children = self._request_children.get((route, method, status, team))
        if children is None:  # label lookups cost more than the update: once per label set
            children = self._request_children[(route, method, status, team)] = (
                self.requests.labels(route, method, str(status), team), self.overhead.labels(route))
        children[0].inc()
        children[1].observe(overhead_s)

    def upstream_call(self, upstream: str, key: str, operation: str) -> UpstreamCall:
        return UpstreamCall(self, upstream, key, operation)

    def record_upstream_call(self, upstream: str, key: str, operation: str, status: str, seconds: float) -> None:
        self.upstream_calls.labels(upstream, key, operation, status).inc()
        self.upstream_seconds.labels(upstream, operation).observe(seconds)
        if operation == "submit":
            timing = current_request.get()
            if timing is not None:
                timing.upstream_s += seconds

    def job_finished(self, upstream: str, outcome: str, seconds: float) -> None:
        self.job_duration.labels(upstream, outcome).observe(max(seconds, 0.0))

    def first_chunk(self, route: str, seconds: float) -> None:
        self.first_chunks.labels(route).observe(seconds)

    def stream_opened(self) -> None:
        self.open_streams.inc()

    def stream_closed(self) -> None:
        self.open_streams.dec()

    def loop_lag(self, seconds: float) -> None:
        self.loop_lags.observe(seconds)

    def cache_result(self, result: str) -> None:
        self._cache_children[result].inc()

    def ui_task(self, ui: str, task: str) -> None:
        self.ui_tasks.labels(ui, task).inc()

    def webhook_delivery(self, outcome: str) -> None:
        self.webhooks.labels(outcome).inc()

    def upstream_callback(self, upstream: str, outcome: str) -> None:
        self.upstream_callbacks.labels(upstream, outcome).inc()

    def quota_rejected(self, limit: str) -> None:
        self.quota_rejections.labels(limit).inc()

    def ledger_write(self, operation: str, seconds: float) -> None:
        child = self._ledger_children.get(operation)
        if child is None:
            child = self._ledger_children[operation] = self.ledger_writes.labels(operation)
        child.observe(seconds)


class LiveStateCollector(Collector):
    """Gauges read from the live objects when Prometheus scrapes, so they can never drift from them."""

    def __init__(self) -> None:
        self.pools: Mapping[str, Any] = {}
        self.job_states: Callable[[], Iterable[str]] = tuple

    def collect(self) -> Iterator[GaugeMetricFamily]:
        keys = GaugeMetricFamily("sora_gateway_upstream_keys", "Upstream keys by state (1 for the key's current"
                                 " state, 0 for the others).", labels=["upstream", "key", "state"])
        in_flight = GaugeMetricFamily("sora_gateway_upstream_key_in_flight", "Jobs this instance runs on each"
                                      " upstream key.", labels=["upstream", "key"])
        for upstream, pool in self.pools.items():
            for key in pool.snapshot():
                for state in KEY_STATES:
                    keys.add_metric([upstream, key["label"], state], 1.0 if key["state"] == state else 0.0)
                in_flight.add_metric([upstream, key["label"]], float(key["in_flight"]))
        yield keys
        yield in_flight
        jobs = GaugeMetricFamily("sora_gateway_jobs", "Jobs this instance follows, by state.", labels=["state"])
        counts = Tally(self.job_states())
        for state in ACTIVE_JOB_STATES:
            jobs.add_metric([state], float(counts.get(state, 0)))
        yield jobs


class TimedDatabase:
    """The database, with the duration of every ledger write recorded; everything else passes straight through."""

    def __init__(self, db: Any, metrics: MetricsSink) -> None:
        self.inner = db
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def insert_job(self, job: Any, ledger: Any = None) -> Any:
        if ledger is None:
            return await self.inner.insert_job(job)
        return await self._timed("insert", self.inner.insert_job(job, ledger))

    async def ledger_insert(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("insert", self.inner.ledger_insert(*args, **kwargs))

    async def finish_job(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("close", self.inner.finish_job(*args, **kwargs))

    async def _timed(self, operation: str, write: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        result = await write
        self._metrics.ledger_write(operation, time.perf_counter() - started)
        return result
