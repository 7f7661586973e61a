"""uvicorn's server, taught to end open streams first when asked to stop."""
from __future__ import annotations

import asyncio
import gc
from types import FrameType

import uvicorn
from starlette.applications import Starlette


class GatewayServer(uvicorn.Server):
    """On SIGTERM/SIGINT, open streams are told their job continues and end at once; then uvicorn stops
    accepting, lets the connections finish, and runs the shutdown that hands running jobs back."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.gateway_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            asyncio.get_running_loop().call_soon(self.gateway_app.state.begin_shutdown)
        except RuntimeError:  # no loop yet: nothing is open
            pass
        super().handle_exit(sig, frame)


# A process serving thousands of streams holds hundreds of thousands of objects; at the interpreter's default
# thresholds (700, 10, 10) the cycle collector ran so often that it took a tenth of the CPU of a stream
# (perf, bench/streams.py --n 3000). Young objects are now collected every GC_THRESHOLDS[0] allocations.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Once the app is built: what was made at start-up stays out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
