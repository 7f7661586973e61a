"""Finished videos on local disk: written to a temporary name of their own, then renamed into place."""
from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.core.store import MEDIA_TYPES, VARIANTS, StoredFile

__all__ = ["MEDIA_TYPES", "LocalVideoStore"]
READ_CHUNK = 256 * 1024


class LocalVideoStore:
    can_sign = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = self.root.resolve().as_uri()

    def local_path(self, video_id: str, variant: str = "video") -> Path:
        return self.root / video_id[-2:] / f"{video_id}{VARIANTS[variant]}"

    async def exists(self, video_id: str, variant: str = "video") -> bool:
        return self.local_path(video_id, variant).is_file()

    async def stat(self, video_id: str, variant: str = "video") -> StoredFile | None:
        try:
            st = self.local_path(video_id, variant).stat()
        except FileNotFoundError:
            return None
        tag = hashlib.md5(f"{st.st_mtime_ns}-{st.st_size}".encode(), usedforsecurity=False).hexdigest()
        return StoredFile(size=st.st_size, etag=f'"{tag}"', modified=st.st_mtime)

    async def read(self, video_id: str, variant: str, start: int, end: int) -> AsyncIterator[bytes] | None:
        try:
            f = open(self.local_path(video_id, variant), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            return None  # an open file stays readable even if it is deleted meanwhile
        return _read_range(f, start, end)

    async def signed_url(self, video_id: str, variant: str, expires_s: int) -> str:
        raise NotImplementedError("a local folder has no signed URLs: serve its files through the gateway")

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


async def _read_range(f, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(READ_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        f.close()
