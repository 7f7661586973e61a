"""Following an upstream job to its end, and storing what it made."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from gateway.core.errors import UpstreamFailed, UpstreamTimeout
from gateway.core.faults import Action, Decision, Operation, backoff_s, decide
from gateway.core.keypool import KeyPool
from gateway.core.live import FollowedJob
from gateway.core.records import JobRecord
from gateway.core.store import VideoStore
from gateway.core.upstream import JobLost, Upstream, UpstreamError, UpstreamKey, UpstreamStatus

log = logging.getLogger("gateway.jobs")
DOWNLOAD_ATTEMPTS = 4
OnStatus = Callable[[FollowedJob, UpstreamStatus], Awaitable[None]]


class Follower:
    """Follows a job's upstream to its end and copies what it made into the video store. Every failed upstream
    call counts against the job's key as the fault table says."""

    def __init__(self, store: VideoStore, pools: Mapping[str, KeyPool]) -> None:
        self.store = store
        self.pools = pools

    async def follow(self, job: FollowedJob, budget_s: float, limit_s: float, on_status: OnStatus) -> UpstreamStatus:
        """Read the upstream's reports until a final one; `on_status(job, report)` sees each report before it.

        `budget_s` (what is left of the job's `limit_s`) bounds only the generation: storing the result
        afterwards has its own limits, so a video that is ready just in time is still delivered. Raises
        UpstreamTimeout or UpstreamFailed.
        """
        try:
            async with asyncio.timeout(max(budget_s, 0.0)):
                async for status in job.upstream.track(job.record.upstream_job_id, job.slot.key):
                    if status.done:
                        return status
                    await on_status(job, status)
        except TimeoutError:
            raise UpstreamTimeout(f"the video was not ready within {limit_s:g} s") from None
        except JobLost as exc:
            raise UpstreamFailed(f"the upstream job was lost: {exc}") from None
        except UpstreamError as exc:  # a dialect whose job is its stream (a relay) reports a broken one here
            operation = Operation.STREAM if job.upstream.kind == "chat" else Operation.POLL
            await self._count(job, operation, exc)
            raise UpstreamFailed(f"the upstream job could not be followed: {exc.message}") from None
        raise UpstreamFailed("the upstream stopped reporting on the job")

    async def video(self, job: FollowedJob, final: UpstreamStatus) -> None:
        """Store the video; raises UpstreamFailed when it cannot be had."""
        record, upstream, key = job.record, job.upstream, job.slot.key
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                chunks = await upstream.download(record.upstream_job_id, key, final, "video")
                if chunks is None:
                    raise UpstreamFailed("the upstream has no video content for the job")
                await self.store.save(record.id, "video", chunks)
                return
            except UpstreamError as exc:
                decision = await self._count(job, Operation.DOWNLOAD, exc)
                if decision.action is Action.GONE or attempt == DOWNLOAD_ATTEMPTS:
                    raise UpstreamFailed(f"the finished video could not be downloaded: {exc.message}") from None
                await asyncio.sleep(backoff_s(attempt))

    async def _count(self, job: FollowedJob, operation: Operation, exc: UpstreamError) -> Decision:
        decision = decide(operation, exc.status, getattr(job.upstream, "faults", None))
        pool = self.pools.get(job.record.upstream)
        state = pool.get(job.slot.key.label) if pool is not None else None
        if pool is not None and state is not None:
            await pool.failed(state, decision.key, exc.message, exc.retry_after)
        return decision

    async def preview(self, record: JobRecord, upstream: Upstream, key: UpstreamKey, final: UpstreamStatus,
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
