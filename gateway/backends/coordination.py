"""The single-process Coordinator: this instance owns every job, and key state lives in its own KeyPools."""
from __future__ import annotations

from collections.abc import Callable

from gateway.core.coordination import KeyHealth, StatusListener, new_instance_id


class LocalCoordinator:
    shared = False

    def __init__(self) -> None:
        self.instance_id = new_instance_id()

    async def start(self, on_status: StatusListener, on_key: Callable[[str], None]) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim(self, job_id: str, ttl_s: float) -> bool:
        return True

    async def renew(self, job_ids: list[str], ttl_s: float) -> list[str]:
        return job_ids

    async def release(self, job_id: str) -> None:
        return None

    async def publish(self, job_id: str, payload: bytes) -> None:
        return None

    async def flight_claim(self, key: str, job_id: str, ttl_s: float) -> str | None:
        return None

    async def flight_replace(self, key: str, stale_job_id: str, job_id: str, ttl_s: float) -> str | None:
        return None

    async def flight_release(self, key: str, job_id: str) -> None:
        return None

    async def key_health(self, labels: list[str]) -> dict[str, KeyHealth]:
        return {}

    async def set_key_health(self, label: str, health: KeyHealth) -> None:
        return None

    async def key_acquire(self, label: str, limit: int, lease_s: float) -> str | None:
        return "local"

    async def key_release(self, label: str, token: str) -> None:
        return None

    async def key_renew(self, label: str, token: str, lease_s: float) -> None:
        return None

    async def ping(self) -> bool:
        return True
