"""How long finished videos are kept: the sweep that removes them after `cache.ttl_s`."""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from gateway.core.database import Database
from gateway.core.records import JobRecord
from gateway.core.store import VideoStore

log = logging.getLogger("gateway.service")


class Retention:
    def __init__(self, db: Database, store: VideoStore, ttl_s: Callable[[], float],
                 forget: Callable[[JobRecord], Awaitable[None]]) -> None:
        self.db = db
        self.store = store
        self.ttl_s = ttl_s
        self.forget = forget

    def interval_s(self) -> float:
        return min(max(self.ttl_s() / 2, 0.5), 300.0)

    async def sweep(self, now: float | None = None) -> int:
        """Remove finished videos older than the TTL: their files, and their place in the cache."""
        before = (now or time.time()) - self.ttl_s()
        expired = await self.db.expired_jobs(before)
        for record in expired:
            await self.store.delete(record.id)
            await self.db.update_job(record.id, deleted=True)
            await self.forget(record)  # after the update, so no read in between caches it as not deleted
        if expired:
            log.info("swept expired videos", extra={"count": len(expired)})
        return len(expired)
