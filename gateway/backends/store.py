"""Finished videos on local disk: written once to a temporary name, then renamed into place."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

VARIANTS = {"video": ".mp4", "thumbnail": ".jpg", "spritesheet": ".sprite.jpg"}
MEDIA_TYPES = {"video": "video/mp4", "thumbnail": "image/jpeg", "spritesheet": "image/jpeg"}


class LocalVideoStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, video_id: str, variant: str = "video") -> Path:
        return self.root / video_id[-2:] / f"{video_id}{VARIANTS[variant]}"

    def exists(self, video_id: str, variant: str = "video") -> bool:
        return self.path(video_id, variant).is_file()

    async def save(self, video_id: str, variant: str, chunks: AsyncIterator[bytes]) -> int:
        final = self.path(video_id, variant)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(final.name + ".part")
        size = 0
        try:
            with open(temp, "wb") as f:
                async for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return size

    def delete(self, video_id: str) -> None:
        for variant in VARIANTS:
            self.path(video_id, variant).unlink(missing_ok=True)

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def writable(self) -> bool:
        probe = self.root / ".probe"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False
