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
    def __init__(self, write_many: Callable[[list[T]], Awaitable[None]], max_batch: int = 500,
                 item_errors: tuple[type[Exception], ...] = ()) -> None:
        """`item_errors` are failures one item can cause (a duplicate key): a batch failing with one is written
        again item by item, so the others still commit and each caller hears its own answer."""
        self._write_many = write_many
        self._max_batch = max_batch
        self._item_errors = item_errors
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
                    if len(batch) > 1 and isinstance(exc, self._item_errors):
                        for one in batch:
                            await self._write_alone(one)
                    else:
                        _settle(batch, exc)
                else:
                    _settle(batch, None)
        finally:
            self._flushing = None

    async def _write_alone(self, entry: tuple[T, asyncio.Future[None]]) -> None:
        try:
            await self._write_many([entry[0]])
        except Exception as exc:  # noqa: BLE001 - its waiter hears of it
            _settle([entry], exc)
        else:
            _settle([entry], None)


def _settle(batch: list[tuple[T, asyncio.Future[None]]], exc: Exception | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
