"""The one outbound fetch guard: every URL the gateway fetches on someone else's word goes through here.

Image URLs from clients, media links from chat relays and (later) webhooks may point anywhere, so a fetch:
- resolves the host and refuses unless every address is public (no loopback, private, link-local, metadata,
  NAT64 or mapped forms of those), and connects to the checked address itself (Host header and TLS SNI keep
  the name), so a DNS answer that changes between check and connect cannot turn the fetch inward;
- follows redirects itself, checking each hop the same way;
- caps the bytes on the wire and after decoding (gzip and deflate are decoded here, a chunk at a time, so a
  small compressed body cannot silently grow into a huge one), and the time it takes;
- refuses in messages that name the host as given, never what it resolves to.

`allowed_origins` lets a caller trust one exact origin (scheme, host, port), such as a relay's own configured
base URL: its address is not required to be public, everything else (pinning, caps, redirects) still applies.
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx

__all__ = ["FetchError", "FetchPolicy", "FetchTooLarge", "Fetched", "InvalidURL", "Origin", "Resolver",
           "checked_addresses", "fetch_bytes", "is_public_address", "open_url", "origin_of", "resolve_host"]

Resolver = Callable[[str], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Origin = tuple[str, str, int]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?", re.IGNORECASE)
_HOSTNAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?", re.IGNORECASE)
_MAX_HOSTNAME = 253
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DECODED_CHUNK = 64 * 1024


class FetchError(Exception):
    """The fetch was refused or failed; str(e) is safe to show the client and says what to change."""


class FetchTooLarge(FetchError):
    """The body passed `max_bytes`, on the wire or decoded."""


class InvalidURL(FetchError):
    """The URL cannot be fetched at all: not http(s), no host, a malformed or overlong hostname."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits of one fetch. `what` names the URL in messages ("image_url", "the relay's video link")."""

    max_bytes: int
    timeout_s: float = 10.0  # each network step (connect, each read)
    total_s: float | None = None  # the whole fetch; None: timeout_s
    max_redirects: int = 3
    what: str = "the URL"
    accept: str = "*/*"
    allowed_origins: frozenset[Origin] = field(default_factory=frozenset)

    @property
    def deadline_s(self) -> float:
        return self.total_s if self.total_s is not None else self.timeout_s


# -- addresses -----------------------------------------------------------------------------------------


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


def literal_address(host: str) -> IPAddress | None:
    try:
        # A zone id ("fe80::1%eth0") does not change what the address is.
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _non_public(what: str, host: str) -> FetchError:
    # Which address it was stays in the gateway: naming it would map the internal network for the caller.
    return FetchError(f"{what} host {host!r} resolves to a non-public address; use a publicly reachable URL")


async def checked_addresses(host: str, resolver: Resolver, what: str = "the URL", *,
                            require_public: bool = True) -> list[str]:
    """Addresses to connect to for `host`; raises unless every one of them is public (when required)."""
    literal = literal_address(host)
    if literal is not None:
        if require_public and not is_public_address(literal):
            raise _non_public(what, host)
        return [str(literal)]
    if _NUMERIC_HOST.fullmatch(host):
        # 2130706433, 0x7f.1, 017700000001, 127.1: resolvers read these as IPv4, often as loopback.
        raise FetchError(f"{what} host {host!r} is not a standard IP address or hostname; use a public hostname")
    name = host.rstrip(".").lower()
    if require_public and (name == "localhost" or name.endswith(".localhost")):
        raise _non_public(what, host)
    try:
        resolved = await resolver(host)
    except (OSError, UnicodeError, ValueError):
        resolved = []
    if not resolved:
        raise FetchError(f"{what} host {host!r} could not be resolved; check the URL")
    addresses = []
    for raw in resolved:
        addr = literal_address(raw)
        if addr is None or (require_public and not is_public_address(addr)):
            raise _non_public(what, host)
        addresses.append(str(addr))
    return addresses


# -- URLs ----------------------------------------------------------------------------------------------


def parse_http_url(raw: str, what: str) -> httpx.URL:
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        raise InvalidURL(f"{what} is not a valid URL") from None
    require_http_url(url, what)
    return url


