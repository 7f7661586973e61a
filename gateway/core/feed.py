"""The change feed of one job: its newest state, shared by whoever follows the job and every client waiting on it."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.core.errors import GatewayError
from gateway.core.records import JobRecord, is_terminal, status_rank

LIVE_FIELDS = ("status", "progress", "progress_estimated", "queue_position", "error_code", "error_message", "refused",
               "completed_at", "has_thumbnail")


class JobHandle:
    """The live state of one job.

    `record` is the newest state known in this process and only moves forward; `changes()` is what a waiting
    client reads; `accepted` resolves once the upstream has the job, or fails with the reason it never will.
    """

    __slots__ = ("_waiters", "accepted", "record", "version")

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.version = 0
        # one future per client waiting for the next wake-up: a list, not an asyncio.Event, whose deque costs
        # ten times the memory and was made anew on every wake-up of every open stream
        self._waiters: list[asyncio.Future[None]] = []
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if record.status != "submitting":
            self.accepted.set_result(None)

    @property
    def done(self) -> bool:
        return is_terminal(self.record.status)

    def live_state(self) -> bytes:
        return orjson.dumps({name: getattr(self.record, name) for name in LIVE_FIELDS})

    def adopt(self, values: JobRecord | Mapping[str, Any]) -> bool:
        """Take a state seen elsewhere (another instance, the database) if it is newer; True when it changed.

        Copies lag behind: the database holds coarse progress, pub/sub messages may arrive out of order. A state
        behind the one known here is ignored, and progress within one state never goes down (nor does its
        estimate mark change then: it describes the figure kept). A copy from an older instance may lack fields.
        """
        if not isinstance(values, Mapping):
            values = {name: getattr(values, name) for name in LIVE_FIELDS}
        if self.done:
            return False
        status = values.get("status", self.record.status)
        if status_rank(status) < status_rank(self.record.status):
            return False
        behind = status == self.record.status and values.get("progress", self.record.progress) < self.record.progress
        changed = False
        for name in LIVE_FIELDS:
            if name not in values or getattr(self.record, name) == values[name]:
                continue
            if behind and name in ("progress", "progress_estimated"):
                continue
            setattr(self.record, name, values[name])
            changed = True
        if changed:
            self._settle_acceptance()
            self.publish()
        return changed

    def publish(self) -> None:
        """A new state: every waiting client reads it."""
        self.version += 1
        self.wake()

    def wake(self) -> None:
        """No new state, but every waiting client looks up (a keep-alive tick, or a shutdown)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def accept(self) -> None:
        self._settle_acceptance()

    def refuse(self, error: GatewayError) -> None:
        """The upstream never took the job: callers waiting for acceptance get `error` (each its own copy)."""
        if not self.accepted.done():
            self.accepted.set_exception(error)
            self.accepted.exception()  # a stream never waits for it; nobody has to retrieve it

    def _settle_acceptance(self) -> None:
        if not self.accepted.done() and self.record.status != "submitting":
            self.accepted.set_result(None)

    async def wait_accepted(self) -> None:
        """Return once the upstream has the job; raise the reason when it never will."""
        try:
            await asyncio.shield(self.accepted)
        except GatewayError as exc:
            raise exc.for_another_caller() from None

    async def changes(self) -> AsyncIterator[bool]:
        """Yield True for every new state (the current one first) and False for keep-alive ticks.

        The feed ends right after it has yielded a final state, so however slowly the consumer reads, the last
        thing it sees is the job's end: a state that changed while the consumer was busy is yielded next.
        """
        seen = -1
        while True:
            if self.version != seen:
                seen = self.version
                final = self.done
                yield True
                if final:
                    return
                continue
            waiter = asyncio.get_running_loop().create_future()  # no await since looking: no change is missed
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
            if self.version == seen:
                yield False
