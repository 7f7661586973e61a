"""What the core needs from the place finished videos are kept.

`gateway.backends.store_local.LocalVideoStore` keeps them on local disk; `gateway.backends.store_object.
ObjectVideoStore` in an object store (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob), so that
several machines share them without a shared disk.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gateway.core.errors import GatewayError

VARIANTS = {"video": ".mp4", "thumbnail": ".jpg", "spritesheet": ".sprite.jpg"}
MEDIA_TYPES = {"video": "video/mp4", "thumbnail": "image/jpeg", "spritesheet": "image/jpeg"}


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What is known of a stored file without reading it."""

    size: int
    etag: str  # as sent in an ETag header, quotes included
    modified: float  # epoch seconds


class StoreUnavailable(GatewayError):
    """The video store did not answer or refused an operation; the message names no credential or URL."""

    default_code = "store_unavailable"


class VideoStore(Protocol):
    location: str  # where the files are, for operators: `file:///…`, `s3://bucket/prefix`; never a credential
    can_sign: bool  # whether `signed_url` works (an object store), so content can be redirected to the store

    async def save(self, video_id: str, variant: str, chunks: AsyncIterator[bytes]) -> int:
        """Write a file from `chunks` without holding it in memory; it becomes visible only once complete.
        Returns its size."""

    async def exists(self, video_id: str, variant: str = "video") -> bool: ...

    async def stat(self, video_id: str, variant: str = "video") -> StoredFile | None:
        """Size, ETag and time of a stored file; None when there is none."""

    async def read(self, video_id: str, variant: str, start: int, end: int) -> AsyncIterator[bytes] | None:
        """Bytes `start` to `end` (exclusive) of a stored file, streamed; None when the file is gone. The store
        has answered by the time this returns, so a failure is raised here rather than mid-stream."""

    async def signed_url(self, video_id: str, variant: str, expires_s: int) -> str:
        """A URL of the store itself that serves the file to anyone holding it for `expires_s` seconds."""

    async def delete(self, video_id: str) -> None:
        """Remove every variant of a video; a missing one is fine."""

    async def usage_bytes(self) -> int: ...
    async def writable(self) -> bool: ...


async def read_whole(store: VideoStore, video_id: str, variant: str = "video") -> bytes | None:
    """A stored file's bytes, for the few uses that need them all at once (a character's source clip, which
    the upload size limit bounds); None when it is not there."""
    meta = await store.stat(video_id, variant)
    chunks = await store.read(video_id, variant, 0, meta.size) if meta is not None else None
    if chunks is None:
        return None
    return b"".join([chunk async for chunk in chunks])