def require_http_url(url: httpx.URL, what: str) -> None:
    if url.scheme not in ("http", "https"):
        raise InvalidURL(f"{what} must be an http(s) URL")
    host = host_of(url)
    if not host:
        raise InvalidURL(f"{what} has no host")
    if literal_address(host) is None and (len(host) > _MAX_HOSTNAME or not _HOSTNAME.fullmatch(host)):
        raise InvalidURL(f"{what} is not a valid URL: the hostname is malformed or too long")


def host_of(url: httpx.URL) -> str:
    try:
        return url.raw_host.decode("ascii")
    except UnicodeDecodeError:
        return ""


def origin_of(url: str | httpx.URL) -> Origin | None:
    """(scheme, host, port) with the scheme's default port filled in; None for a URL without one."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        return None
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, host_of(parsed).lower(), port


# -- fetching ------------------------------------------------------------------------------------------


class Fetched:
    """A response whose body is read through the caps: `chunks()` yields decoded bytes, then closes it."""

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response, url: httpx.URL, policy: FetchPolicy,
                 deadline: float) -> None:
        self._client = client
        self.response = response
        self.url = url
        self.policy = policy
        self._deadline = deadline

    @property
    def status_code(self) -> int:
        return self.response.status_code

    async def chunks(self) -> AsyncIterator[bytes]:
        policy, what = self.policy, self.policy.what
        decoder = _decoder(self.response.headers.get("content-encoding", ""), what)
        wire = decoded = 0
        try:
            declared = self.response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise _too_large(policy)
            async for raw in _raw_chunks(self.response):
                wire += len(raw)
                if wire > policy.max_bytes:
                    raise _too_large(policy)
                if time.monotonic() > self._deadline:
                    raise FetchError(f"{what} did not download within {policy.deadline_s:g} seconds")
                for piece in decoder(raw):
                    decoded += len(piece)
                    if decoded > policy.max_bytes:
                        raise _too_large(policy)
                    yield piece
            for piece in decoder(None):
                decoded += len(piece)
                if decoded > policy.max_bytes:
                    raise _too_large(policy)
                yield piece
        except httpx.TimeoutException:
            raise FetchError(f"{what} stalled for more than {policy.timeout_s:g} seconds") from None
        except (httpx.HTTPError, httpx.StreamError, zlib.error) as exc:
            raise FetchError(f"download of {what} from host {host_of(self.url)!r} failed "
                             f"({type(exc).__name__}); try again") from None
        finally:
            await self.aclose()

    async def read(self) -> bytes:
        body = bytearray()
        async for piece in self.chunks():
            body += piece
        return bytes(body)

    async def aclose(self) -> None:
        await self.response.aclose()
        await self._client.aclose()


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent. A response built with its content in memory (a mock transport) has no raw stream."""
    if hasattr(response, "_content"):
        yield response.content
        return
    async for raw in response.aiter_raw():
        yield raw


def _too_large(policy: FetchPolicy) -> FetchError:
    return FetchTooLarge(f"{policy.what} is larger than {policy.max_bytes} bytes")


