"""Turn a chat `image_url` part into image bytes: a data: URI decoded here, an http(s) URL fetched through the
outbound fetch guard (`gateway.net`: public addresses only, pinned connections, checked redirects, caps)."""
from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass

import httpx

from gateway.core.upstream import ImageInput
from gateway.net import FetchError, FetchPolicy, FetchTooLarge, InvalidURL, Resolver, fetch_bytes

__all__ = ["ImageError", "ImageLimits", "Resolver", "load_image", "sniff_mime"]

ACCEPTED = "image_url must be an https URL or a data: URI of a JPEG, PNG or WebP image"
NOT_AN_IMAGE = "image_url is not a JPEG, PNG or WebP image; send one of those formats"
_BASE64_CHARS = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_WHITESPACE = " \t\r\n\f\v"
_SLICE = 1 << 20


class ImageError(Exception):
    """A client-caused problem with the image; str(e) tells the user what to change."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3


async def load_image(
    url: str,
    limits: ImageLimits,
    *,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ImageInput:
    scheme = url.partition(":")[0].strip().lower()
    if scheme == "data":
        return decode_data_uri(url, limits.max_bytes)
    if scheme not in ("http", "https"):
        raise ImageError(ACCEPTED)
    return _as_image(await _fetch(url, limits, "image_url", "image/jpeg, image/png, image/webp", resolver, transport))


async def load_public_bytes(
    url: str,
    limits: ImageLimits,
    *,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """The body at a public http(s) URL, under the same checks as an image's (a character's `video_url`)."""
    return await _fetch(url, limits, "video_url", "video/*", resolver, transport)


async def _fetch(url: str, limits: ImageLimits, what: str, accept: str, resolver: Resolver | None,
                 transport: httpx.AsyncBaseTransport | None) -> bytes:
    policy = FetchPolicy(max_bytes=limits.max_bytes, timeout_s=limits.timeout_s, max_redirects=limits.max_redirects,
                         what=what, accept=accept)
    try:
        return await fetch_bytes(url, policy, resolver=resolver, transport=transport)
    except FetchTooLarge:
        noun = "image" if what == "image_url" else "file"
        raise ImageError(f"{noun} is larger than {limits.max_bytes} bytes; send a smaller {noun}") from None
    except InvalidURL as exc:
        raise ImageError(f"{exc}; {ACCEPTED}") from None
    except FetchError as exc:
        raise ImageError(str(exc)) from None


def sniff_mime(data: bytes) -> str | None:
    """The image type from the magic bytes, or None if it is not JPEG, PNG or WebP."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# -- data: URIs ----------------------------------------------------------------------------------------


def decode_data_uri(uri: str, max_bytes: int) -> ImageInput:
    comma = uri.find(",")
    if comma < 0:
        raise ImageError("image_url data: URI is malformed; expected data:image/png;base64,<data>")
    params = uri[:comma].split(";")[1:]
    if params and params[-1].strip().lower() == "base64":
        data = _decode_base64(uri, comma + 1, max_bytes)
    else:
        _check_size((len(uri) - comma) // 3, max_bytes)
        data = urllib.parse.unquote_to_bytes(uri[comma + 1:])
    _check_size(len(data), max_bytes)
    return _as_image(data)


def _decode_base64(text: str, start: int, max_bytes: int) -> bytes:
    """Decode `text[start:]` a slice at a time into one buffer of the decoded size.

    Memory stays near the size of the image whatever the padding: no copy of the whole payload is made, and
    whitespace is dropped slice by slice. The size check comes first, on an upper bound of the decoded size,
    so an oversized payload is refused before anything is allocated for it.
    """
    whitespace = sum(text.count(c, start) for c in _WHITESPACE)
    _check_size((len(text) - start - whitespace) * 3 // 4 - 2, max_bytes)
    out = bytearray()
    carry = b""
    for offset in range(start, len(text), _SLICE):
        piece = carry + _clean_base64(text[offset:offset + _SLICE])
        usable = len(piece) - len(piece) % 4
        out += _b64(piece[:usable])
        carry = piece[usable:]
    if carry:
        out += _b64(carry + b"=" * (-len(carry) % 4))
    return bytes(out)


def _clean_base64(piece: str) -> bytes:
    try:
        raw = piece.encode("ascii")
    except UnicodeEncodeError:
        raise _invalid_base64() from None
    raw = raw.translate(_URLSAFE, b" \t\r\n\f\v")
    if not _BASE64_CHARS.fullmatch(raw):
        raise _invalid_base64()
    return raw


def _b64(chunk: bytes) -> bytes:
    try:
        return base64.b64decode(chunk, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_base64() from None


def _invalid_base64() -> ImageError:
    return ImageError("image_url data: URI does not contain valid base64; re-encode the image")


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageError(f"image is larger than {max_bytes} bytes; send a smaller image")


def _as_image(data: bytes) -> ImageInput:
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(NOT_AN_IMAGE)
    return ImageInput(data=data, mime=mime)
