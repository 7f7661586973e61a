"""Single-flight: identical requests share one job, within this process and across instances.

Locally, the first request for a cache key leads and the others wait on its future. Across instances, the
leader claims the key in the coordinator, naming its job; an identical request elsewhere finds the claim and
follows that job. A claim or a local entry that names a job which failed, was deleted or never got written is
stale: it is replaced, so one dead job never turns single-flight off for its key.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.core.coordination import Coordinator
from gateway.core.feed import JobHandle
from gateway.core.live import LiveJobs
from gateway.core.records import JobRecord

Start = Callable[[str], Awaitable[JobHandle]]


class FlightAbandoned(Exception):
    """The leader stopped before it had a job (its own quota, a disconnect): a joiner must start on its own."""


def _stale(handle: JobHandle) -> bool:
    return handle.record.status == "failed" or handle.record.deleted


class Flights:
    def __init__(self, live: LiveJobs, coordinator: Coordinator, new_id: Callable[[], str]) -> None:
        self.live = live
        self.coordinator = coordinator
        self.new_id = new_id
        self._local: dict[str, asyncio.Future[JobHandle]] = {}

    async def run(self, key: str, start: Start, claim_ttl_s: float) -> tuple[JobHandle, bool]:
        """The job for `key`: one in flight (joined = True) or a new one from `start(job_id)` (joined = False).

        A join returns a job that may already be finished; the caller decides what that means for it.
        """
        while True:
            future = self._local.get(key)
            if future is None:
                return await self._lead(key, start, claim_ttl_s)
            try:
                handle = await asyncio.shield(future)
            except FlightAbandoned:
                continue
            if handle.done:  # it ended, here or on another instance: nothing to join any more
                self._forget(key, handle.record.id)
                if _stale(handle):
                    continue
            return handle, True

    async def _lead(self, key: str, start: Start, claim_ttl_s: float) -> tuple[JobHandle, bool]:
        future: asyncio.Future[JobHandle] = asyncio.get_running_loop().create_future()
        self._local[key] = future  # before the first await: two requests arriving together never both lead
        try:
            handle, joined = await self._claim_or_start(key, start, claim_ttl_s)
        except BaseException:
            self._local.pop(key, None)
            future.set_exception(FlightAbandoned())
            future.exception()  # joiners see it; nobody else has to
            raise
        future.set_result(handle)
        return handle, joined

    async def _claim_or_start(self, key: str, start: Start, claim_ttl_s: float) -> tuple[JobHandle, bool]:
        job_id = self.new_id()
        if self.coordinator.shared:
            holder = await self.coordinator.flight_claim(key, job_id, claim_ttl_s)
            while holder is not None:
                handle = await self.live.attach(holder)
                if handle is not None and not _stale(handle):
                    return handle, True
                holder = await self.coordinator.flight_replace(key, holder, job_id, claim_ttl_s)
        try:
            return await start(job_id), False
        except BaseException:
            if self.coordinator.shared:
                await self.coordinator.flight_release(key, job_id)
            raise

    def adopt(self, key: str, handle: JobHandle) -> None:
        """Make a job resumed after a restart joinable by the same request sent again."""
        if key not in self._local:
            future: asyncio.Future[JobHandle] = asyncio.get_running_loop().create_future()
            future.set_result(handle)
            self._local[key] = future

    async def release(self, record: JobRecord) -> None:
        """A job ended or was deleted: identical requests stop joining it (a completed one is a cache hit now)."""
        if record.cache_key is None:
            return
        self._forget(record.cache_key, record.id)
        if self.coordinator.shared:
            await self.coordinator.flight_release(record.cache_key, record.id)

    def _forget(self, key: str, job_id: str) -> None:
        future = self._local.get(key)
        if future is not None and future.done() and not future.exception() and future.result().record.id == job_id:
            del self._local[key]
