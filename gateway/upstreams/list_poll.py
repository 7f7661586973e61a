"""Following many jobs of one key with one list call per interval, instead of one call per job.

The Videos API lists a key's videos newest first. Each round reads pages until every followed job has been
seen; jobs the listing does not reach, and every job of an upstream without a list endpoint, are polled one by
one. Clients never see the difference: each job still gets a stream of status snapshots.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.core.faults import Action, Operation, decide
from gateway.core.upstream import UpstreamError, UpstreamStatus

log = logging.getLogger("gateway.upstreams")
MAX_PAGES = 20  # per round, or enough pages for every followed job; anything older is polled on its own
PAGE_SIZE = 100
_FALLBACK_CONCURRENCY = 32

ListPage = Callable[[str | None], Awaitable[dict[str, Any]]]
GetOne = Callable[[str], Awaitable[UpstreamStatus]]


class _Watch:
    """The newest status of one job not yet read by its follower, and the follower's wait for one (a future,
    not an asyncio.Event: one job, one waiter, and no deque held for the job's whole life)."""

    __slots__ = ("latest", "waiter")

    def __init__(self) -> None:
        self.latest: UpstreamStatus | None = None
        self.waiter: asyncio.Future[None] | None = None

    def set(self, status: UpstreamStatus) -> None:
        self.latest = status
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class ListPoller:
    """All followed jobs of one upstream key, polled together."""

    def __init__(self, list_page: ListPage, get_one: GetOne, to_status: Callable[[dict], UpstreamStatus],
                 interval_s: float) -> None:
        self._list_page = list_page
        self._get_one = get_one
        self._to_status = to_status
        self.interval_s = interval_s
        self.listing = True  # False once the upstream shows it has no list endpoint
        self._watched: dict[str, _Watch] = {}
        self._task: asyncio.Task | None = None

    async def follow(self, upstream_id: str) -> AsyncIterator[UpstreamStatus]:
        watch = self._watched.setdefault(upstream_id, _Watch())
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="list-poller")
        try:
            while True:
                if watch.latest is None:
                    watch.waiter = asyncio.get_running_loop().create_future()
                    try:
                        await watch.waiter
                    finally:
                        watch.waiter = None
                status, watch.latest = watch.latest, None
                yield status
                if status.done:
                    return
        finally:
            self._watched.pop(upstream_id, None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        failures = 0
        while self._watched:
            await asyncio.sleep(min(self.interval_s * (2 ** min(failures, 5)), 60.0))
            try:
                failures = 0 if await self._round() else failures + 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - an unexpected answer must not leave every followed job hanging
                log.exception("list poll round failed; trying again next round")
                failures += 1

    async def _round(self) -> bool:
        """One round over every followed job; False when the listing failed (the next round backs off)."""
        wanted = set(self._watched)  # the round reads the listing until it saw all of these
        listed = True
        try:
            seen = await self._list_round(wanted) if self.listing else {}
        except UpstreamError as exc:
            if decide(Operation.LIST, exc.status).action is Action.UNSUPPORTED:
                log.info("upstream has no usable list endpoint; polling jobs one by one")
                self.listing = False
            else:
                listed = False
            seen = {}
        for upstream_id, status in seen.items():
            if (watch := self._watched.get(upstream_id)) is not None:
                watch.set(status)
        unseen = [i for i in wanted if i not in seen and i in self._watched]
        if unseen:
            await self._poll_each(unseen)
        return listed

    async def _list_round(self, wanted: set[str]) -> dict[str, UpstreamStatus]:
        """The statuses the listing shows of followed jobs, read until every job of `wanted` was seen. Jobs that
        joined while the round ran are newer, so they come first in the listing: they count towards the pages
        read (or a burst of new jobs would push the round's own below its last page, to be polled one by one),
        and what the listing says of them is passed on too."""
        seen: dict[str, UpstreamStatus] = {}
        after: str | None = None
        pages = 0
        while pages < max(MAX_PAGES, len(self._watched) // PAGE_SIZE + 5):
            pages += 1
            page = await self._list_page(after)
            data = page.get("data") if isinstance(page.get("data"), list) else []
            for video in data:
                if isinstance(video, dict) and video.get("id") in self._watched:
                    seen[video["id"]] = self._to_status(video)
            if wanted <= seen.keys() or not page.get("has_more") or not data:
                break
            after = page.get("last_id") or data[-1].get("id")
        return seen

    async def _poll_each(self, upstream_ids: list[str]) -> None:
        limit = asyncio.Semaphore(_FALLBACK_CONCURRENCY)

        async def one(upstream_id: str) -> None:
            async with limit:
                try:
                    status = await self._get_one(upstream_id)
                except UpstreamError as exc:
                    if decide(Operation.POLL, exc.status).action is not Action.GONE:
                        return  # transient: the next round tries again
                    status = UpstreamStatus("failed", error_code="upstream_error", error_message=exc.message)
            if (watch := self._watched.get(upstream_id)) is not None:
                watch.set(status)

        await asyncio.gather(*(one(i) for i in upstream_ids))
