"""The jobs clients can wait on in this process: those it follows, and those another instance follows."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
from cachetools import TTLCache

from gateway.core.coordination import Coordinator
from gateway.core.database import Database
from gateway.core.feed import JobHandle
from gateway.core.keypool import KeySlot
from gateway.core.records import JobRecord, is_terminal
from gateway.core.upstream import Upstream

log = logging.getLogger("gateway.jobs")
ATTACH_WAIT_S = 5.0  # how long a job named by another instance's flight claim may take to appear in the database
# Finished jobs read recently, so polling a finished video costs no database read. A finished record only
# changes when it is deleted: here that updates the cached record itself (or `forget` drops it); a delete
# made through another instance shows here within FINISHED_TTL_S.
FINISHED_TTL_S = 5.0
FINISHED_MAX = 10_000


@dataclass(slots=True)
class FollowedJob:
    """A job this instance follows: its feed, and what following it holds.

    `upstream` is the adapter the job was submitted through, kept for the job's whole life, so a config reload
    that replaces the adapter never sends the job's polls or downloads somewhere else.
    """

    handle: JobHandle
    upstream: Upstream | None = None
    slot: KeySlot | None = None
    task: asyncio.Task | None = None

    @property
    def record(self) -> JobRecord:
        return self.handle.record


@dataclass(slots=True)
class _Finished:
    """A finished record read recently, and the last encoding of it that was asked for (`LiveJobs.encoded`)."""

    record: JobRecord
    key: object = None
    body: bytes | None = None


class LiveJobs:
    def __init__(self, db: Database, coordinator: Coordinator) -> None:
        self.db = db
        self.coordinator = coordinator
        self.followed: dict[str, FollowedJob] = {}
        self.watched: dict[str, JobHandle] = {}
        self._finished: TTLCache[str, _Finished] = TTLCache(maxsize=FINISHED_MAX, ttl=FINISHED_TTL_S)

    def live(self, job_id: str) -> JobHandle | None:
        followed = self.followed.get(job_id)
        return followed.handle if followed is not None else self.watched.get(job_id)

    def handles(self) -> Iterator[JobHandle]:
        yield from (job.handle for job in list(self.followed.values()))
        yield from list(self.watched.values())

    async def find(self, job_id: str) -> JobRecord | None:
        """A job's record: the live one while it runs here, else the database's."""
        handle = self.live(job_id)
        if handle is not None:
            return handle.record
        finished = self._finished.get(job_id)
        if finished is not None:
            return finished.record
        record = await self.db.get_job(job_id)
        if record is not None and is_terminal(record.status):
            self._finished[job_id] = _Finished(record)
        return record

    def encoded(self, record: JobRecord, key: object, encode: Callable[[JobRecord], bytes]) -> bytes:
        """`encode(record)`, kept with the finished record `find` returned while `key` (what else the bytes
        depend on, such as a link expiry) stays the same; dropped with the record (`forget`, or its TTL)."""
        finished = self._finished.get(record.id)
        if finished is None or finished.record is not record:
            return encode(record)
        if finished.key != key or finished.body is None:
            finished.key, finished.body = key, encode(record)
        return finished.body

    def forget(self, job_id: str) -> None:
        """A finished job was deleted or expired: read it from the database next time."""
        self._finished.pop(job_id, None)

    async def attach(self, job_id: str, wait_s: float = ATTACH_WAIT_S) -> JobHandle | None:
        """A handle on any job, followed here or elsewhere, that a client can wait on."""
        handle = self.live(job_id)
        if handle is not None:
            return handle
        deadline = time.monotonic() + wait_s
        while (record := await self.db.get_job(job_id)) is None and time.monotonic() < deadline:
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

    async def publish(self, handle: JobHandle) -> None:
        """A new state: clients here read it at once, clients of other instances through the coordinator.

        The fan-out is best effort: an instance that misses a message re-reads the database on its next tick.
        """
        handle.publish()
        try:
            await self.coordinator.publish(handle.record.id, handle.live_state())
        except Exception as exc:  # noqa: BLE001 - the job goes on; watchers elsewhere catch up from the database
            log.warning("job status fan-out failed", extra={"job_id": handle.record.id, "error": type(exc).__name__})

    async def on_remote_status(self, job_id: str, payload: bytes) -> None:
        """A status published by the instance that follows the job."""
        handle = self.watched.get(job_id)
        if handle is None:
            return
        handle.adopt(orjson.loads(payload))
        if handle.done:
            self.watched.pop(job_id, None)

    async def keepalive(self) -> None:
        """One tick: every waiting stream wakes (for its ping); watched jobs are re-read as a safety net."""
        for job in list(self.followed.values()):
            job.handle.wake()
        for job_id, handle in list(self.watched.items()):
            record = await self.db.get_job(job_id)
            if record is not None and not handle.adopt(record):
                handle.wake()
            if handle.done:
                self.watched.pop(job_id, None)

    def watch(self, handle: JobHandle) -> None:
        """Another instance follows this job now; clients here keep waiting on the same handle."""
        if not handle.done:
            self.watched[handle.record.id] = handle
