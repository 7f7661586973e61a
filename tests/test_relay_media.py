"""A chat relay's media links go through the outbound fetch guard: nothing internal is fetched and served.

The relay (the simulator in chat mode) hands out links on a host of the test's choosing. "Public" CDNs are
played by listeners on 127.0.0.2, which the guard is told to treat as public for these tests; 127.0.0.1 plays
the internal network. Name resolution is the gateway process's own `socket.getaddrinfo`, replaced in-process.
"""
from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from gateway import net
from tests.support import ALPHA_KEY, base_config

MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 1000
CDN_IP, INTERNAL_IP = "127.0.0.2", "127.0.0.1"


class Listener:
    """A tiny HTTP server that answers every GET with one body and remembers the paths asked for."""

    def __init__(self, host: str, body: bytes, headers: dict[str, str] | None = None, port: int = 0) -> None:
        self.paths: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                listener.paths.append(self.path)
                self.send_response(200)
                for name, value in {"content-type": "video/mp4", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.close()


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host name -> the answers lookups get in turn, cycling (the gateway process's resolver, replaced)."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []

    def answer(host: str) -> str:
        answers = table[host]
        lookups.append(host)
        answers.append(answers.pop(0))
        return answers[-1]

    async def resolve(host: str) -> list[str]:
        return [answer(host)] if host in table else await real_resolve(host)

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:  # a connection by name, anywhere in the process, sees the same answers
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer(host), port or 0))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    real_resolve, real_getaddrinfo, real_public = net.resolve_host, socket.getaddrinfo, net.is_public_address
    monkeypatch.setattr(net, "resolve_host", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(net, "is_public_address", lambda addr: str(addr) == CDN_IP or real_public(addr))
    table["lookups"] = lookups
    return table


def relay_gateway(start_simulator, start_gateway, tmp_path, media_base: str, family: str = "a", **upstream):
    simulator = start_simulator(kind="chat", public_url=media_base, family=family)
    raw_upstream = base_config(tmp_path, simulator.url + "/v1", kind="chat")["upstreams"][0]
    raw_upstream.update(upstream)
    gateway = start_gateway(simulator, kind="chat", cache={"enabled": False}, upstreams=[raw_upstream])
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)


def generate(client: openai.OpenAI) -> openai.APIStatusError | str:
    """The video's content on success, else the error the client got."""
    try:
        completion = client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a fox"}])
    except openai.APIStatusError as exc:
        return exc
    url = completion.model_extra["video"]["url"]
    return httpx.get(url).content if url else "no url"  # a browser needs no key for the signed link


def test_a_link_to_another_port_on_the_relays_host_is_not_fetched(start_simulator, start_gateway, tmp_path,
                                                                  listeners):
    internal = Listener(INTERNAL_IP, b"internal admin page")
    listeners.append(internal)
    client = relay_gateway(start_simulator, start_gateway, tmp_path, f"http://127.0.0.1:{internal.port}")
    outcome = generate(client)
    assert isinstance(outcome, openai.APIStatusError) and outcome.status_code == 502
    assert "non-public address" in outcome.message and "127.0.0.1" in outcome.message  # the host as linked
    assert internal.paths == []


def test_a_dns_answer_that_changes_after_the_check_is_not_followed(start_simulator, start_gateway, tmp_path,
                                                                  listeners, names):
    cdn = Listener(CDN_IP, MP4)
    listeners.append(cdn)
    internal = Listener(INTERNAL_IP, b"internal secrets", port=cdn.port)
    listeners.append(internal)
    names["media.example"] = [CDN_IP, INTERNAL_IP]  # checked: the CDN; asked again: the internal service
    client = relay_gateway(start_simulator, start_gateway, tmp_path, f"http://media.example:{cdn.port}")
    outcome = generate(client)
    assert outcome == MP4  # the video came from the address that was checked
    assert internal.paths == []
    # one lookup, checked and used: a second one (a connection by name) would have got the internal answer
    assert names["lookups"] == ["media.example"]
    assert [path.rsplit(".", 1)[-1] for path in cdn.paths] == ["mp4"]


def test_a_compressed_link_that_inflates_past_the_cap_is_refused(start_simulator, start_gateway, tmp_path,
                                                                listeners, names):
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    cdn = Listener(CDN_IP, bomb, {"content-encoding": "gzip"})
    listeners.append(cdn)
    names["cdn.example"] = [CDN_IP]
    client = relay_gateway(start_simulator, start_gateway, tmp_path, f"http://cdn.example:{cdn.port}",
                           max_media_bytes=1_000_000)
    outcome = generate(client)
    assert isinstance(outcome, openai.APIStatusError) and outcome.status_code == 502
    assert "larger than 1000000 bytes" in outcome.message


def test_an_oversized_link_is_refused(start_simulator, start_gateway, tmp_path, listeners, names):
    cdn = Listener(CDN_IP, MP4 * 2000)
    listeners.append(cdn)
    names["cdn.example"] = [CDN_IP]
    client = relay_gateway(start_simulator, start_gateway, tmp_path, f"http://cdn.example:{cdn.port}",
                           max_media_bytes=1_000_000)
    outcome = generate(client)
    assert isinstance(outcome, openai.APIStatusError) and outcome.status_code == 502
    assert "larger than 1000000 bytes" in outcome.message


def test_media_on_the_relays_own_origin_is_still_fetched(start_simulator, start_gateway, tmp_path):
    client = relay_gateway(start_simulator, start_gateway, tmp_path, "")
    outcome = generate(client)
    assert isinstance(outcome, bytes) and outcome[4:8] == b"ftyp"


def test_a_relays_thumbnail_link_is_followed_when_its_job_finishes(start_simulator, start_gateway, tmp_path):
    """A relay's links are known only from its stream, so its thumbnail is stored with the video rather than
    fetched on its first request (as a Videos upstream's is)."""
    client = relay_gateway(start_simulator, start_gateway, tmp_path, "", family="b")  # its stream has a poster
    completion = client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a fox"}])
    video_id = completion.model_extra["video"]["id"]
    thumbnail = client.videos.download_content(video_id, variant="thumbnail").read()
    assert thumbnail[:3] == b"\xff\xd8\xff"
