"""Group commit: writes requested together share one transaction, and each caller still waits for its commit.

Requests that reach the database in the same event-loop turn are written by one `write_many` call, so a busy
gateway pays for one commit per batch instead of one per request, without holding back a response that was
not yet durable. `write_many` may answer each item (a list in the batch's order): each caller gets its own.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
WriteMany = Callable[[list[T]], Awaitable[list[Any] | None]]


class GroupCommit(Generic[T]):
    def __init__(self, write_many: WriteMany, max_batch: int = 500,
                 item_errors: tuple[type[Exception], ...] = ()) -> None:
        """`item_errors` are failures one item can cause (a duplicate key): a batch failing with one is written
        again item by item, so the others still commit and each caller hears its own answer."""
        self._write_many = write_many
        self._max_batch = max_batch
        self._item_errors = item_errors
        self._pending: list[tuple[T, asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task | None = None

    async def write(self, item: T) -> Any:
        """Write `item` with the others of this turn; returns its answer from `write_many` (or None)."""
        return await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[Any]:
        """`write` for a caller that must know what became of the item even if it stops waiting: the future
        of its answer, which the batch settles whether or not anyone still awaits it."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other requests of this turn join the batch
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
                try:
                    answers = await self._write_many([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter hears of it
                    if len(batch) > 1 and isinstance(exc, self._item_errors):
                        for one in batch:
                            await self._write_alone(one)
                    else:
                        _fail(batch, exc)
                else:
                    _answer(batch, answers)
        finally:
            self._flushing = None

    async def _write_alone(self, entry: tuple[T, asyncio.Future[Any]]) -> None:
        try:
            answers = await self._write_many([entry[0]])
        except Exception as exc:  # noqa: BLE001 - its waiter hears of it
            _fail([entry], exc)
        else:
            _answer([entry], answers)


def _answer(batch: list[tuple[T, asyncio.Future[Any]]], answers: list[Any] | None) -> None:
    for i, (_, future) in enumerate(batch):
        if not future.done():
            future.set_result(None if answers is None else answers[i])


def _fail(batch: list[tuple[T, asyncio.Future[Any]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
