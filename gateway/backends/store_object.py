"""Finished videos in an object store: S3 (and S3-compatible servers such as MinIO or R2), Google Cloud Storage
or Azure Blob, through `obstore`.

A file smaller than `PART_BYTES` is written in one PUT; a larger one streams from the upstream download as a
multipart upload (at most `PART_CONCURRENCY` parts in flight, so an upload holds about 10 MB however long the
video). The store makes either visible only once it is complete; S3 also checks a SHA-256 of every part.
Reads stream a byte range. Credentials come from the environment, as each cloud's own tools read them
(`AWS_*`, `GOOGLE_*`, `AZURE_*`, instance and workload identities); none of them is ever logged or put in an
error.
"""
from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import obstore
from obstore.store import from_url

from gateway.core.store import MEDIA_TYPES, VARIANTS, StoredFile, StoreUnavailable

log = logging.getLogger("gateway.store")
PART_BYTES = 5 * 1024 * 1024  # S3's smallest part
PART_CONCURRENCY = 2
READ_CHUNK = 256 * 1024
CONNECT_TIMEOUT_S = 5
STALL_TIMEOUT_S = 30  # no byte for this long: the request failed
REQUEST_TIMEOUT_S = 3600  # the longest a single request may take (a large video to a slow client)
RETRY_WITHIN_S = 15  # a store that keeps failing is reported (503 store_unavailable) rather than waited on
_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")


class ObjectVideoStore:
    can_sign = True

    def __init__(self, url: str, *, endpoint: str = "") -> None:
        self.location = url
        options: dict[str, Any] = {}
        if url.startswith("s3://"):
            options["checksum_algorithm"] = "sha256"
            if endpoint:
                options["endpoint"] = endpoint
        client: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=CONNECT_TIMEOUT_S),
            # a proxied download goes at the client's pace, so a whole request may take long; a stalled one may not
            "timeout": timedelta(seconds=REQUEST_TIMEOUT_S),
            "read_timeout": timedelta(seconds=STALL_TIMEOUT_S),
            "allow_http": endpoint.startswith("http://"),
        }
        retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=RETRY_WITHIN_S)}
        self.store = from_url(url, client_options=client, retry_config=retry, **options)

    @staticmethod
    def key(video_id: str, variant: str) -> str:
        return f"{video_id}{VARIANTS[variant]}"

    async def save(self, video_id: str, variant: str, chunks: AsyncIterator[bytes]) -> int:
        """A file smaller than one part (most thumbnails, short videos) goes in one PUT; a larger one as a
        multipart upload that streams the rest of `chunks` as it arrives."""
        size = 0
        source_failed: list[BaseException] = []
        source = aiter(chunks)  # a download may be an iterable rather than an iterator

        async def rest(first: list[bytes]) -> AsyncIterator[bytes]:
            nonlocal size
            for chunk in first:
                yield chunk
            try:
                async for chunk in source:
                    size += len(chunk)
                    yield chunk
            except BaseException as exc:
                source_failed.append(exc)
                raise

        try:
            first, complete = await _take(source, PART_BYTES)  # the download's own errors pass through
            size = sum(len(chunk) for chunk in first)
            body = b"".join(first) if complete else rest(first)
            try:
                await obstore.put_async(self.store, self.key(video_id, variant), body,
                                        attributes={"Content-Type": MEDIA_TYPES[variant]},
                                        chunk_size=PART_BYTES, max_concurrency=PART_CONCURRENCY)
            except Exception as exc:  # noqa: BLE001 - whatever the store said, the write failed
                if source_failed:  # the download broke, not the store: its error decides what happens next
                    raise source_failed[0] from None
                raise _unavailable("write", exc) from None
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return size

    async def exists(self, video_id: str, variant: str = "video") -> bool:
        return await self.stat(video_id, variant) is not None

    async def stat(self, video_id: str, variant: str = "video") -> StoredFile | None:
        try:
            meta = await obstore.head_async(self.store, self.key(video_id, variant))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise _unavailable("read", exc) from None
        etag = meta["e_tag"] or f'"{meta["size"]}-{meta["last_modified"].timestamp():.0f}"'
        return StoredFile(size=meta["size"], etag=etag, modified=meta["last_modified"].timestamp())

    async def read(self, video_id: str, variant: str, start: int, end: int) -> AsyncIterator[bytes] | None:
        options: dict[str, Any] = {"range": (start, end)} if end > start else {}
        try:
            result = await obstore.get_async(self.store, self.key(video_id, variant), options=options)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise _unavailable("read", exc) from None
        return _chunks(result.stream(READ_CHUNK), end - start)

    async def signed_url(self, video_id: str, variant: str, expires_s: int) -> str:
        try:
            return await obstore.sign_async(self.store, "GET", self.key(video_id, variant),
                                            timedelta(seconds=expires_s))
        except Exception as exc:  # noqa: BLE001
            raise _unavailable("sign", exc) from None

    async def delete(self, video_id: str) -> None:
        try:
            await obstore.delete_async(self.store, [self.key(video_id, variant) for variant in VARIANTS])
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise _unavailable("delete", exc) from None

    async def usage_bytes(self) -> int:
        total = 0
        try:
            async for batch in obstore.list(self.store, chunk_size=1000):
                total += sum(meta["size"] for meta in batch)
        except Exception as exc:  # noqa: BLE001
            raise _unavailable("list", exc) from None
        return total

    async def writable(self) -> bool:
        probe = f".probe/{secrets.token_hex(6)}"
        try:
            await obstore.put_async(self.store, probe, b"ok")
            await obstore.delete_async(self.store, probe)
        except Exception as exc:  # noqa: BLE001 - not writable, whatever the reason
            log.warning("video store is not writable", extra={"error": _describe(exc)})
            return False
        return True


async def _take(chunks: AsyncIterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """The first chunks of `chunks` up to `limit` bytes, and whether that was all of them."""
    taken: list[bytes] = []
    held = 0
    while held < limit:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return taken, True
        taken.append(chunk)
        held += len(chunk)
    return taken, False


async def _chunks(stream: Any, expected: int) -> AsyncIterator[bytes]:
    """The store's buffers as they arrive (zero-copy views), stopping at the end of the requested range."""
    left = expected
    async for chunk in stream:
        view = memoryview(chunk)
        if len(view) > left:
            view = view[:left]
        left -= len(view)
        yield view  # type: ignore[misc] - a bytes-like view: the server writes it as is
        if left <= 0:
            break


def _describe(exc: BaseException) -> str:
    """The store's error in one line, with any URL's query (a signature or SAS token) cut off."""
    text = str(exc).strip()
    first = _QUERY.sub(r"\1?…", text.splitlines()[0]) if text else ""
    return f"{type(exc).__name__}: {first[:300]}"


def _unavailable(operation: str, exc: BaseException) -> StoreUnavailable:
    log.warning("video store operation failed", extra={"operation": operation, "error": _describe(exc)})
    return StoreUnavailable(f"The video store could not {operation} the file right now ({type(exc).__name__});"
                            " retry shortly.", retry_after=2)
