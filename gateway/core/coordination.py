"""What instances must agree on when several share the work: who follows which job, which identical request
is already in flight, which upstream keys are resting, and every job's latest status.

`gateway.backends.coordination.LocalCoordinator` is the single-process answer (everything in memory, every claim
granted); `gateway.backends.coordination_redis.RedisCoordinator` is the shared one.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

StatusListener = Callable[[str, bytes], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class KeyHealth:
    """Shared state of one upstream key. Times are wall-clock epoch seconds."""

    cooling_until: float = 0.0
    disabled_reason: str | None = None


class Coordinator(Protocol):
    instance_id: str
    shared: bool

    async def start(self, on_status: StatusListener, on_key: Callable[[str], None]) -> None: ...
    async def close(self) -> None: ...

    # job ownership: one instance follows a job; a dead instance's lease runs out and another claims it
    async def claim(self, job_id: str, ttl_s: float) -> bool: ...
    async def renew(self, job_ids: list[str], ttl_s: float) -> list[str]:
        """Extend this instance's leases; a lease that ran out and that nobody else took is claimed again.
        Returns the ids still held."""
    async def release(self, job_id: str) -> None: ...

    # status fan-out to clients connected to any instance
    async def publish(self, job_id: str, payload: bytes) -> None: ...

    # single flight: the first request with a cache key names the job; identical ones join it
    async def flight_claim(self, key: str, job_id: str, ttl_s: float) -> str | None: ...
    async def flight_replace(self, key: str, stale_job_id: str, job_id: str, ttl_s: float) -> str | None:
        """Point a claim that names a dead job at `job_id`; None when that worked, else the current holder."""
    async def flight_release(self, key: str, job_id: str) -> None: ...

    # upstream key health and per-key concurrency
    async def key_health(self, labels: list[str]) -> dict[str, KeyHealth]: ...
    async def set_key_health(self, label: str, health: KeyHealth) -> None: ...
    async def key_acquire(self, label: str, limit: int, lease_s: float) -> str | None: ...
    async def key_release(self, label: str, token: str) -> None: ...
    async def key_renew(self, label: str, token: str, lease_s: float) -> None: ...

    async def ping(self) -> bool: ...


def new_instance_id() -> str:
    return "gw_" + secrets.token_hex(6)


def wall_to_monotonic(wall: float) -> float:
    return time.monotonic() + (wall - time.time())
