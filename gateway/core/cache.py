"""Response cache keys and single-flight: the same video is never paid for twice."""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

from gateway.core.request import VideoRequest
from gateway.upstreams.base import ImageInput

T = TypeVar("T")


def normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.split())


def cache_key(request: VideoRequest, image: ImageInput | None, team: str | None) -> str:
    """Hash of everything that decides the video; `team` is None when the cache is global."""
    parts = [
        team or "*",
        request.model.name,
        request.model.upstream_model,
        normalise_prompt(request.prompt),
        request.size,
        request.seconds,
        hashlib.sha256(image.data).hexdigest() if image else "",
        request.remix_of or "",
    ]
    return "vc1:" + hashlib.sha256(orjson.dumps(parts)).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheControl:
    lookup: bool = True  # False for `Cache-Control: no-cache`
    store: bool = True  # False for `Cache-Control: no-store`

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return cls()
        directives = {d.strip().split("=", 1)[0].lower() for d in header.split(",")}
        return cls(lookup="no-cache" not in directives, store="no-store" not in directives)


class SingleFlight(Generic[T]):
    """Concurrent callers with the same key share one execution of `start`.

    The key is registered before the first await, so two requests arriving together can never both start.
    Entries leave when `start` finishes; the caller decides how long its result stays joinable (see `release`).
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    def get(self, key: str) -> asyncio.Future[T] | None:
        return self._flights.get(key)

    async def run(self, key: str, start: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return (result, joined)."""
        existing = self._flights.get(key)
        if existing is not None:
            return await asyncio.shield(existing), True
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            result = await start()
        except BaseException as exc:
            self._flights.pop(key, None)
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                future.exception()  # joiners re-raise it; mark it retrieved for the loop
            raise
        future.set_result(result)
        return result, False

    def adopt(self, key: str, value: T) -> None:
        """Make an already running execution joinable (a job resumed after a restart)."""
        if key not in self._flights:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            future.set_result(value)
            self._flights[key] = future

    def release(self, key: str) -> None:
        self._flights.pop(key, None)
