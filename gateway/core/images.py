"""Turn a chat `image_url` part into image bytes: a data: URI decoded here, an http(s) URL fetched through the
outbound fetch guard (`gateway.net`: public addresses only, pinned connections, checked redirects, caps)."""
from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass

import httpx

from gateway.net import FetchError, FetchPolicy, FetchTooLarge, InvalidURL, Resolver, fetch_bytes
from gateway.upstreams.base import ImageInput

__all__ = ["ImageError", "ImageLimits", "Resolver", "load_image", "sniff_mime"]

ACCEPTED = "image_url must be an https URL or a data: URI of a JPEG, PNG or WebP image"
NOT_AN_IMAGE = "image_url is not a JPEG, PNG or WebP image; send one of those formats"
_BASE64_CHARS = re.compile(rb"[A-Za-z0-9+/\-_]*={0,2}")


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
    policy = FetchPolicy(max_bytes=limits.max_bytes, timeout_s=limits.timeout_s, max_redirects=limits.max_redirects,
                         what="image_url", accept="image/jpeg, image/png, image/webp")
    try:
        data = await fetch_bytes(url, policy, resolver=resolver, transport=transport)
    except FetchTooLarge:
        raise ImageError(f"image is larger than {limits.max_bytes} bytes; send a smaller image") from None
    except InvalidURL as exc:
        raise ImageError(f"{exc}; {ACCEPTED}") from None
    except FetchError as exc:
        raise ImageError(str(exc)) from None
    return _as_image(data)


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
    header, comma, payload = uri.partition(",")
    if not comma:
        raise ImageError("image_url data: URI is malformed; expected data:image/png;base64,<data>")
    params = header.split(";")[1:]
    if params and params[-1].strip().lower() == "base64":
        data = _decode_base64(payload, max_bytes)
    else:
        _check_size(len(payload) // 3, max_bytes)
        data = urllib.parse.unquote_to_bytes(payload)
    _check_size(len(data), max_bytes)
    return _as_image(data)


def _decode_base64(payload: str, max_bytes: int) -> bytes:
    """Decode without making more than one extra copy of the text, however it is padded with whitespace.

    The size check comes first on an upper bound of the decoded size, so an oversized payload is refused
    before anything is allocated for it.
    """
    _check_size((len(payload) - _count_whitespace(payload)) * 3 // 4 - 2, max_bytes)
    try:
        raw = payload.encode("ascii")
    except UnicodeEncodeError:
        raise _invalid_base64() from None
    if any(c in raw for c in b" \t\r\n\f\v"):
        raw = raw.translate(None, b" \t\r\n\f\v")
    if b"-" in raw or b"_" in raw:
        raw = raw.translate(bytes.maketrans(b"-_", b"+/"))
    if not _BASE64_CHARS.fullmatch(raw):
        raise _invalid_base64()
    if len(raw) % 4:
        raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_base64() from None


def _count_whitespace(text: str) -> int:
    return sum(text.count(c) for c in " \t\r\n\f\v")


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
