"""Group commit: writes requested together share one transaction, and each caller still waits for its commit.

Requests that reach the database in the same event-loop turn are written by one `write_many` call, so a busy
gateway pays for one commit per batch instead of one per request, without holding back a response that was
not yet durable.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, write_many: Callable[[list[T]], Awaitable[None]], max_batch: int = 500) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task | None = None

    async def write(self, item: T) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other requests of this turn join the batch
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
                try:
                    await self._write_many([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter hears of it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flushing = None
