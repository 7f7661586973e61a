from __future__ import annotations

import asyncio
import base64
import ipaddress
import shutil
import ssl
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway import net
from gateway.core.images import ImageError, ImageLimits, load_image, sniff_mime

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 24
WEBP = b"RIFF" + (20).to_bytes(4, "little") + b"WEBPVP8 " + b"\x00" * 12
GIF = b"GIF89a" + b"\x00" * 24

PUBLIC_IP = "93.184.216.34"
OTHER_PUBLIC_IP = "93.184.216.35"
LIMITS = ImageLimits()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class FakeResolver:
    """Maps hostnames to address lists; unknown names resolve to a public address."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.calls: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        return self.table.get(host, [PUBLIC_IP])


class Recorder:
    """An httpx.MockTransport that keeps every request it was asked to send."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._handler = handler or (lambda request: httpx.Response(200, content=PNG))
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._handler(request)


# -- sniffing and data: URIs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp"), (GIF, None), (b"RIFF", None), (b"", None)],
)
def test_sniff_mime(data: bytes, mime: str | None) -> None:
    assert sniff_mime(data) == mime


@pytest.mark.parametrize(
    ("data", "mime"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")]
)
async def test_data_uri_of_each_type_decodes(data: bytes, mime: str) -> None:
    image = await load_image(data_uri(data, mime), LIMITS)
    assert image.data == data
    assert image.mime == mime


async def test_data_uri_uses_the_sniffed_type_over_the_declared_one() -> None:
    image = await load_image(data_uri(JPEG, "image/png"), LIMITS)
    assert image.mime == "image/jpeg"


async def test_data_uri_tolerates_whitespace_and_missing_padding() -> None:
    encoded = base64.b64encode(PNG).decode().rstrip("=")
    image = await load_image(f"data:image/png;base64,{encoded[:10]}\n {encoded[10:]}", LIMITS)
    assert image.data == PNG


async def test_percent_encoded_data_uri_decodes() -> None:
    image = await load_image("data:image/png," + urllib.parse.quote_from_bytes(PNG), LIMITS)
    assert (image.data, image.mime) == (PNG, "image/png")


@pytest.mark.parametrize(
    "uri",
    ["data:image/png;base64,!!!not base64!!!", "data:image/png;base64,iVBORw0KGgo=garbage", "data:image/png;base64"],
)
async def test_malformed_data_uri_is_refused(uri: str) -> None:
    with pytest.raises(ImageError, match="data: URI"):
        await load_image(uri, LIMITS)


@pytest.mark.parametrize("payload", [GIF, b"<html>hello</html>", b"%PDF-1.7 ..."])
async def test_non_image_data_uri_is_refused(payload: bytes) -> None:
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        await load_image(data_uri(payload), LIMITS)


async def test_oversized_data_uri_is_refused() -> None:
    limits = ImageLimits(max_bytes=len(PNG) - 1)
    with pytest.raises(ImageError, match=f"image is larger than {limits.max_bytes} bytes"):
        await load_image(data_uri(PNG), limits)
    assert (await load_image(data_uri(PNG), ImageLimits(max_bytes=len(PNG)))).data == PNG


async def test_huge_data_uri_is_refused_before_decoding() -> None:
    uri = "data:image/png;base64," + "A" * 4_000_000
    with pytest.raises(ImageError, match="image is larger than 1000 bytes"):
        await load_image(uri, ImageLimits(max_bytes=1000))


# -- schemes and blocked addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/", "javascript:alert(1)", "a.png", ""],
)
async def test_other_schemes_are_refused(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(ImageError, match="must be an https URL or a data: URI"):
        await load_image(url, LIMITS, resolver=FakeResolver(), transport=recorder.transport)
    assert recorder.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/admin",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://2130706433/",
        "http://017700000001/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://127.1/",
        "https://127.0.0.1./",
    ],
)
async def test_non_public_hosts_are_refused_before_connecting(url: str) -> None:
    # The resolver would answer with a public address, so only the host checks can refuse these.
    recorder = Recorder()
    with pytest.raises(ImageError, match="non-public address|not a standard IP address"):
        await load_image(url, LIMITS, resolver=FakeResolver(), transport=recorder.transport)
    assert recorder.requests == []


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", "http://[::1/", "http://exa mple.com/", "http://%31%32%37.0.0.1/"])
async def test_invalid_urls_are_refused_before_connecting(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(ImageError, match="not a valid URL"):
        await load_image(url, LIMITS, resolver=FakeResolver(), transport=recorder.transport)
    assert recorder.requests == []


@pytest.mark.parametrize("url", ["http://localhost/", "http://2130706433/", "http://127.0.0.1/x"])
async def test_non_public_hosts_are_refused_with_the_system_resolver(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(ImageError):
        await load_image(url, LIMITS, transport=recorder.transport)
    assert recorder.requests == []


@pytest.mark.parametrize(
    "addresses",
    [["10.1.2.3"], ["127.0.0.1"], ["169.254.169.254"], ["::1"], [PUBLIC_IP, "192.168.0.10"], ["not-an-ip"]],
)
async def test_host_resolving_to_any_non_public_address_is_refused(addresses: list[str]) -> None:
    resolver = FakeResolver({"intranet.example": addresses})
    recorder = Recorder()
    with pytest.raises(ImageError, match="'intranet.example' resolves to a non-public address") as excinfo:
        await load_image(
            "https://intranet.example/a.png?token=s3cret", LIMITS, resolver=resolver, transport=recorder.transport
        )
    assert not [a for a in addresses if a in str(excinfo.value)]  # the internal network is not mapped for the caller
    assert resolver.calls == ["intranet.example"]
    assert recorder.requests == []


async def test_unresolvable_host_is_refused() -> None:
    async def fail(host: str) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(ImageError, match="'nowhere.example' could not be resolved"):
        await load_image("https://nowhere.example/a.png", LIMITS, resolver=fail, transport=Recorder().transport)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        (PUBLIC_IP, True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("64:ff9b::5db8:d822", True),  # NAT64 of a public address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("::ffff:10.0.0.1", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("198.18.0.1", False),
        ("192.0.2.1", False),
        ("255.255.255.255", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert net.is_public_address(ipaddress.ip_address(address)) is public


# -- fetching ------------------------------------------------------------------------------------------


async def test_connection_goes_to_the_checked_address_with_the_original_host() -> None:
    resolver = FakeResolver({"images.example": [PUBLIC_IP]})
    recorder = Recorder()
    image = await load_image(
        "https://images.example:8443/cat.png?sig=abc", LIMITS, resolver=resolver, transport=recorder.transport
    )
    assert image.data == PNG
    [request] = recorder.requests
    assert request.url.host == PUBLIC_IP
    assert request.url.port == 8443
    assert request.url.raw_path == b"/cat.png?sig=abc"
    assert request.headers["host"] == "images.example:8443"
    assert request.extensions["sni_hostname"] == "images.example"


async def test_dns_answer_changing_after_the_check_is_not_used() -> None:
    answers = [[PUBLIC_IP], ["127.0.0.1"]]

    async def rebinding(host: str) -> list[str]:
        return answers.pop(0)

    recorder = Recorder()
    await load_image("http://rebind.example/a.png", LIMITS, resolver=rebinding, transport=recorder.transport)
    assert [r.url.host for r in recorder.requests] == [PUBLIC_IP]
    assert answers == [["127.0.0.1"]]


async def test_next_checked_address_is_tried_when_one_does_not_connect() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC_IP:
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(200, content=JPEG)

    recorder = Recorder(handler)
    resolver = FakeResolver({"images.example": [PUBLIC_IP, OTHER_PUBLIC_IP]})
    image = await load_image("http://images.example/a", LIMITS, resolver=resolver, transport=recorder.transport)
    assert image.mime == "image/jpeg"
    assert [r.url.host for r in recorder.requests] == [PUBLIC_IP, OTHER_PUBLIC_IP]


@pytest.mark.parametrize(
    "location", ["http://internal.example/secret", "http://169.254.169.254/latest/meta-data/", "http://[::1]:2375/"]
)
async def test_redirect_to_a_non_public_host_is_refused(location: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC_IP:
            return httpx.Response(302, headers={"Location": location})
        # Whatever sits behind the private address would happily hand out an image.
        return httpx.Response(200, content=PNG)

    recorder = Recorder(handler)
    resolver = FakeResolver({"images.example": [PUBLIC_IP], "internal.example": ["10.0.0.7"]})
    with pytest.raises(ImageError, match="non-public address"):
        await load_image("https://images.example/a.png", LIMITS, resolver=resolver, transport=recorder.transport)
    assert [r.url.host for r in recorder.requests] == [PUBLIC_IP]


async def test_redirect_to_a_public_host_is_followed_and_rechecked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "images.example":
            return httpx.Response(301, headers={"Location": "https://cdn.example/real.webp"})
        return httpx.Response(200, content=WEBP)

    recorder = Recorder(handler)
    resolver = FakeResolver({"images.example": [PUBLIC_IP], "cdn.example": [OTHER_PUBLIC_IP]})
    image = await load_image("https://images.example/a", LIMITS, resolver=resolver, transport=recorder.transport)
    assert image.mime == "image/webp"
    assert resolver.calls == ["images.example", "cdn.example"]
    second = recorder.requests[1]
    assert (second.url.host, second.headers["host"], second.extensions["sni_hostname"]) == (
        OTHER_PUBLIC_IP,
        "cdn.example",
        "cdn.example",
    )


async def test_relative_redirect_keeps_the_original_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/a":
            return httpx.Response(307, headers={"Location": "/b.png"})
        return httpx.Response(200, content=PNG)

    recorder = Recorder(handler)
    await load_image("https://images.example/a", LIMITS, resolver=FakeResolver(), transport=recorder.transport)
    assert [(r.url.host, r.headers["host"], r.url.path) for r in recorder.requests] == [
        (PUBLIC_IP, "images.example", "/a"),
        (PUBLIC_IP, "images.example", "/b.png"),
    ]


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://images.example/", "http://0x7f.1/"])
async def test_redirect_to_an_unsupported_url_is_refused(location: str) -> None:
    recorder = Recorder(lambda request: httpx.Response(302, headers={"Location": location}))
    with pytest.raises(ImageError, match="redirected to an unsupported URL|not a standard IP address"):
        await load_image("https://images.example/a", LIMITS, resolver=FakeResolver(), transport=recorder.transport)
    assert len(recorder.requests) == 1


async def test_too_many_redirects_are_refused() -> None:
    recorder = Recorder(lambda request: httpx.Response(302, headers={"Location": "/again"}))
    with pytest.raises(ImageError, match="redirected more than 2 times"):
        await load_image(
            "https://images.example/a",
            ImageLimits(max_redirects=2),
            resolver=FakeResolver(),
            transport=recorder.transport,
        )
    assert len(recorder.requests) == 3


async def test_body_is_cut_off_while_streaming() -> None:
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield PNG
        for _ in range(1000):
            sent.append(1)
            yield b"\x00" * 1024

    recorder = Recorder(lambda request: httpx.Response(200, content=body()))
    with pytest.raises(ImageError, match="image is larger than 10000 bytes"):
        await load_image(
            "https://images.example/big.png",
            ImageLimits(max_bytes=10_000),
            resolver=FakeResolver(),
            transport=recorder.transport,
        )
    assert "content-length" not in recorder.requests[0].headers
    assert len(sent) < 20


async def test_declared_oversized_body_is_refused_up_front() -> None:
    recorder = Recorder(
        lambda request: httpx.Response(200, headers={"Content-Length": "50000000"}, content=b"")
    )
    with pytest.raises(ImageError, match=f"image is larger than {LIMITS.max_bytes} bytes"):
        await load_image("https://images.example/a", LIMITS, resolver=FakeResolver(), transport=recorder.transport)


async def test_error_status_is_refused_without_leaking_the_query() -> None:
    recorder = Recorder(lambda request: httpx.Response(403, text="denied"))
    with pytest.raises(ImageError, match="answered HTTP 403") as excinfo:
        await load_image(
            "https://images.example/a.png?X-Amz-Signature=s3cret",
            LIMITS,
            resolver=FakeResolver(),
            transport=recorder.transport,
        )
    assert "s3cret" not in str(excinfo.value)
    assert "'images.example'" in str(excinfo.value)


async def test_content_type_is_not_trusted() -> None:
    html = Recorder(lambda request: httpx.Response(200, headers={"Content-Type": "image/png"}, text="<html>"))
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        await load_image("https://images.example/a.png", LIMITS, resolver=FakeResolver(), transport=html.transport)

    jpeg = Recorder(lambda request: httpx.Response(200, headers={"Content-Type": "text/plain"}, content=JPEG))
    image = await load_image("https://images.example/a", LIMITS, resolver=FakeResolver(), transport=jpeg.transport)
    assert image.mime == "image/jpeg"


async def test_slow_download_hits_the_time_limit() -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield PNG
        await asyncio.sleep(5)
        yield b"\x00"

    recorder = Recorder(lambda request: httpx.Response(200, content=slow_body()))
    with pytest.raises(ImageError, match="did not download within 0.1 seconds"):
        await load_image(
            "https://images.example/a",
            ImageLimits(timeout_s=0.1),
            resolver=FakeResolver(),
            transport=recorder.transport,
        )


async def test_slow_resolver_hits_the_time_limit() -> None:
    async def slow(host: str) -> list[str]:
        await asyncio.sleep(5)
        return [PUBLIC_IP]

    with pytest.raises(ImageError, match="did not download within 0.1 seconds"):
        await load_image(
            "https://images.example/a", ImageLimits(timeout_s=0.1), resolver=slow, transport=Recorder().transport
        )


async def test_connection_failure_is_reported_by_host_only() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ImageError, match="could not download image_url from host 'images.example'") as excinfo:
        await load_image(
            "https://images.example/a?key=s3cret", LIMITS, resolver=FakeResolver(), transport=Recorder(refuse).transport
        )
    assert "s3cret" not in str(excinfo.value)


# -- real sockets --------------------------------------------------------------------------------------
# These use httpx's real transport against a local server. Loopback is allowed for the duration of the test
# only so that a server can exist; the name "images.example" never resolves, so a successful fetch proves
# the connection went to the checked address while Host, SNI and certificate checks used the name.


class LocalServer:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.sni: list[str | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "host":
                self.hosts.append(value.strip())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(PNG) + PNG)
        await writer.drain()
        writer.close()

    def record_sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.sni.append(name)


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    monkeypatch.setattr(net, "is_public_address", lambda addr: True)
    return FakeResolver({"images.example": ["127.0.0.1"]})


async def test_real_http_connection_is_pinned(loopback_allowed: FakeResolver) -> None:
    local = LocalServer()
    server = await asyncio.start_server(local.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        image = await load_image(f"http://images.example:{port}/a.png", LIMITS, resolver=loopback_allowed)
    assert image.data == PNG
    assert local.hosts == [f"images.example:{port}"]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=images.example",
         "-addext", "subjectAltName=DNS:images.example"],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_real_https_connection_verifies_the_name_not_the_address(
    loopback_allowed: FakeResolver, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    local = LocalServer()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.sni_callback = local.record_sni
    client_ctx = ssl.create_default_context(cafile=str(cert))

    server = await asyncio.start_server(local.handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        image = await load_image(
            f"https://images.example:{port}/a.png",
            LIMITS,
            resolver=loopback_allowed,
            transport=httpx.AsyncHTTPTransport(verify=client_ctx),
        )
    assert image.data == PNG
    assert local.sni == ["images.example"]
    assert local.hosts == [f"images.example:{port}"]


@pytest.mark.parametrize("spacing", [1, 76, 4093])
async def test_large_whitespace_padded_data_uri_decodes_exactly(spacing: int) -> None:
    data = PNG + bytes(range(256)) * 12_000  # ~3 MB: several decoding slices, padding at every offset
    encoded = base64.b64encode(data).decode()
    padded = " \n".join(encoded[i:i + spacing] for i in range(0, len(encoded), spacing))
    image = await load_image("data:image/png;base64," + padded, LIMITS)
    assert image.data == data
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert (await load_image("data:image/png;base64," + urlsafe, LIMITS)).data == data
