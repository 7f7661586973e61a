"""Test plumbing: servers on real sockets, test configs, and waiting for conditions without sleeps."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from gateway.config import Config, load_config, parse_config
from gateway.core.auth import hash_key

ALPHA_KEY = "sk-team-alpha-0123456789"
BETA_KEY = "sk-team-beta-0123456789"
LIMITED_KEY = "sk-team-limited-0123456789"
ADMIN_KEY = "sk-admin-0123456789abcdef"
SIGNING_SECRET = "test-signing-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class PromptServer(uvicorn.Server):
    """uvicorn's server, stopping as soon as it is told to. uvicorn looks at `should_exit` every 0.1 s and waits
    0.1 s more, and then 0.1 s at a time, while connections close: 0.2 s a server, minutes over a suite that
    starts a thousand. The steps of the shutdown are uvicorn's, in its order."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """From any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):  # on_tick keeps uvicorn's date header and exit checks
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._wake.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


class ServerThread:
    """Runs an ASGI app under uvicorn on a free port in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.server = PromptServer(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                  lifespan="on", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive())
        if not self.server.started:
            raise RuntimeError("server failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.thread.join(15)


def base_config(tmp_path: Path, upstream_url: str, *, keys: list[str] | None = None, kind: str = "videos",
                **overrides: Any) -> dict[str, Any]:
    """A raw config dict (as parsed from TOML) for tests; `overrides` are merged per top-level table."""
    raw: dict[str, Any] = {
        "server": {"public_url": "http://127.0.0.1:1", "signing_secret": SIGNING_SECRET,
                   "admin_keys": [ADMIN_KEY], "max_body_bytes": 2_000_000, "ping_interval_s": 0.2,
                   "metrics_public": True},
        "storage": {"database": f"sqlite:///{tmp_path}/gateway.db", "videos_dir": f"{tmp_path}/videos"},
        "cache": {"enabled": True, "ttl_s": 3600, "scope": "team"},
        "upstreams": [upstream_table(upstream_url, kind=kind, keys=keys or ["sk-good-1"])],
        "models": {"sora-2": {"upstreams": ["sim"], "upstream_model": "sora-2", "sizes": ["720x1280", "1280x720"],
                              "seconds_allowed": [4, 8, 12], "price_per_second": 0.10},
                   "org/sora-2-pro": {"upstreams": ["sim"], "upstream_model": "sora-2-pro",
                                      "price_per_second": 0.30}},
        "teams": [{"name": "alpha", "keys": [hash_key(ALPHA_KEY)]},
                  {"name": "beta", "keys": [hash_key(BETA_KEY)]},
                  {"name": "limited", "keys": [hash_key(LIMITED_KEY)], "models": ["org/sora-2-pro"]}],
    }
    for table, values in overrides.items():
        if isinstance(values, dict) and isinstance(raw.get(table), dict):
            raw[table] = {**raw[table], **values}
        else:
            raw[table] = values
    return raw


def upstream_table(upstream_url: str, **settings: Any) -> dict[str, Any]:
    """The `[[upstreams]]` entry of `base_config`, with `settings` changed."""
    return {"name": "sim", "kind": "videos", "base_url": upstream_url, "keys": ["sk-good-1"],
            "max_concurrent_per_key": 50, "poll_interval_s": 0.05, "timeout_s": 5, "job_timeout_s": 60,
            "max_retry_s": 10, **settings}


def build_config(raw: dict[str, Any]) -> Config:
    return parse_config(copy.deepcopy(raw), env={})


@contextlib.contextmanager
def running_gateway(raw: dict[str, Any]) -> Iterator[ServerThread]:
    """Start a gateway for `raw`, with server.public_url pointing at its own port."""
    from gateway.app import create_app

    port = free_port()
    raw = copy.deepcopy(raw)
    raw["server"]["public_url"] = f"http://127.0.0.1:{port}"
    folder = raw["storage"].get("videos_dir") or raw["storage"]["database"].removeprefix("sqlite:///")
    path = Path(folder).parent / f"gateway-{port}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(raw))
    with ServerThread(create_app(load_config(path, env={})), port=port) as server:
        server.config_path = path
        yield server


def to_toml(raw: dict[str, Any]) -> str:
    """Enough TOML for test configs: scalars, arrays of scalars, tables and arrays of tables."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(type(v))

    def table(name: str, t: dict[str, Any], header: str) -> None:
        lines.append(header)
        nested = []
        for k, v in t.items():
            if isinstance(v, dict):
                nested.append((k, v))
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in nested:
            table(f"{name}.{k}", v, f"[{name}.{k}]")

    for key, value in raw.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                table(key, item, f"[[{key}]]")
        elif isinstance(value, dict) and key == "models":
            for alias, t in value.items():
                table(f'models."{alias}"', t, f'[models."{alias}"]')
        elif isinstance(value, dict):
            table(key, value, f"[{key}]")
    return "\n".join(lines) + "\n"


def process_config(tmp_path: Path, upstream_url: str, **server: Any) -> tuple[Path, int]:
    """A config file for a gateway run as its own process on a free port; returns (path, port)."""
    port = free_port()
    raw = base_config(tmp_path, upstream_url)
    raw["server"].update(public_url=f"http://127.0.0.1:{port}", **server)
    path = tmp_path / f"gateway-{port}.toml"
    path.write_text(to_toml(raw))
    return path, port


def running_video_id(stream: Any) -> str:
    """Read a chat stream until its video is generating upstream (the upstream took the job); return the id.

    The first chunk comes as soon as the job is recorded, before the upstream has answered the create."""
    for chunk in stream:
        video = chunk.model_extra["video"]
        if video["status"] != "queued":
            return video["id"]
    raise AssertionError("the stream ended before the upstream took the job")


def finished_video(client: Any, video_id: str, timeout: float = 30.0) -> Any:
    """Retrieve a video through the SDK until it is completed or failed."""
    return wait_until(lambda: (v := client.videos.retrieve(video_id)).status in ("completed", "failed") and v,
                      timeout=timeout)


@contextlib.contextmanager
def failing(obj: Any, method: str, error: Exception) -> Iterator[None]:
    """Make `obj.method` raise `error` for a while: a fault in a backend of a running gateway."""
    had_own = method in vars(obj)
    original = getattr(obj, method)

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    setattr(obj, method, fail)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, method, original)
        else:
            delattr(obj, method)
