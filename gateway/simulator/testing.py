"""Run the simulator (or any ASGI app) on a real socket in a background thread, for tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from .app import create_simulator_app
from .settings import SimulatorSettings

START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def run_in_thread(settings: SimulatorSettings | None = None, *, app: ASGIApp | None = None) -> Iterator[str]:
    """Serve `app` (default: a simulator built from `settings`) on a free local port.

    Yields the server root, e.g. `http://127.0.0.1:54321`; the upstream base_url is that plus `/v1`.
    Pass `app=` to keep a handle on it, e.g. `app.state.sim` of a simulator app.
    """
    if app is None:
        app = create_simulator_app(settings or SimulatorSettings())
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the proto says TCP, and
    # without it every response pays a delayed-ACK stall (~40 ms) between its header and body writes.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="asyncio",
        lifespan="auto",
        log_level="warning",
        access_log=False,
        # hung and streaming requests are cancelled this long after shutdown starts
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until_started(server, thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        sock.close()


def wait_until_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start within {START_TIMEOUT_S} s")
        time.sleep(0.005)
