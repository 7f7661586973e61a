"""What the core needs from the place finished videos are kept.

`gateway.backends.store_local.LocalVideoStore` keeps them on local disk.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

VARIANTS = {"video": ".mp4", "thumbnail": ".jpg", "spritesheet": ".sprite.jpg"}
MEDIA_TYPES = {"video": "video/mp4", "thumbnail": "image/jpeg", "spritesheet": "image/jpeg"}


class VideoStore(Protocol):
    async def save(self, video_id: str, variant: str, chunks: AsyncIterator[bytes]) -> int:
        """Write a file from `chunks`; it becomes visible only once complete. Returns its size."""

    async def exists(self, video_id: str, variant: str = "video") -> bool: ...
    async def delete(self, video_id: str) -> None:
        """Remove every variant of a video; a missing one is fine."""

    def local_path(self, video_id: str, variant: str = "video") -> Path:
        """Where the file lies on this machine, for serving it with ranges."""

    async def usage_bytes(self) -> int: ...
    async def writable(self) -> bool: ...
