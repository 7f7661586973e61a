"""Turn a chat `image_url` part into image bytes.

Remote images are fetched only from public addresses. Every hop's host is resolved and checked, and the
connection is made to the checked address itself (Host header and TLS SNI keep the name), so a DNS answer
that changes between the check and the connect cannot redirect the fetch to an internal service.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.core.upstream import ImageInput

__all__ = ["ImageError", "ImageLimits", "Resolver", "load_image", "load_public_bytes", "sniff_mime"]

Resolver = Callable[[str], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ACCEPTED = "image_url must be an https URL or a data: URI of a JPEG, PNG or WebP image"
NOT_AN_IMAGE = "image_url is not a JPEG, PNG or WebP image; send one of those formats"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?", re.IGNORECASE)
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", re.IGNORECASE)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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
    try:
        async with asyncio.timeout(limits.timeout_s):
            return await _fetch(_parse_url(url), limits, resolver or resolve_host, transport)
    except TimeoutError:
        raise ImageError(
            f"image_url did not download within {limits.timeout_s:g} seconds; "
            "use a faster host or a data: URI"
        ) from None


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
    text = "".join(payload.split())
    # Refuse before decoding so an oversized payload never gets a second copy in memory.
    _check_size(len(text) * 3 // 4 - 2, max_bytes)
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image_url data: URI does not contain valid base64; re-encode the image") from None


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageError(f"image is larger than {max_bytes} bytes; send a smaller image")


def _as_image(data: bytes) -> ImageInput:
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(NOT_AN_IMAGE)
    return ImageInput(data=data, mime=mime)


# -- address checks ------------------------------------------------------------------------------------


async def resolve_host(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(addr: IPAddress) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            return is_public_address(embedded)
        if addr.is_site_local:
            return False
    return addr.is_global and not (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a mapped, 6to4 or NAT64 address actually reaches."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _non_public(host: str, address: str) -> ImageError:
    return ImageError(
        f"image_url host {host!r} resolves to a non-public address ({address}); "
        "use a publicly reachable URL or a data: URI"
    )


def _literal_address(host: str) -> IPAddress | None:
    try:
        # A zone id ("fe80::1%eth0") does not change what the address is.
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


async def checked_addresses(host: str, resolver: Resolver) -> list[str]:
    """Addresses to connect to for `host`; raises unless every one of them is public."""
    literal = _literal_address(host)
    if literal is not None:
        if not is_public_address(literal):
            raise _non_public(host, str(literal))
        return [str(literal)]
    if _NUMERIC_HOST.fullmatch(host):
        # 2130706433, 0x7f.1, 017700000001, 127.1: resolvers read these as IPv4, often as loopback.
        raise ImageError(
            f"image_url host {host!r} is not a standard IP address or hostname; "
            "use a publicly reachable hostname or a data: URI"
        )
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise _non_public(host, "127.0.0.1")
    try:
        resolved = await resolver(host)
    except OSError:
        resolved = []
    if not resolved:
        raise ImageError(f"image_url host {host!r} could not be resolved; check the URL")
    addresses = []
    for raw in resolved:
        addr = _literal_address(raw)
        if addr is None or not is_public_address(addr):
            raise _non_public(host, raw)
        addresses.append(str(addr))
    return addresses


# -- http(s) fetch -------------------------------------------------------------------------------------


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw.strip())
    except httpx.InvalidURL:
        raise ImageError("image_url is not a valid URL; " + ACCEPTED) from None
    _require_http_url(url)
    return url


def _require_http_url(url: httpx.URL) -> None:
    if url.scheme not in ("http", "https"):
        raise ImageError(ACCEPTED)
    host = _host(url)
    if not host:
        raise ImageError("image_url has no host; " + ACCEPTED)
    if _literal_address(host) is None and not _HOSTNAME.fullmatch(host):
        raise ImageError("image_url is not a valid URL; " + ACCEPTED)


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii")


async def load_public_bytes(
    url: str,
    limits: ImageLimits,
    *,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """The body at a public http(s) URL, under the same checks as an image's (a character's `video_url`)."""
    async with asyncio.timeout(limits.timeout_s):
        return await _fetch(_parse_url(url), limits, resolver or resolve_host, transport, convert=bytes)


async def _fetch(
    url: httpx.URL, limits: ImageLimits, resolver: Resolver, transport: httpx.AsyncBaseTransport | None,
    convert: Callable[[bytes], Any] = _as_image,
) -> Any:
    async with httpx.AsyncClient(
        transport=transport or httpx.AsyncHTTPTransport(retries=0),
        timeout=limits.timeout_s,
        follow_redirects=False,
        trust_env=False,
    ) as client:
        for _ in range(limits.max_redirects + 1):
            addresses = await checked_addresses(_host(url), resolver)
            response = await _connect(client, url, addresses)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    url = _redirect_target(url, location)
                    continue
                _check_status(url, response)
                return convert(await _read_body(url, response, limits.max_bytes))
            finally:
                await response.aclose()
    raise ImageError(
        f"image_url redirected more than {limits.max_redirects} times; use the final image URL"
    )


async def _connect(client: httpx.AsyncClient, url: httpx.URL, addresses: list[str]) -> httpx.Response:
    """Send the request to the first checked address that accepts a connection."""
    error: httpx.HTTPError | None = None
    for address in addresses:
        try:
            return await client.send(_pinned_request(client, url, address), stream=True)
        except httpx.ConnectError as exc:
            error = exc
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            error = exc
            break
    raise ImageError(
        f"could not download image_url from host {_host(url)!r} ({type(error).__name__}); "
        "check that the URL is publicly reachable or use a data: URI"
    )


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: str) -> httpx.Request:
    """A request for `url` whose connection goes to `address`; Host and TLS still use the URL's name."""
    host = _host(url)
    extensions: dict[str, str] = {}
    if url.scheme == "https" and _literal_address(host) is None:
        # httpcore uses this for SNI and for hostname verification of the certificate.
        extensions["sni_hostname"] = host
    return client.build_request(
        "GET",
        url.copy_with(host=address),
        headers={
            "Host": url.netloc.decode("ascii"),
            "Accept": "image/jpeg, image/png, image/webp",
            # Images are compressed already; asking for identity keeps the size limit about real bytes.
            "Accept-Encoding": "identity",
        },
        extensions=extensions,
    )


def _redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        target = url.join(location)
        _require_http_url(target)
    except (httpx.InvalidURL, ImageError):
        raise ImageError(
            f"image_url host {_host(url)!r} redirected to an unsupported URL; use the final image URL"
        ) from None
    return target


def _check_status(url: httpx.URL, response: httpx.Response) -> None:
    if not response.is_success:
        raise ImageError(
            f"image_url host {_host(url)!r} answered HTTP {response.status_code}; "
            "check that the image URL is public and still valid"
        )


async def _read_body(url: httpx.URL, response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit():
        _check_size(int(declared), max_bytes)
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            _check_size(len(body), max_bytes)
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:
        raise ImageError(
            f"download of image_url from host {_host(url)!r} failed ({type(exc).__name__}); try again"
        ) from None
    return bytes(body)
