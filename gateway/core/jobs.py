"""JobManager: submit once, follow each upstream job with exactly one poller, fan status out to every
waiting client, store the result, and pick unfinished jobs up again after a restart."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson

from gateway.backends.coordination import Coordinator, LocalCoordinator
from gateway.backends.records import JobRecord, LedgerRow
from gateway.backends.store import LocalVideoStore
from gateway.config import Config, ModelConfig, UpstreamConfig
from gateway.core.request import VideoRequest
from gateway.errors import APIError
from gateway.observability.metrics import NULL_METRICS, MetricsSink
from gateway.upstreams.base import (
    GenerationSpec,
    ImageInput,
    JobLost,
    Upstream,
    UpstreamError,
    UpstreamKey,
    UpstreamStatus,
)
from gateway.upstreams.faults import Retry, backoff_s, decide
from gateway.upstreams.keypool import KeyPool, KeySlot

log = logging.getLogger("gateway.jobs")
FinishHook = Callable[[JobRecord], Awaitable[None]]
_PERSIST_STEP = 5.0  # write progress to the database every this many points
LEASE_S = 10.0  # a job whose follower stops renewing is taken over by another instance after this
_LIVE_FIELDS = ("status", "progress", "error_code", "error_message", "refused", "completed_at", "has_thumbnail")


def new_video_id() -> str:
    return "video_" + secrets.token_hex(16)


class JobHandle:
    """The live state of one job, shared by its poller and every client waiting on it."""

    __slots__ = ("_event", "persisted_progress", "record", "slot", "task", "version")

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.version = 0
        self._event = asyncio.Event()
        self.task: asyncio.Task | None = None  # the poller, when this instance follows the job
        self.slot: KeySlot | None = None
        self.persisted_progress = record.progress

    def live_state(self) -> bytes:
        return orjson.dumps({name: getattr(self.record, name) for name in _LIVE_FIELDS})

    def adopt(self, record: JobRecord | dict) -> bool:
        """Take a newer state seen elsewhere (another instance, the database); True when it changed."""
        values = record if isinstance(record, dict) else {n: getattr(record, n) for n in _LIVE_FIELDS}
        if self.done:
            return False
        changed = False
        for name in _LIVE_FIELDS:
            if name in values and getattr(self.record, name) != values[name]:
                setattr(self.record, name, values[name])
                changed = True
        if changed:
            self.publish()
        return changed

    @property
    def done(self) -> bool:
        return self.record.status in ("completed", "failed")

    def publish(self) -> None:
        self.version += 1
        self.wake()

    def wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def changes(self) -> AsyncIterator[bool]:
        """Yield True on every new state (the current one first) and False on keep-alive ticks."""
        seen = -1
        while True:
            if self.version != seen:
                seen = self.version
                yield True
                if self.done:
                    return
            else:
                yield False
            await self._event.wait()


@dataclass(frozen=True, slots=True)
class Submitted:
    upstream: str
    slot: KeySlot
    upstream_id: str


class JobManager:
    def __init__(
        self,
        config: Config,
        db,
        store: LocalVideoStore,
        upstreams: dict[str, Upstream],
        pools: dict[str, KeyPool],
        coordinator: Coordinator | None = None,
        metrics: MetricsSink = NULL_METRICS,
    ) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.upstreams = upstreams
        self.pools = pools
        self.coordinator = coordinator or LocalCoordinator()
        self.metrics = metrics
        self.active: dict[str, JobHandle] = {}  # jobs this instance follows
        self.watched: dict[str, JobHandle] = {}  # jobs another instance follows, with clients waiting here
        self.finish_hooks: list[FinishHook] = []
        self._known_upstreams: dict[str, UpstreamConfig] = {u.name: u for u in config.upstreams}
        self._tasks: list[asyncio.Task] = []

    def upstream_config(self, name: str) -> UpstreamConfig | None:
        """An upstream's settings; one dropped by a reload keeps its last settings for the jobs still on it.
        None for a name this process never had in its config (a job made under an older config)."""
        found = next((u for u in self.config.upstreams if u.name == name), None)
        if found is not None:
            self._known_upstreams[name] = found
            return found
        return self._known_upstreams.get(name)

    def reconfigure(self, config: Config) -> None:
        for upstream in self.config.upstreams:
            self._known_upstreams.setdefault(upstream.name, upstream)
        self.config = config

    # lifecycle
    async def start(self) -> None:
        await self.resume()
        self._tasks.append(asyncio.create_task(self._tick(), name="keepalive-ticker"))
        self._tasks.append(asyncio.create_task(self._leases(), name="job-leases"))

    async def stop(self) -> None:
        """Stop following jobs without failing them: they stay active in the database and resume later
        (here after a restart, or on another instance once their lease runs out)."""
        for task in self._tasks:
            task.cancel()
        tasks = [h.task for h in self.active.values() if h.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *tasks, return_exceptions=True)
        for handle in list(self.active.values()):
            if handle.slot is not None:
                await self.pools[handle.record.upstream].release(handle.slot)
            await self.coordinator.release(handle.record.id)
            handle.wake()

    async def _tick(self) -> None:
        """Keep-alives for every waiting stream from one timer; watched jobs are re-read as a safety net."""
        while True:
            await asyncio.sleep(self.config.server.ping_interval_s)
            for handle in list(self.active.values()):
                handle.wake()
            for job_id, handle in list(self.watched.items()):
                record = await self.db.get_job(job_id)
                if record is not None and not handle.adopt(record):
                    handle.wake()
                if handle.done:
                    self.watched.pop(job_id, None)

    async def _leases(self) -> None:
        """Renew this instance's job leases and key slots; take over jobs whose follower went away."""
        while True:
            await asyncio.sleep(LEASE_S / 4 if self.coordinator.shared else 30.0)
            try:
                await self._renew()
                if self.coordinator.shared:
                    await self.take_over()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease round failed")

    async def _renew(self) -> None:
        followed = list(self.active)
        owned = set(await self.coordinator.renew(followed, LEASE_S))
        for job_id in followed:
            handle = self.active.get(job_id)
            if handle is None:
                continue
            if job_id not in owned and self.coordinator.shared:
                log.warning("job lease lost; another instance follows it now", extra={"job_id": job_id})
                if handle.task:
                    handle.task.cancel()
                self.active.pop(job_id, None)
                self.watched[job_id] = handle
                continue
            if handle.slot is not None:
                await self.pools[handle.record.upstream].renew(handle.slot)

    async def on_remote_status(self, job_id: str, payload: bytes) -> None:
        """A status published by the instance that follows the job."""
        handle = self.watched.get(job_id)
        if handle is None:
            return
        handle.adopt(orjson.loads(payload))
        if handle.done:
            self.watched.pop(job_id, None)

    # submitting
    async def submit(
        self,
        request: VideoRequest,
        image: ImageInput | None,
        *,
        team: str,
        key_id: str,
        request_id: str,
        cache_key: str | None = None,
        remix_source: JobRecord | None = None,
        reservation_id: str | None = None,
        ledger: LedgerRow | None = None,
        job_id: str | None = None,
    ) -> JobHandle:
        """Write the job, hand it to an upstream, and start its poller. Raises APIError when no upstream takes it."""
        model = request.model
        record = JobRecord(
            id=job_id or new_video_id(), team=team, key_id=key_id, model=model.name,
            upstream_model=model.upstream_model,
            prompt=request.prompt, size=request.size, seconds=request.seconds, created_at=time.time(),
            cache_key=cache_key, remixed_from=remix_source.id if remix_source else None,
            request_id=request_id, user=request.user, price=request.price, reservation_id=reservation_id,
        )
        if ledger is not None:
            ledger.job_id = record.id
        await self.db.insert_job(record, ledger)
        await self.coordinator.claim(record.id, LEASE_S)
        spec = GenerationSpec(
            upstream_model=model.upstream_model, prompt=request.prompt, size=request.size,
            seconds=request.seconds, image=image,
            remix_of=remix_source.upstream_job_id if remix_source else None,
        )
        try:
            submitted = await self._submit(spec, model, remix_source)
        except APIError as exc:
            await self._finish(record, "failed", exc.code or "upstream_error", exc.message)
            raise
        except BaseException:
            await self._finish(record, "failed", "gateway_error", "the gateway stopped before the upstream answered")
            raise
        record.upstream = submitted.upstream
        record.upstream_key = submitted.slot.key.label
        record.upstream_job_id = submitted.upstream_id
        record.status = "queued"
        await self.db.update_job(record.id, upstream=record.upstream, upstream_key=record.upstream_key,
                                 upstream_job_id=record.upstream_job_id, status="queued")
        handle = JobHandle(record)
        handle.slot = submitted.slot
        self._follow(handle)
        await self.coordinator.publish(record.id, handle.live_state())
        log.info("job submitted", extra={"job_id": record.id, "team": team, "upstream": record.upstream,
                                         "upstream_key": record.upstream_key})
        return handle

    async def _submit(self, spec: GenerationSpec, model: ModelConfig, remix_source: JobRecord | None) -> Submitted:
        names = (remix_source.upstream,) if remix_source else model.upstreams
        deadline = time.monotonic() + max(self.upstream_config(n).max_retry_s for n in names)
        last_error: UpstreamError | None = None
        for name in names:
            pool, upstream = self.pools[name], self.upstreams[name]
            tried: set[str] = set()
            attempt = 0
            while time.monotonic() < deadline:
                slot = await self._pinned(pool, remix_source) if remix_source else await pool.acquire(tried)
                if slot is None:
                    if pool.exhausted() or remix_source:
                        break
                    await pool.wait_for_slot(deadline - time.monotonic())
                    continue
                tried.add(slot.key.label)
                try:
                    upstream_id = await upstream.submit(spec, slot.key)
                except UpstreamError as exc:
                    await pool.release(slot)
                    decision = decide(exc.status)
                    await pool.failed(slot.state, decision.key, _reason(exc), exc.retry_after)
                    log.warning("upstream submit failed", extra={"upstream": name, "upstream_key": slot.key.label,
                                                                 "status": exc.status, "error": exc.message})
                    if decision.retry is Retry.NO:
                        raise _client_error(exc) from None
                    last_error = exc
                    if decision.retry is Retry.BACKOFF:
                        attempt += 1
                        await asyncio.sleep(min(backoff_s(attempt), max(0.0, deadline - time.monotonic())))
                    continue
                except BaseException:
                    await pool.release(slot)
                    raise
                pool.succeeded(slot.state)
                return Submitted(name, slot, upstream_id)
        raise self._unavailable(names, last_error)

    async def _pinned(self, pool: KeyPool, source: JobRecord) -> KeySlot | None:
        state = pool.get(source.upstream_key)
        if state is None or state.state(time.monotonic()) != "healthy":
            return None
        return await pool.hold(source.upstream_key)

    def _unavailable(self, names: tuple[str, ...], last_error: UpstreamError | None) -> APIError:
        waits = [w for n in names if (w := self.pools[n].earliest_recovery()) is not None]
        retry_after = max(1, int(min(waits) + 0.999)) if waits else 30
        detail = f" (last error: {last_error.message})" if last_error else ""
        return APIError(
            503,
            f"Every upstream key for this model is busy, rate limited or disabled; retry in {retry_after} s.{detail}",
            code="upstream_unavailable", type="server_error", headers={"retry-after": str(retry_after)},
        )

    # following
    def _follow(self, handle: JobHandle) -> None:
        self.active[handle.record.id] = handle
        handle.task = asyncio.create_task(self._run(handle), name=f"job-{handle.record.id}")

    async def _run(self, handle: JobHandle) -> None:
        record = handle.record
        upstream = self.upstreams[record.upstream]
        key = handle.slot.key
        budget = self.upstream_config(record.upstream).job_timeout_s - (time.time() - record.created_at)
        final: UpstreamStatus | None = None
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                async for status in upstream.track(record.upstream_job_id, key):
                    if status.done:
                        final = status
                        break
                    await self._progress(handle, status)
                if final is not None and final.status == "completed":
                    await self._store(handle, final)
        except TimeoutError:
            await self._finish(record, "failed", "upstream_timeout",
                               f"the video was not ready within "
                               f"{self.upstream_config(record.upstream).job_timeout_s:g} s")
        except JobLost as exc:
            await self._finish(record, "failed", "upstream_error", f"the upstream job was lost: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job poller failed", extra={"job_id": record.id})
            await self._finish(record, "failed", "upstream_error", f"the upstream job could not be followed: {exc}")
        else:
            if final is None:
                await self._finish(record, "failed", "upstream_error", "the upstream stopped reporting on the job")
            elif final.status == "failed":
                await self._finish(record, "failed", final.error_code or "upstream_error",
                                   final.error_message or "the upstream reported a failure", refused=final.refused)
        finally:
            if record.status in ("completed", "failed"):
                await self._done(handle)

    async def _done(self, handle: JobHandle) -> None:
        pool = self.pools.get(handle.record.upstream)
        if pool is not None and handle.slot is not None:
            slot, handle.slot = handle.slot, None
            await pool.release(slot)
        self.active.pop(handle.record.id, None)
        handle.publish()
        await self.coordinator.publish(handle.record.id, handle.live_state())
        await self.coordinator.release(handle.record.id)

    async def _progress(self, handle: JobHandle, status: UpstreamStatus) -> None:
        record = handle.record
        progress = max(record.progress, min(status.progress, 99.0))
        if status.status == record.status and progress == record.progress:
            return
        state_changed = status.status != record.status
        record.status, record.progress = status.status, progress
        if state_changed or progress - handle.persisted_progress >= _PERSIST_STEP:
            handle.persisted_progress = progress
            await self.db.update_job(record.id, status=record.status, progress=progress)
        if state_changed:
            log.info("job status changed", extra={"job_id": record.id, "status": record.status})
        handle.publish()
        await self.coordinator.publish(record.id, handle.live_state())

    async def _store(self, handle: JobHandle, final: UpstreamStatus) -> None:
        record = handle.record
        upstream = self.upstreams[record.upstream]
        key = handle.slot.key
        for attempt in range(4):
            try:
                chunks = await upstream.download(record.upstream_job_id, key, final, "video")
                if chunks is None:
                    raise UpstreamError("the upstream has no video content")
                await self.store.save(record.id, "video", chunks)
                break
            except UpstreamError as exc:
                if attempt == 3 or exc.status in (400, 401, 403, 404):
                    raise
                await asyncio.sleep(backoff_s(attempt + 1))
        # the thumbnail comes with the video; a spritesheet is fetched when first asked for (`fetch_preview`)
        record.has_thumbnail = await self._save_preview(upstream, record, key, final, "thumbnail")
        current = await self.db.get_job(record.id)  # a delete may have come through another instance
        if record.deleted or (current is not None and current.deleted):
            # deleted while it ran: it is accounted for as usual, but nothing is kept
            record.deleted = True
            self.store.delete(record.id)
        record.progress = 100.0
        await self._finish(record, "completed", None, None)

    async def _finish(self, record: JobRecord, status: str, code: str | None, message: str | None,
                      refused: bool = False) -> None:
        now = time.time()
        record.status, record.error_code, record.error_message = status, code, message
        record.refused, record.completed_at = refused, now
        outcome = "completed" if status == "completed" else "refused" if refused else "failed"
        changes = {"status": status, "progress": record.progress, "error_code": code, "error_message": message,
                   "refused": refused, "completed_at": now, "has_thumbnail": record.has_thumbnail,
                   "upstream": record.upstream, "upstream_key": record.upstream_key}
        finished = await self.db.finish_job(record.id, changes, outcome,
                                            record.price if outcome == "completed" else 0.0)
        if not finished:  # another instance finished it first: its accounting stands
            log.info("job already finished elsewhere", extra={"job_id": record.id})
            return
        log.info("job finished", extra={"job_id": record.id, "status": status, "error_code": code})
        self.metrics.job_finished(record.upstream or "", outcome, now - record.created_at)
        for hook in self.finish_hooks:
            try:
                await hook(record)
            except Exception:
                log.exception("finish hook failed", extra={"job_id": record.id})

    async def resume(self) -> int:
        """Follow again every unfinished job no live instance follows (after a restart, or a crash elsewhere)."""
        return await self.take_over()

    async def take_over(self) -> int:
        resumed = 0
        for record in await self.db.active_jobs():
            if record.id in self.active or not await self.coordinator.claim(record.id, LEASE_S):
                continue
            watched = self.watched.pop(record.id, None)
            pool = self.pools.get(record.upstream)
            slot = await pool.hold(record.upstream_key) if pool and record.upstream_job_id else None
            if slot is None:
                reason = ("the gateway stopped before the upstream accepted the job" if not record.upstream_job_id
                          else "the upstream key that created the job is no longer configured")
                await self._finish(record, "failed", "upstream_error", reason)
                await self.coordinator.release(record.id)
                if watched is not None:
                    watched.adopt(record)
                continue
            handle = watched or JobHandle(record)
            if watched is not None:
                watched.adopt(record)
            handle.slot = slot
            self._follow(handle)
            resumed += 1
        if resumed:
            log.info("resumed unfinished jobs", extra={"count": resumed, "instance": self.coordinator.instance_id})
        return resumed

    async def fetch_preview(self, record: JobRecord, variant: str) -> bool:
        """Store a preview of a finished video that was not fetched with it; False when the upstream has none."""
        upstream = self.upstreams.get(record.upstream)
        pool = self.pools.get(record.upstream)
        state = pool.get(record.upstream_key) if pool else None
        if upstream is None or state is None or not record.upstream_job_id:
            return False
        return await self._save_preview(upstream, record, state.key, UpstreamStatus("completed", 100.0), variant)

    async def _save_preview(self, upstream: Upstream, record: JobRecord, key: UpstreamKey, final: UpstreamStatus,
                            variant: str) -> bool:
        """Store a preview variant; a missing or failing one never fails a finished video."""
        try:
            body = await upstream.download(record.upstream_job_id, key, final, variant)
            if body is None:
                return False
            await self.store.save(record.id, variant, body)
        except Exception:  # noqa: BLE001 - the upstream may not have it (any more): it is simply not there
            log.warning("preview download failed", extra={"job_id": record.id, "variant": variant})
            return False
        return True

    # reading
    def live(self, job_id: str) -> JobHandle | None:
        """The handle of a job clients can wait on here, whether this instance or another follows it."""
        return self.active.get(job_id) or self.watched.get(job_id)

    async def find(self, job_id: str) -> JobRecord | None:
        """A job's record: the live one while it runs here, else the database's."""
        handle = self.live(job_id)
        if handle is not None:
            return handle.record
        return await self.db.get_job(job_id)

    async def attach(self, job_id: str, wait_s: float = 5.0) -> JobHandle | None:
        """A handle on any job, followed here or elsewhere, that a client can wait on."""
        handle = self.live(job_id)
        if handle is not None:
            return handle
        deadline = time.monotonic() + wait_s
        while True:
            record = await self.db.get_job(job_id)
            if record is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # the instance that claimed the flight is still writing the job
        if record is None:
            return None
        handle = self.live(job_id)
        if handle is not None:
            return handle
        handle = JobHandle(record)
        if not handle.done:
            self.watched[job_id] = handle
        return handle


def _reason(exc: UpstreamError) -> str:
    return f"HTTP {exc.status}: {exc.message}" if exc.status else exc.message


def _client_error(exc: UpstreamError) -> APIError:
    status = exc.status if exc.status in (400, 404, 409, 413, 415, 422) else 400
    return APIError(status, f"The upstream rejected the request: {exc.message}", code=exc.code or "invalid_request",
                    param=exc.param)
