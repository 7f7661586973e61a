"""Finished videos on local disk: written to a temporary name of their own, then renamed into place."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.backends.group_commit import GroupCommit
from gateway.core.store import MEDIA_TYPES, VARIANTS, StoredFile

__all__ = ["MEDIA_TYPES", "LocalVideoStore"]
READ_CHUNK = 256 * 1024
# temporary names: this process's random prefix and a counter, unique among the writers of a shared folder
_TEMP_PREFIX = secrets.token_hex(4)
_temp_numbers = itertools.count()


class LocalVideoStore:
    can_sign = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = self.root.resolve().as_uri()
        # Syncing, closing and renaming a file wait for the disk (or, on a network mount, the server), so they
        # leave the event loop, and the files finished in one loop turn go to one worker-thread call. Making the
        # file and writing it into the page cache stay: a second hand-off per file cost more CPU than it saved
        # (bench/README.md).
        self._finishes: GroupCommit[_Finish] = GroupCommit(_finish_all)

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
        # A name of its own: two writers of the same file (spritesheets fetched on demand) never interleave.
        temp = final.with_name(f"{final.name}.{_TEMP_PREFIX}{next(_temp_numbers)}.part")
        try:
            fd = _create(temp)
            size = 0
            try:
                async for chunk in chunks:
                    _write_all(fd, chunk)
                    size += len(chunk)
            except BaseException:
                os.close(fd)
                _remove(temp)
                raise
            # From here the worker thread owns the descriptor: it syncs, closes and renames (or removes) it.
            finish = _Finish(fd, temp, final)
            try:
                error = await asyncio.shield(self._finishes.submit(finish))
            except asyncio.CancelledError:
                finish.wanted = False  # if the thread is past its check, the file is in place, whole and synced
                raise
            if error is not None:
                raise error
        finally:
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


def _create(path: Path) -> int:
    """A new empty file, its folder made if need be; returns its descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:  # the first file of its folder
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


class _Finish:
    """A written file to sync, close and put in place; `wanted` goes false if its writer stops waiting."""

    __slots__ = ("fd", "final", "temp", "wanted")

    def __init__(self, fd: int, temp: Path, final: Path) -> None:
        self.fd, self.temp, self.final = fd, temp, final
        self.wanted = True

    def run(self) -> OSError | None:
        try:
            try:
                os.fsync(self.fd)
            finally:
                os.close(self.fd)
            if self.wanted:
                os.replace(self.temp, self.final)
                return None
        except OSError as exc:
            _remove(self.temp)
            return exc
        _remove(self.temp)  # nobody waits for it any more
        return None


async def _finish_all(finishes: list[_Finish]) -> list[OSError | None]:
    return await asyncio.to_thread(lambda: [finish.run() for finish in finishes])


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
