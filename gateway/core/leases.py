"""Leases: which instance follows which job, renewed while it does, and taken over when an instance goes away.

A job is leased from the moment it is recorded, including while it is being submitted, so no other instance
mistakes a slow submission for a dead one. A lease that ran out without anyone taking it is simply renewed;
one that another instance took means that instance follows the job now: this one lets go of it (its poller
and its key slot) and keeps its waiting clients on the same handle.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from gateway.core.coordination import Coordinator
from gateway.core.database import Database
from gateway.core.keypool import KeyPool
from gateway.core.live import LiveJobs
from gateway.core.records import JobRecord

log = logging.getLogger("gateway.jobs")
LEASE_S = 10.0  # a job whose follower stops renewing is taken over by another instance after this
Resume = Callable[[JobRecord], Awaitable[bool]]


class Leases:
    def __init__(self, coordinator: Coordinator, live: LiveJobs, pools: Mapping[str, KeyPool], db: Database,
                 resume: Resume) -> None:
        self.coordinator = coordinator
        self.live = live
        self.pools = pools
        self.db = db
        self.resume = resume

    def interval_s(self) -> float:
        return LEASE_S / 4 if self.coordinator.shared else 30.0

    async def claim(self, job_id: str) -> bool:
        return await self.coordinator.claim(job_id, LEASE_S)

    async def release(self, job_id: str) -> None:
        await self.coordinator.release(job_id)

    async def round(self) -> None:
        await self.renew()
        if self.coordinator.shared:
            await self.take_over()

    async def renew(self) -> None:
        followed = list(self.live.followed)
        held = set(await self.coordinator.renew(followed, LEASE_S))
        for job_id in followed:
            job = self.live.followed.get(job_id)
            if job is None:
                continue
            if job_id not in held:
                await self._let_go(job_id)
            elif job.slot is not None:
                await self.pools[job.record.upstream].renew(job.slot)

    async def _let_go(self, job_id: str) -> None:
        job = self.live.followed.pop(job_id)
        log.warning("job lease lost; another instance follows it now", extra={"job_id": job_id})
        if job.task is not None:
            job.task.cancel()
        if job.slot is not None:
            slot, job.slot = job.slot, None
            pool = self.pools.get(slot.key.upstream)
            if pool is not None:
                await pool.release(slot)
        self.live.watch(job.handle)

    async def take_over(self) -> int:
        """Follow every unfinished job no live instance follows (after a restart, or a crash elsewhere)."""
        resumed = 0
        for record in await self.db.active_jobs():
            if record.id in self.live.followed or not await self.coordinator.claim(record.id, LEASE_S):
                continue
            if await self.resume(record):
                resumed += 1
        if resumed:
            log.info("resumed unfinished jobs", extra={"count": resumed, "instance": self.coordinator.instance_id})
        return resumed
