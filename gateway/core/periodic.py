"""Background rounds that must outlive their own failures."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway")


async def every(interval_s: Callable[[], float], work: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `work` every `interval_s()` seconds until cancelled. A failing round (a database or Redis that is
    briefly away, say) is logged, and the next round runs as usual."""
    while True:
        await asyncio.sleep(interval_s())
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad round must not end the loop for good
            log.exception("%s failed; trying again next round", what)
