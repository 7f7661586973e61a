"""The smaller edges: range requests, trailing slashes, log lines, bounded admin bodies, slow clients."""
from __future__ import annotations

import io
import logging
import socket

import httpx
import openai
import pytest

from gateway.api import common
from gateway.observability.logs import TextFormatter
from tests.support import ADMIN_KEY, ALPHA_KEY

TEAM = {"authorization": f"Bearer {ALPHA_KEY}"}


def envelope(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture
def video(gateway) -> str:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)
    completion = client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a fox"}])
    return completion.model_extra["video"]["url"]


def test_range_requests_work_and_bad_ranges_get_the_api_error_shape(video):
    assert httpx.get(video, headers={"range": "bytes=0-7"}).status_code == 206
    malformed = httpx.get(video, headers={"range": "bytes=9-2"})
    assert malformed.status_code == 400 and envelope(malformed)["param"] == "range"
    outside = httpx.get(video, headers={"range": "bytes=999999999-"})
    assert outside.status_code == 416 and envelope(outside)["code"] == "range_not_satisfiable"
    assert outside.headers["content-range"].startswith("bytes */")
    junk = httpx.get(video, headers={"range": "pages=1"})
    assert junk.status_code == 400 and envelope(junk)["param"] == "range"


def test_a_trailing_slash_is_a_404_in_the_api_shape_not_a_redirect_built_from_host(gateway):
    response = httpx.get(gateway.url + "/v1/videos/", headers={**TEAM, "host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers
    assert "/v1/videos/" in envelope(response)["message"]


def test_an_encoded_newline_in_the_path_is_refused_and_cannot_forge_a_log_line(gateway):
    response = httpx.get(gateway.url + "/v1/models/x%0a2026-01-01T00:00:00Z INFO gateway.access: GET / 200",
                         headers=TEAM)
    assert response.status_code == 400 and envelope(response)["code"] == "invalid_path"
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "%s %s %s",
                               ("GET", "/x\n2026-01-01T00:00:00Z INFO forged", 400), None)
    assert "\n" not in TextFormatter().format(record)


def test_the_admin_create_key_body_is_bounded_before_it_is_read(gateway):
    response = httpx.post(gateway.url + "/admin/teams/alpha/keys", content=b'{"name": "' + b"x" * 200_000 + b'"}',
                          headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"})
    assert response.status_code == 413 and envelope(response)["code"] == "request_too_large"


def test_a_body_that_stops_arriving_is_cut_off_with_408(gateway, monkeypatch):
    monkeypatch.setattr(common, "BODY_IDLE_TIMEOUT_S", 0.3)  # the gateway runs in this process
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ALPHA_KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
        sock.settimeout(10)
        answer = io.BytesIO()
        while b"\r\n\r\n" not in answer.getvalue() or b"}}" not in answer.getvalue():
            data = sock.recv(65536)
            if not data:
                break
            answer.write(data)
    head = answer.getvalue().split(b"\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 408"), answer.getvalue()[:300]
    assert b'"request_timeout"' in answer.getvalue()
