"""The job lifecycle: every video, whichever endpoint asked for it, takes these steps in this order.

    estimate the price → reserve it (quotas) → record the job and its pending ledger row (one transaction)
    → submit on a key → follow the upstream → store the files → close the ledger row, exactly once
    → settle or refund the reservation → let identical requests stop joining → hand back lease and key slot

`start()` returns once the job is recorded, so a stream can tell its client the job id at once; the upstream
create happens in the job's own task, and whoever needs its answer waits on `JobHandle.wait_accepted()`.
Whichever instance or restart runs a step, the row is closed once: closing is a conditional update, and
whoever loses that race adopts the winner's outcome.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from gateway.config import UpstreamConfig
from gateway.core.accounting import Accounting, ledger_row, rate_headers
from gateway.core.auth import Principal
from gateway.core.characters import FEATURE as CHARACTERS
from gateway.core.characters import JobCharacters
from gateway.core.coordination import Coordinator
from gateway.core.database import Database
from gateway.core.dispatch import Dispatcher
from gateway.core.errors import ContentRefused, GatewayError, UpstreamFailed, bad_request
from gateway.core.estimate import JobDurations
from gateway.core.feed import JobHandle
from gateway.core.flights import Flights
from gateway.core.follow import Follower
from gateway.core.keypool import KeyPool
from gateway.core.leases import Leases
from gateway.core.live import FollowedJob, LiveJobs
from gateway.core.periodic import every
from gateway.core.records import CharacterRecord, JobRecord, WebhookEvent
from gateway.core.request import VideoRequest
from gateway.core.store import VideoStore
from gateway.core.upstream import GenerationSpec, ImageInput, Upstream, UpstreamStatus, VideoInput
from gateway.core.webhooks import Webhooks
from gateway.observability.metrics import MetricsSink

log = logging.getLogger("gateway.jobs")
PERSIST_STEP = 5.0  # write progress to the database every this many points (the live copy has every point)
_FINISH_RETRY_CAP_S = 30.0


def new_video_id() -> str:
    return "video_" + secrets.token_hex(16)


FEATURES = {"edit": "edits", "extension": "extensions"}  # what an upstream must support, by operation


def job_spec(request: VideoRequest, image: ImageInput | None, video: VideoInput | None,
             source: JobRecord | None) -> GenerationSpec:
    """The upstream job for a request: a source video of the upstream is referred to by its upstream id."""
    upstream_id = source.upstream_job_id if source else None
    return GenerationSpec(
        upstream_model=request.model.upstream_model, prompt=request.prompt, size=request.size,
        seconds=request.seconds, image=image, video=video, operation=request.operation,
        remix_of=upstream_id if request.remix_of else None,
        edit_of=upstream_id if request.operation == "edit" else None,
        extend_of=upstream_id if request.operation == "extension" else None,
        # the provider dialects' per-model settings ([models."ALIAS"] in the config)
        image_model=request.model.upstream_model_image or None, params=request.model.upstream_params,
    )


class UpstreamSettings:
    """Each upstream's settings by name. One dropped by a reload keeps its last settings for the jobs still on
    it; None for a name this process never had (a job made under an older config)."""

    def __init__(self, upstreams: tuple[UpstreamConfig, ...]) -> None:
        self._current: dict[str, UpstreamConfig] = {}
        self._known: dict[str, UpstreamConfig] = {}
        self.update(upstreams)

    def update(self, upstreams: tuple[UpstreamConfig, ...]) -> None:
        self._current = {u.name: u for u in upstreams}
        self._known.update(self._current)

    def __call__(self, name: str) -> UpstreamConfig | None:
        return self._current.get(name) or self._known.get(name)


class _EndedElsewhere(Exception):
    """Another instance ended the job while this one still followed it."""


class Lifecycle:
    def __init__(self, *, db: Database, live: LiveJobs, coordinator: Coordinator, upstreams: Mapping[str, Upstream],
                 pools: Mapping[str, KeyPool], settings: UpstreamSettings, store: VideoStore,
                 accounting: Accounting, flights: Flights, webhooks: Webhooks, metrics: MetricsSink,
                 ping_interval_s: Callable[[], float], thumbnails_with_video: bool = False) -> None:
        self.db = db
        self.live = live
        self.upstreams = upstreams
        self.pools = pools
        self.settings = settings
        self.accounting = accounting
        self.flights = flights
        self.webhooks = webhooks
        self.metrics = metrics
        self.dispatcher = Dispatcher(upstreams, pools, settings)
        self.follower = Follower(store, pools)
        self.durations = JobDurations()
        self.store = store
        self.leases = Leases(coordinator, live, pools, db, self.resume)
        self._ping_interval_s = ping_interval_s
        self._thumbnails_with_video = thumbnails_with_video
        self._loops: list[asyncio.Task] = []

    # -- running ----------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Pick up unfinished jobs nobody follows, then keep leases and keep-alives going."""
        await self.leases.take_over()
        self._loops = [
            asyncio.create_task(every(self._ping_interval_s, self.live.keepalive, "keep-alive tick"),
                                name="keepalive-ticker"),
            asyncio.create_task(every(self.leases.interval_s, self.leases.round, "lease round"), name="job-leases"),
        ]

    async def close(self) -> None:
        """Stop following jobs without failing them: they stay active in the database and resume later (here
        after a restart, or on another instance once their lease runs out)."""
        jobs = list(self.live.followed.values())
        tasks = [*self._loops, *(j.task for j in jobs if j.task)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in jobs:
            await self._hand_back(job)
            job.handle.wake()

    # -- estimate, reserve, record ---------------------------------------------------------------------------

    async def start(self, principal: Principal, request: VideoRequest, image: ImageInput | None, request_id: str,
                    *, cache_key: str | None, source: JobRecord | None = None, video: VideoInput | None = None,
                    characters: tuple[CharacterRecord, ...] = (), job_id: str | None = None,
                    ) -> tuple[JobHandle, dict[str, str]]:
        """Reserve, record and launch a job; returns its handle and the caller's rate-limit headers as soon as
        the job is durable. `source` is the video a remix, edit or extension starts from (`video` an uploaded
        one). Raises InvalidRequest when no upstream of the model can do it, RateLimited or QuotaExceeded
        (nothing recorded, nothing reserved)."""
        names = self.upstreams_for(request, source, bool(characters))
        team = principal.team.name
        admission = await self.accounting.reserve(principal, request, request_id)
        model = request.model
        record = JobRecord(
            id=job_id or new_video_id(), team=team, key_id=principal.key_id, model=model.name,
            upstream_model=model.upstream_model, prompt=request.prompt, size=request.size, seconds=request.seconds,
            created_at=time.time(), cache_key=cache_key,
            remixed_from=source.id if source and request.remix_of else None, request_id=request_id,
            user=request.user, price=request.price, reservation_id=admission.reservation_id,
            webhook_url=request.webhook_url,
            edited_from=request.source_id if request.operation == "edit" else None,
            extended_from=request.source_id if request.operation == "extension" else None,
            base_seconds=source.seconds + source.base_seconds if source and request.operation == "extension" else 0,
        )
        row = ledger_row(principal, request, request_id, "pending")
        row.job_id = record.id
        try:
            await self.db.insert_job(record, row)
        except BaseException:
            await self.accounting.give_back(team, admission.reservation_id)
            raise
        job = FollowedJob(JobHandle(record))
        self.live.followed[record.id] = job
        spec = job_spec(request, image, video, source)
        pinned = source.upstream_key if source else None
        cast = JobCharacters(characters, self.db) if characters else None
        job.task = asyncio.create_task(self._run(job, spec, names, pinned, cast), name=f"job-{record.id}")
        return job.handle, rate_headers(admission)

    def upstreams_for(self, request: VideoRequest, source: JobRecord | None, with_characters: bool) -> tuple[str, ...]:
        """The upstreams that may run `request`: the source's own for a remix, edit or extension of an upstream
        video, else the model's that can do everything it asks. InvalidRequest when none can."""
        needs = [FEATURES[request.operation]] if request.operation in FEATURES else []
        if with_characters:
            needs.append(CHARACTERS)
        names = (source.upstream,) if source else request.model.upstreams
        if not needs:
            return names
        able = tuple(n for n in names if set(needs) <= getattr(self.upstreams.get(n), "features", frozenset()))
        if not able:
            kinds = sorted({getattr(self.upstreams.get(n), "kind", "unknown") for n in names})
            raise bad_request(f"The model '{request.model.name}' cannot do this: its upstream ({', '.join(kinds)})"
                              f" does not support {' or '.join(needs)}. Use a model served by a Videos API"
                              " upstream (kind 'videos').", param="model", code="unsupported_operation")
        return able

    async def _claim(self, job_id: str) -> None:
        try:
            await self.leases.claim(job_id)
        except Exception as exc:  # noqa: BLE001 - a fresh id is nobody else's; the next lease round claims it
            log.warning("job lease claim failed", extra={"job_id": job_id, "error": type(exc).__name__})

    # -- submit -----------------------------------------------------------------------------------------------

    async def _submit(self, job: FollowedJob, spec: GenerationSpec, names: tuple[str, ...], pinned: str | None,
                      characters: JobCharacters | None) -> bool:
        """Create the upstream job and record where it runs; False when the job ended instead."""
        record = job.record
        try:
            submitted = await self.dispatcher.submit(spec, names, pinned, characters)
        except GatewayError as exc:
            job.handle.refuse(exc)
            await self._finish(job, "failed", exc.code, exc.message, refused=isinstance(exc, ContentRefused))
            return False
        except Exception as exc:  # noqa: BLE001 - any other failure ends the job the same way
            log.exception("job submission failed", extra={"job_id": record.id})
            error = UpstreamFailed(f"the job could not be submitted: {type(exc).__name__}")
            job.handle.refuse(error)
            await self._finish(job, "failed", error.code, error.message)
            return False
        job.upstream, job.slot = submitted.adapter, submitted.slot
        ids: dict[str, str | bool] = {"upstream": submitted.upstream, "upstream_key": submitted.slot.key.label,
                                      "upstream_job_id": submitted.upstream_id}
        if submitted.resubmitted:
            ids["resubmitted"] = True
        try:
            still_running = await self.db.advance_job(record.id, status="queued", **ids)
        except Exception as exc:  # noqa: BLE001 - follow it anyway; its end is written when the database is back
            log.error("job upstream ids not written", extra={"job_id": record.id, "error": type(exc).__name__})
            still_running = True
        if not still_running:
            await self._ended_elsewhere(job)
            return False
        for name, value in ids.items():
            setattr(record, name, value)
        record.status = "queued"
        job.handle.accept()
        await self.live.publish(job.handle)
        log.info("job submitted", extra={"job_id": record.id, "team": record.team, "upstream": record.upstream,
                                         "upstream_key": record.upstream_key})
        return True

    # -- follow and store -------------------------------------------------------------------------------------

    async def resume(self, record: JobRecord) -> bool:
        """Follow a job this instance just took the lease of; False when it had to be ended instead."""
        handle = self.live.watched.pop(record.id, None)
        if handle is None:
            handle = JobHandle(record)
        else:  # clients here were watching it: they keep their handle, which takes the database's record
            shown = handle.record
            seen = (shown.progress, shown.progress_estimated) if shown.status == record.status else (0.0, False)
            for name in JobRecord.columns():
                setattr(shown, name, getattr(record, name))
            if seen[0] > record.progress:  # the database's copy is the coarser one
                shown.progress, shown.progress_estimated = seen
        job = FollowedJob(handle)
        self.live.followed[record.id] = job
        pool, adapter = self.pools.get(record.upstream), self.upstreams.get(record.upstream)
        slot = await pool.hold(record.upstream_key) if pool and adapter and record.upstream_job_id else None
        if slot is None:
            reason = ("the gateway stopped before the upstream accepted the job" if not record.upstream_job_id
                      else "the upstream key that created the job is no longer configured")
            await self._finish(job, "failed", "upstream_error", reason)
            return False
        job.upstream, job.slot = adapter, slot
        job.task = asyncio.create_task(self._run(job), name=f"job-{record.id}")
        return True

    async def _run(self, job: FollowedJob, spec: GenerationSpec | None = None, names: tuple[str, ...] = (),
                   pinned: str | None = None, characters: JobCharacters | None = None) -> None:
        """A job's task: a new job (`spec`) is submitted first; then the job is followed to its end and what it
        made is stored. One coroutine for both, as it lives as long as the job."""
        record = job.record
        if spec is not None:
            await self._claim(record.id)  # here, not in start(): a caller that goes away cannot leave it unclaimed
            submitted = await self._submit(job, spec, names, pinned, characters)
            del spec, characters  # the create's inputs (an image, say) are not kept for the job's life
            if not submitted:
                return
        limit = self.settings(record.upstream).job_timeout_s
        try:
            final = await self.follower.follow(job, limit - (time.time() - record.created_at), limit, self._progress)
            if final.status != "completed":
                await self._finish(job, "failed", final.error_code or "upstream_error",
                                   final.error_message or "the upstream reported a failure", refused=final.refused)
                return
            # how long it took, for the estimates of the jobs of this model that report no progress
            self.durations.finished(record.upstream, record.upstream_model, record.seconds,
                                    time.time() - record.created_at)
            await self._store(job, final)
        except _EndedElsewhere:
            await self._ended_elsewhere(job)
        except GatewayError as exc:
            await self._finish(job, "failed", exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the job ends and its client hears of it
            log.exception("job follower failed", extra={"job_id": record.id})
            await self._finish(job, "failed", "upstream_error", f"the upstream job could not be followed: {exc}")

    async def _progress(self, job: FollowedJob, status: UpstreamStatus) -> None:
        record = job.record
        progress, estimated = self._reading(record, status)
        position = status.queue_position if status.status == "queued" else None
        if (status.status, progress, estimated, position) == (record.status, record.progress,
                                                             record.progress_estimated, record.queue_position):
            return
        state_changed = status.status != record.status
        news = state_changed or estimated != record.progress_estimated or position != record.queue_position
        persisted = record.progress
        record.status, record.progress = status.status, progress
        record.progress_estimated, record.queue_position = estimated, position
        if news or int(progress // PERSIST_STEP) != int(persisted // PERSIST_STEP):
            if not await self.db.advance_job(record.id, status=record.status, progress=progress,
                                             progress_estimated=estimated, queue_position=position):
                raise _EndedElsewhere
        if state_changed:
            log.info("job status changed", extra={"job_id": record.id, "status": record.status})
        await self.live.publish(job.handle)

    def _reading(self, record: JobRecord, status: UpstreamStatus) -> tuple[float, bool]:
        """The job's progress after this report, and whether it is an estimate. It never goes down: a report
        below what the job shows already leaves it (and its mark) as it is. A tie goes to the upstream's own
        figure, and to the report of a new state (a job that starts running at an estimated 0% shows that)."""
        reported = status.progress
        if status.progress_estimated:
            reported = self.durations.estimate(record.upstream, record.upstream_model, record.seconds,
                                               time.time() - record.created_at)
        reported = min(reported, 99.0)
        tie = reported == record.progress and (status.status != record.status or not status.progress_estimated)
        if reported > record.progress or tie:
            return reported, status.progress_estimated
        return record.progress, record.progress_estimated

    async def _store(self, job: FollowedJob, final: UpstreamStatus) -> None:
        record = job.record
        await self.follower.video(job, final)
        # Previews are fetched when first asked for (`fetch_preview`): most are never asked for, and each would
        # cost a download and a synced file per job. A thumbnail link in the final report (a chat relay's) is
        # known only now, so it is followed now; so is every thumbnail with `storage.thumbnails = "with_video"`.
        if final.thumbnail_url or self._thumbnails_with_video:
            record.has_thumbnail = await self.follower.preview(record, job.upstream, job.slot.key, final,
                                                               "thumbnail")
        if not record.deleted and self.leases.coordinator.shared:  # a delete through another instance
            current = await self.db.get_job(record.id)
            record.deleted = current is not None and current.deleted
        if record.deleted:  # deleted while it ran: accounted for as usual, but nothing is kept
            await self.store.delete(record.id)
        record.progress, record.progress_estimated = 100.0, False
        await self._finish(job, "completed", None, None)

    async def fetch_preview(self, record: JobRecord, variant: str) -> bool:
        """Store a preview of a finished video that was not fetched with it; False when the upstream has none."""
        upstream, pool = self.upstreams.get(record.upstream), self.pools.get(record.upstream)
        state = pool.get(record.upstream_key) if pool else None
        if upstream is None or state is None or not record.upstream_job_id:
            return False
        return await self.follower.preview(record, upstream, state.key, UpstreamStatus("completed", 100.0), variant)

    # -- close the row, settle or refund, let go ------------------------------------------------------------

    async def _finish(self, job: FollowedJob, status: str, code: str | None, message: str | None,
                      refused: bool = False) -> None:
        record = job.record
        now = time.time()
        outcome = "completed" if status == "completed" else "refused" if refused else "failed"
        changes = {"status": status, "progress": record.progress, "progress_estimated": record.progress_estimated,
                   "queue_position": None, "error_code": code, "error_message": message,
                   "refused": refused, "completed_at": now, "has_thumbnail": record.has_thumbnail,
                   "upstream": record.upstream, "upstream_key": record.upstream_key}
        events = self.webhooks.for_job(replace(record, **changes))  # written with the row: announced exactly once
        closed = await self._close_row(record.id, changes, outcome, record.price if outcome == "completed" else 0.0,
                                       events)
        if not closed:  # another instance ended it first: its accounting stands
            log.info("job already finished elsewhere", extra={"job_id": record.id})
            await self._ended_elsewhere(job)
            return
        record.status, record.error_code, record.error_message = status, code, message
        record.refused, record.completed_at, record.queue_position = refused, now, None
        log.info("job finished", extra={"job_id": record.id, "status": status, "error_code": code})
        if events:
            self.webhooks.wake()
        self.metrics.job_finished(record.upstream or "", outcome, now - record.created_at)
        try:
            await self.accounting.close(record)
        except Exception as exc:  # noqa: BLE001 - the ledger row is closed; counters are rebuilt from it on start
            log.error("quota settle failed", extra={"job_id": record.id, "error": type(exc).__name__})
        await self._let_go(job)

    async def _close_row(self, job_id: str, changes: dict, outcome: str, cost: float,
                         events: tuple[WebhookEvent, ...]) -> bool:
        """Close the job and its ledger row, retrying while the database is away; only a shutdown stops it
        (the job then stays active and is finished after the restart)."""
        attempt = 0
        while True:
            try:
                return await self.db.finish_job(job_id, changes, outcome, cost, events)
            except Exception as exc:  # noqa: BLE001
                attempt += 1
                log.error("job end not written yet; retrying", extra={"job_id": job_id, "error": type(exc).__name__})
                await asyncio.sleep(min(_FINISH_RETRY_CAP_S, 0.5 * 2 ** min(attempt, 6)))

    async def _ended_elsewhere(self, job: FollowedJob) -> None:
        current = await self.db.get_job(job.record.id)
        if current is not None:
            job.handle.adopt(current)
        await self._let_go(job)

    async def _let_go(self, job: FollowedJob) -> None:
        """The job is over here: identical requests stop joining it, every client reads its end, and its lease
        and key slot go back."""
        record = job.record
        with contextlib.suppress(Exception):
            await self.flights.release(record)
        self.live.followed.pop(record.id, None)
        await self.live.publish(job.handle)
        await self._hand_back(job)

    async def _hand_back(self, job: FollowedJob) -> None:
        if job.slot is not None:
            slot, job.slot = job.slot, None
            pool = self.pools.get(slot.key.upstream)
            if pool is not None:
                with contextlib.suppress(Exception):
                    await pool.release(slot)
        with contextlib.suppress(Exception):
            await self.leases.release(job.record.id)

