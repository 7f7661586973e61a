"""Serving a stored file over HTTP, from any `VideoStore`: one byte range (`Range`, `If-Range`), `ETag` and
`If-None-Match`, `HEAD`; or, with `storage.serve = "redirect"`, a 302 to a short-lived signed URL of the store.

The callers have done the link and team checks before; nothing here decides who may read a file.
"""
from __future__ import annotations

import re
from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from gateway.core.store import MEDIA_TYPES, StoredFile, VideoStore
from gateway.errors import APIError, bad_request

CACHE_CONTROL = "private, max-age=3600"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    pass


class Malformed(Exception):
    pass


async def redirect(store: VideoStore, video_id: str, variant: str, ttl_s: int) -> Response:
    url = await store.signed_url(video_id, variant, ttl_s)
    # the URL stops working after ttl_s, so nothing may keep the redirect longer than the request
    return RedirectResponse(url, 302, headers={"cache-control": "private, no-store"})


async def serve(request: Request, store: VideoStore, video_id: str, variant: str, meta: StoredFile) -> Response:
    headers = {"etag": meta.etag, "last-modified": formatdate(meta.modified, usegmt=True),
               "accept-ranges": "bytes", "cache-control": CACHE_CONTROL, "content-disposition": "inline"}
    if _matches(request.headers.get("if-none-match"), meta.etag):
        return Response(status_code=304, headers=headers)
    try:
        span = _range(request, meta)
    except Unsatisfiable:
        raise APIError(416, f"The requested range is not within the file's {meta.size} bytes.",
                       code="range_not_satisfiable", headers={"content-range": f"bytes */{meta.size}"}) from None
    except Malformed:
        raise bad_request("The Range header is malformed; send one range such as 'bytes=0-1023'.",
                          param="range") from None
    start, end = span or (0, meta.size)
    status = 200
    if span is not None:
        status = 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{meta.size}"
    headers["content-length"] = str(end - start)
    media_type = MEDIA_TYPES[variant]
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    chunks = await store.read(video_id, variant, start, end)
    if chunks is None:  # deleted between the two calls
        raise APIError(404, f"Video '{video_id}' has no {variant} content any more.", code="not_found")
    return StreamingResponse(chunks, status, headers=headers, media_type=media_type)


def _range(request: Request, meta: StoredFile) -> tuple[int, int] | None:
    """The one byte range asked for, as (start, end exclusive); None for the whole file.

    Several ranges are answered with the whole file, as HTTP allows, and so is a range whose `If-Range` names
    another version of the file; a header that is not a byte range at all is a 400 naming `range`.
    """
    header = request.headers.get("range")
    if not header:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != meta.etag:
        return None
    spec = header.strip().replace(" ", "")
    if spec.startswith("bytes=") and "," in spec:
        return None
    match = _RANGE.match(spec)
    if match is None:
        raise Malformed
    first, last = match.groups()
    if not first and not last:
        raise Malformed
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or meta.size == 0:
            raise Unsatisfiable
        return max(meta.size - n, 0), meta.size
    start = int(first)
    end = min(int(last) + 1, meta.size) if last else meta.size
    if last and int(last) < start:
        raise Malformed
    if start >= meta.size:
        raise Unsatisfiable
    return start, end


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))
