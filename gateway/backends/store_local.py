"""Finished videos on local disk: written to a temporary name of their own, then renamed into place."""
from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.core.store import MEDIA_TYPES, VARIANTS

__all__ = ["MEDIA_TYPES", "LocalVideoStore"]


class LocalVideoStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def local_path(self, video_id: str, variant: str = "video") -> Path:
        return self.root / video_id[-2:] / f"{video_id}{VARIANTS[variant]}"

    async def exists(self, video_id: str, variant: str = "video") -> bool:
        return self.local_path(video_id, variant).is_file()

    async def save(self, video_id: str, variant: str, chunks: AsyncIterator[bytes]) -> int:
        final = self.local_path(video_id, variant)
        final.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: two writers of the same file (spritesheets fetched on demand) never interleave.
        temp = final.with_name(f"{final.name}.{secrets.token_hex(6)}.part")
        size = 0
        try:
            with open(temp, "wb") as f:
                async for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return size

    async def delete(self, video_id: str) -> None:
        for variant in VARIANTS:
            self.local_path(video_id, variant).unlink(missing_ok=True)

    async def usage_bytes(self) -> int:
        return await asyncio.to_thread(self._usage_bytes)

    def _usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    async def writable(self) -> bool:
        probe = self.root / f".probe-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False
