"""uvicorn's server, taught to end open streams first when asked to stop."""
from __future__ import annotations

import asyncio
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
