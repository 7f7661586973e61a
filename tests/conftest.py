from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from gateway.simulator.app import SimulatorSettings, create_simulator_app
from tests.support import (
    ADMIN_KEY,
    ALPHA_KEY,
    BETA_KEY,
    LIMITED_KEY,
    SIGNING_SECRET,
    ServerThread,
    base_config,
    running_gateway,
)

pytest_plugins = ["tests.object_store"]
SECRETS = [ALPHA_KEY, BETA_KEY, LIMITED_KEY, ADMIN_KEY, SIGNING_SECRET]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("gateway.simulator"):
            return
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001
            text = str(record.msg)
        self.lines.append(text + " " + " ".join(f"{k}={v}" for k, v in vars(record).items()
                                                 if k not in logging.LogRecord.__dict__))


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[list[str]]:
    """Every test doubles as a check that no team, admin or upstream key reaches a log line."""
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    secrets = list(SECRETS)
    yield secrets
    root.removeHandler(capture)
    root.setLevel(old_level)
    leaks = [(s, line) for line in capture.lines for s in secrets if s in line]
    assert not leaks, f"secret found in log output: {leaks[0][1][:300]}"


@pytest.fixture
def start_simulator(no_secrets_in_logs: list[str]) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(**settings) -> ServerThread:
        settings.setdefault("duration_s", 0.4)
        server = ServerThread(create_simulator_app(SimulatorSettings(**settings)))
        server.__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


@pytest.fixture
def simulator(start_simulator) -> ServerThread:
    return start_simulator()


@pytest.fixture
def start_gateway(tmp_path, no_secrets_in_logs) -> Iterator[Callable[..., ServerThread]]:
    """Start a gateway whose config is `base_config` plus overrides; upstream keys are checked for leaks."""
    stack = []

    def start(upstream: ServerThread, **overrides) -> ServerThread:
        raw = base_config(tmp_path, upstream.url + "/v1", **overrides)
        for u in raw["upstreams"]:
            no_secrets_in_logs.extend(u["keys"])
        cm = running_gateway(raw)
        server = cm.__enter__()
        server.raw = raw
        stack.append(cm)
        return server

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def gateway(start_gateway, simulator) -> ServerThread:
    return start_gateway(simulator)