def _decoder(encoding: str, what: str) -> Callable[[bytes | None], Iterator[bytes]]:
    """Decode gzip/deflate a bounded piece at a time, so no single chunk can expand without limit."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return _identity
    if name in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif name == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise FetchError(f"{what} was sent with an unsupported content-encoding; serve it uncompressed")

    def decode(data: bytes | None) -> Iterator[bytes]:
        if data is None:
            if tail := inflater.flush():
                yield tail
            return
        while data:
            yield inflater.decompress(data, _DECODED_CHUNK)
            data = inflater.unconsumed_tail

    return decode


def _identity(data: bytes | None) -> Iterator[bytes]:
    if data:
        yield data


async def open_url(url: str, policy: FetchPolicy, *, resolver: Resolver | None = None,
                   transport: httpx.AsyncBaseTransport | None = None,
                   headers: dict[str, str] | None = None, method: str = "GET",
                   content: bytes | None = None) -> Fetched:
    """Request `url` under `policy` (a GET unless told otherwise), following redirects through the same checks
    (a redirected POST is not sent again: its answer is the 3xx); the caller reads the body."""
    resolver = resolver or resolve_host
    target = parse_http_url(url, policy.what)
    deadline = time.monotonic() + policy.deadline_s
    client = httpx.AsyncClient(transport=transport or httpx.AsyncHTTPTransport(retries=0),
                               timeout=policy.timeout_s, follow_redirects=False, trust_env=False)
    try:
        async with asyncio.timeout(policy.deadline_s):
            for _ in range(policy.max_redirects + 1):
                trusted = origin_of(target) in policy.allowed_origins
                addresses = await checked_addresses(host_of(target), resolver, policy.what,
                                                    require_public=not trusted)
                response = await _connect(client, target, addresses, policy, headers or {}, method, content)
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location and method == "GET":
                    await response.aclose()
                    target = _redirect_target(target, location, policy.what)
                    continue
                return Fetched(client, response, target, policy, deadline)
    except TimeoutError:
        await client.aclose()
        raise FetchError(f"{policy.what} did not download within {policy.deadline_s:g} seconds") from None
    except BaseException:
        await client.aclose()
        raise
    await client.aclose()
    raise FetchError(f"{policy.what} redirected more than {policy.max_redirects} times; use the final URL")


async def fetch_bytes(url: str, policy: FetchPolicy, *, resolver: Resolver | None = None,
                      transport: httpx.AsyncBaseTransport | None = None) -> bytes:
    """The whole body of a successful GET of `url`, within `policy`."""
    fetched = await open_url(url, policy, resolver=resolver, transport=transport)
    if not fetched.response.is_success:
        await fetched.aclose()
        raise FetchError(f"{policy.what} host {host_of(fetched.url)!r} answered HTTP {fetched.status_code}; "
                         "check that the URL is public and still valid")
    try:
        async with asyncio.timeout(max(fetched._deadline - time.monotonic(), 0.001)):
            return await fetched.read()
    except TimeoutError:
        raise FetchError(f"{policy.what} did not download within {policy.deadline_s:g} seconds") from None


async def _connect(client: httpx.AsyncClient, url: httpx.URL, addresses: list[str], policy: FetchPolicy,
                   headers: dict[str, str], method: str = "GET", content: bytes | None = None) -> httpx.Response:
    """Send the request to the first checked address that accepts a connection."""
    error: Exception | None = None
    for address in addresses:
        try:
            request = _pinned_request(client, url, address, policy, headers, method, content)
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            error = exc
        except httpx.TimeoutException:
            raise FetchError(f"{policy.what} did not answer within {policy.timeout_s:g} seconds") from None
        except httpx.HTTPError as exc:
            error = exc
            break
    raise FetchError(f"could not download {policy.what} from host {host_of(url)!r} ({type(error).__name__}); "
                     "check that the URL is publicly reachable")


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: str, policy: FetchPolicy,
                    headers: dict[str, str], method: str = "GET", content: bytes | None = None) -> httpx.Request:
    """A request for `url` whose connection goes to `address`; Host and TLS still use the URL's name."""
    host = host_of(url)
    extensions: dict[str, str] = {}
    if url.scheme == "https" and literal_address(host) is None:
        # httpcore uses this for SNI and for hostname verification of the certificate.
        extensions["sni_hostname"] = host
    return client.build_request(
        method,
        url.copy_with(host=address),
        content=content,
        headers={
            **headers,
            "Host": url.netloc.decode("ascii"),
            "Accept": policy.accept,
            # Media is compressed already; identity keeps the size limit about real bytes (and gzip is capped).
            "Accept-Encoding": "identity",
        },
        extensions=extensions,
    )


def _redirect_target(url: httpx.URL, location: str, what: str) -> httpx.URL:
    try:
        target = url.join(location)
        require_http_url(target, what)
    except (httpx.InvalidURL, UnicodeError, ValueError, FetchError):
        raise FetchError(f"{what} host {host_of(url)!r} redirected to an unsupported URL; use the final URL") \
            from None
    return target
