"""The one place a video request goes through: cache, admission, job, and the outcome's accounting.

    image → cache key → in flight? join : finished? hit : admit (quota) → submit (job + ledger row)
    job ends → ledger closed with the job (one transaction) → quota settled or refunded → flight released
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from cachetools import TTLCache

from gateway.backends.records import JobRecord, LedgerRow
from gateway.backends.store import LocalVideoStore
from gateway.config import Config
from gateway.core.auth import Principal
from gateway.core.cache import CacheControl, SingleFlight, cache_key
from gateway.core.images import ImageError, ImageLimits, load_image
from gateway.core.jobs import JobHandle, JobManager, new_video_id
from gateway.core.quota import Admission, Charge, QuotaStore, Rejection, calendar_at
from gateway.core.request import VideoRequest
from gateway.errors import APIError, bad_request
from gateway.observability.metrics import NULL_METRICS, MetricsSink
from gateway.upstreams.base import ImageInput

log = logging.getLogger("gateway.service")


@dataclass(slots=True)
class Generation:
    """A job a client waits on. `handle` is None when the result is already final (a cache hit)."""

    record: JobRecord
    handle: JobHandle | None
    cache: str  # miss | hit | joined
    headers: dict[str, str]


class VideoService:
    def __init__(self, config: Config, db, store: LocalVideoStore, jobs: JobManager, quotas: QuotaStore,
                 image_limits: ImageLimits, metrics: MetricsSink = NULL_METRICS) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.jobs = jobs
        self.quotas = quotas
        self.image_limits = image_limits
        self.metrics = metrics
        self.flights: SingleFlight[Generation] = SingleFlight()
        # Finished results recently served, so a burst of hits costs no database read or file stat.
        self._hits: TTLCache[str, JobRecord] = TTLCache(maxsize=10_000, ttl=min(5.0, config.cache.ttl_s))
        jobs.finish_hooks.append(self._job_finished)

    async def start(self) -> None:
        """Rebuild quota counters from the ledger (the embedded store keeps none across restarts)."""
        now = time.time()
        cal = calendar_at(now)
        totals = await self.db.completed_totals(cal.day_start, cal.month_start)
        active = await self.db.active_jobs()
        for team in self.config.teams:
            videos_today, seconds_month, usd_month = totals.get(team.name, (0, 0, 0.0))
            await self.quotas.seed(
                team.name,
                videos_today=videos_today,
                seconds_month=seconds_month,
                usd_month=usd_month,
                active=[(j.reservation_id, _charge(j.seconds, j.price)) for j in active
                        if j.team == team.name and j.reservation_id],
                now=now,
            )

    async def sweep_forever(self) -> None:
        interval = min(max(self.config.cache.ttl_s / 2, 0.5), 300.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("store sweep failed")

    def adopt_running(self) -> None:
        """Jobs resumed after a restart can be joined by the same request sent again (e.g. an SDK retry)."""
        for handle in self.jobs.active.values():
            if handle.record.cache_key and not handle.done:
                self.flights.adopt(handle.record.cache_key, Generation(handle.record, handle, "miss", {}))

    def forget(self, record: JobRecord) -> None:
        """A video was deleted: never serve it as a hit again, and let no identical request join its job."""
        if record.cache_key:
            self._hits.pop(record.cache_key, None)
            self._release_flight(record)

    def _release_flight(self, record: JobRecord) -> None:
        """Identical requests stop joining this job (unless the flight already belongs to a newer one)."""
        flight = self.flights.get(record.cache_key)
        if flight is not None and flight.done() and not flight.exception() \
                and flight.result().record.id == record.id:
            self.flights.release(record.cache_key)

    async def sweep(self, now: float | None = None) -> int:
        """Remove finished videos older than cache.ttl_s: their files, and their place in the cache."""
        before = (now or time.time()) - self.config.cache.ttl_s
        expired = await self.db.expired_jobs(before)
        for record in expired:
            self.store.delete(record.id)
            self.forget(record)
            await self.db.update_job(record.id, deleted=True)
        if expired:
            log.info("swept expired videos", extra={"count": len(expired)})
        return len(expired)

    async def generate(self, principal: Principal, request: VideoRequest, request_id: str,
                       control: CacheControl = CacheControl(), image: ImageInput | None = None) -> Generation:
        """Serve `request` from the cache, an identical job in flight, or a new job.

        `image` is an input reference the caller already holds (an upload); without it, `request.image_url`
        is loaded here.
        """
        if image is None:
            image = await self._image(request.image_url)
        remix_source = await self._remix_source(principal, request.remix_of)
        team = principal.team.name
        cache = self.config.cache
        key = cache_key(request, image, team if cache.scope == "team" else None) if cache.enabled else None
        if key is not None and control.lookup:
            found = await self._lookup(principal, request, request_id, key)
            if found is not None:
                return found
        if key is None or not control.lookup or not control.store:
            # no-cache starts a job of its own (still saved for later hits); no-store keeps it out entirely
            return await self._submit(principal, request, request_id, image, remix_source,
                                      key if key and control.store else None)
        generation, joined = await self.flights.run(
            key, lambda: self._submit_once(principal, request, request_id, image, remix_source, key))
        if joined or generation.cache == "joined":
            return await self._joined(principal, request, request_id, generation.handle)
        return generation

    async def _submit_once(self, principal: Principal, request: VideoRequest, request_id: str,
                           image: ImageInput | None, remix_source: JobRecord | None, key: str) -> Generation:
        """Submit unless another instance already runs the same request; then follow its job instead."""
        coordinator = self.jobs.coordinator
        job_id = new_video_id()
        if coordinator.shared:
            ttl = max(self.config.upstream(u).job_timeout_s for u in request.model.upstreams) + 60
            existing = await coordinator.flight_claim(key, job_id, ttl)
            if existing is not None:
                handle = await self.jobs.attach(existing)
                if handle is not None and handle.record.status != "failed":
                    return Generation(handle.record, handle, "joined", {})
        try:
            return await self._submit(principal, request, request_id, image, remix_source, key, job_id=job_id)
        except BaseException:
            if coordinator.shared:
                await coordinator.flight_release(key, job_id)
            raise

    async def _lookup(self, principal: Principal, request: VideoRequest, request_id: str,
                      key: str) -> Generation | None:
        flight = self.flights.get(key)
        if flight is not None:
            generation = await flight
            return await self._joined(principal, request, request_id, generation.handle)
        record = self._hits.get(key)
        if record is None or record.completed_at < time.time() - self.config.cache.ttl_s:
            record = await self.db.find_cached(key, time.time() - self.config.cache.ttl_s)
            if record is None or not self.store.exists(record.id):
                return None
            self._hits[key] = record
        self.metrics.cache_result("hit")
        headers = await self._admit_hit(principal, request, request_id, record.id)
        return Generation(record, None, "hit", headers)

    async def _joined(self, principal: Principal, request: VideoRequest, request_id: str,
                      handle: JobHandle) -> Generation:
        self.metrics.cache_result("joined")
        headers = await self._admit_hit(principal, request, request_id, handle.record.id)
        return Generation(handle.record, handle, "joined", headers)

    async def _admit_hit(self, principal: Principal, request: VideoRequest, request_id: str, job_id: str
                         ) -> dict[str, str]:
        """A cache hit or a join counts against the request rate only, and costs nothing."""
        charge = _charge(request.seconds, request.price)
        answer = await self.quotas.admit(principal.team.name, principal.team.quotas, charge, count_job=False)
        row = self._ledger_row(principal, request, request_id, "cache_hit")
        row.job_id = job_id
        if isinstance(answer, Rejection):
            self.metrics.quota_rejected(answer.limit)
            row.outcome, row.job_id = "rejected", None
            await self.db.ledger_insert(row)
            raise _rejected(answer)
        await self.db.ledger_insert(row)
        return rate_headers(answer)

    async def _submit(self, principal: Principal, request: VideoRequest, request_id: str,
                      image: ImageInput | None, remix_source: JobRecord | None, key: str | None,
                      job_id: str | None = None) -> Generation:
        self.metrics.cache_result("miss")
        team = principal.team
        answer = await self.quotas.admit(team.name, team.quotas, _charge(request.seconds, request.price))
        if isinstance(answer, Rejection):
            self.metrics.quota_rejected(answer.limit)
            await self.db.ledger_insert(self._ledger_row(principal, request, request_id, "rejected"))
            raise _rejected(answer)
        try:
            handle = await self.jobs.submit(
                request, image, team=team.name, key_id=principal.key_id, request_id=request_id, cache_key=key,
                remix_source=remix_source, reservation_id=answer.reservation_id, job_id=job_id,
                ledger=self._ledger_row(principal, request, request_id, "pending"),
            )
        except APIError as exc:  # the job was written and failed: its end refunded the reservation
            exc.headers.update(rate_headers(answer))
            raise
        except BaseException:
            # e.g. the database refused the job: give the reservation back (refunds are idempotent)
            if answer.reservation_id:
                await self.quotas.refund(team.name, answer.reservation_id)
            raise
        return Generation(handle.record, handle, "miss", rate_headers(answer))

    async def _job_finished(self, record: JobRecord) -> None:
        if record.reservation_id:
            if record.status == "completed":
                await self.quotas.settle(record.team, record.reservation_id)
            else:
                await self.quotas.refund(record.team, record.reservation_id)
        if record.cache_key and self.jobs.coordinator.shared:
            await self.jobs.coordinator.flight_release(record.cache_key, record.id)
        if record.cache_key:
            self._release_flight(record)

    def _ledger_row(self, principal: Principal, request: VideoRequest, request_id: str, outcome: str) -> LedgerRow:
        return LedgerRow(request_id=request_id, time=time.time(), team=principal.team.name,
                         key_id=principal.key_id, model=request.model.name, size=request.size,
                         seconds=request.seconds, outcome=outcome, user=request.user,
                         latency_ms=0.0 if outcome in ("cache_hit", "rejected") else None)

    async def _image(self, url: str | None) -> ImageInput | None:
        if url is None:
            return None
        try:
            return await load_image(url, self.image_limits)
        except ImageError as exc:
            raise bad_request(str(exc), param="messages") from None

    async def _remix_source(self, principal: Principal, video_id: str | None) -> JobRecord | None:
        """The earlier video a conversation refers to, if it is this team's, finished, and remixable."""
        if video_id is None:
            return None
        record = await self.jobs.find(video_id)
        if record is None or record.team != principal.team.name or record.deleted:
            return None
        upstream = self.jobs.upstream_config(record.upstream)
        if record.status != "completed" or upstream is None or upstream.kind != "videos":
            return None
        return record


def rate_headers(answer: Admission | Rejection) -> dict[str, str]:
    if answer.rpm_limit is None:
        return {}
    return {
        "x-ratelimit-limit-requests": str(answer.rpm_limit),
        "x-ratelimit-remaining-requests": str(answer.rpm_remaining),
        "x-ratelimit-reset-requests": f"{answer.rpm_reset_s:.0f}s",
    }


def _rejected(rejection: Rejection) -> APIError:
    retry_after = max(1, int(rejection.retry_after_s + 0.999))
    headers = {"retry-after": str(retry_after), **rate_headers(rejection)}
    return APIError(429, rejection.message, code=rejection.code, headers=headers,
                    type="requests" if rejection.code == "rate_limit_exceeded" else "insufficient_quota")


def _charge(seconds: int, price: float) -> Charge:
    return Charge(videos=1, video_seconds=seconds, usd=price)

