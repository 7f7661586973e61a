"""Each cause of a 500 that fuzzing found, as a named case: now a 4xx in OpenAI's envelope saying what to change."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.support import ADMIN_KEY, ALPHA_KEY
from tests.test_instances import services_up, shared_storage  # noqa: F401 - fixtures

TEAM = {"authorization": f"Bearer {ALPHA_KEY}", "content-type": "application/json"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
VIDEO = "video_" + "0" * 32


def chat(**fields) -> bytes:
    return json.dumps({"model": "sora-2", "messages": [{"role": "user", "content": "a fox"}], **fields}).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_field(name: str, raw_json: str) -> bytes:
    return b'{"model": "sora-2", "messages": [{"role": "user", "content": "a fox"}], "%s": %s}' % (
        name.encode(), raw_json.encode())


# (name, method, path, headers, body, status, param)
CASES = [
    ("link exp is a superscript two", "GET", f"/v1/videos/{VIDEO}/content?exp=%C2%B2&sig=x", {}, None, 403, None),
    ("link exp has 5000 digits", "GET", f"/v1/videos/{VIDEO}/content?exp={'9' * 5000}&sig=x", {}, None, 403, None),
    ("link sig is not ASCII", "GET", f"/v1/videos/{VIDEO}/content?exp=9999999999&sig=%C3%A9", {}, None, 403, None),
    ("chat seconds is a superscript two", "POST", "/v1/chat/completions", TEAM, chat(seconds="²"), 400, "seconds"),
    ("chat seconds has 5000 digits", "POST", "/v1/chat/completions", TEAM, chat(seconds="9" * 5000), 400,
     "seconds"),
    ("videos seconds is a superscript two", "POST", "/v1/videos", TEAM,
     json.dumps({"prompt": "a fox", "seconds": "²"}).encode(), 400, "seconds"),
    ("n nested 990 deep", "POST", "/v1/chat/completions", TEAM, with_field("n", nested(990)), 400, None),
    ("stream_format nested 990 deep", "POST", "/v1/chat/completions", TEAM, with_field("stream_format", nested(990)),
     400, None),
    ("an unknown field nested 1000 deep", "POST", "/v1/chat/completions", TEAM, with_field("x", nested(1000)), 400,
     None),
    ("a 300-character hostname in an image URL", "POST", "/v1/chat/completions", TEAM, chat(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a fox"}, {"type": "image_url", "image_url": {
            "url": "https://" + "a" * 300 + ".example/x.png"}}]}]), 400, "messages"),
    ("usage until 9999-12-31", "GET", "/v1/usage?until=9999-12-31", TEAM, None, 200, None),
    ("usage since with 400 digits", "GET", "/v1/usage?since=" + "9" * 400, TEAM, None, 400, "since"),
    ("admin usage until 9999-12-31 as CSV", "GET", "/admin/usage?until=9999-12-31&format=csv", ADMIN, None, 200,
     None),
    ("keys create with a huge expires", "POST", "/admin/teams/alpha/keys", ADMIN,
     json.dumps({"expires": "99999999999999999999d"}).encode(), 400, "expires"),
    ("keys create with 5000 digits of expires", "POST", "/admin/teams/alpha/keys", ADMIN,
     json.dumps({"expires": "9" * 5000 + "d"}).encode(), 400, "expires"),
]


def check(response: httpx.Response, status: int, param: str | None) -> None:
    assert response.status_code == status, response.text
    if status >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        if param is not None:
            assert error["param"] == param


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "param"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_input_that_used_to_be_a_server_error(gateway, method, path, headers, body, status, param):
    check(httpx.request(method, gateway.url + path, headers=headers, content=body), status, param)


def test_an_assistant_message_with_odd_content_is_skipped_when_looking_for_a_remix(gateway):
    for content in (5, {"a": 1}, [5, {"text": 5}]):
        body = chat(messages=[{"role": "assistant", "content": content}, {"role": "user", "content": "a fox"}])
        response = httpx.post(gateway.url + "/v1/chat/completions", headers=TEAM, content=body, timeout=30)
        assert response.status_code == 200, response.text


NUL_CASES = [
    ("a prompt", "POST", "/v1/chat/completions", TEAM, chat(messages=[{"role": "user", "content": "a\x00fox"}]),
     "messages[0].content"),
    ("a user field", "POST", "/v1/chat/completions", TEAM, chat(user="a\x00b"), "user"),
    ("a videos prompt", "POST", "/v1/videos", TEAM, json.dumps({"prompt": "fox\x00"}).encode(), "prompt"),
    ("a form field", "POST", "/v1/videos", {"authorization": TEAM["authorization"],
                                            "content-type": "application/x-www-form-urlencoded"},
     b"prompt=fox%00", "prompt"),
    ("a key name", "POST", "/admin/teams/alpha/keys", ADMIN, json.dumps({"name": "ci\x00"}).encode(), "name"),
    ("a video id", "GET", "/v1/videos/video_%00", TEAM, None, None),
    ("a deleted video id", "DELETE", "/v1/videos/video_%00", TEAM, None, None),
    ("a remixed video id", "POST", "/v1/videos/video_%00/remix", TEAM, json.dumps({"prompt": "x"}).encode(), None),
    ("the after cursor", "GET", "/v1/videos?after=a%00b", TEAM, None, "after"),
    ("a team filter", "GET", "/admin/usage?team=a%00b", ADMIN, None, "team"),
    ("a key filter", "GET", "/admin/keys?team=a%00b", ADMIN, None, "team"),
    ("a revoked key id", "DELETE", "/admin/keys/key_%00", ADMIN, None, None),
    ("a newline in the path", "GET", "/v1/videos/video_%0a", TEAM, None, None),
]


@pytest.fixture
def postgres_gateway(shared_storage, start_gateway, simulator):  # noqa: F811
    return start_gateway(simulator, storage=shared_storage)


@pytest.mark.parametrize(("method", "path", "headers", "body", "param"), [case[1:] for case in NUL_CASES],
                         ids=[case[0] for case in NUL_CASES])
def test_a_nul_character_is_a_clear_400_on_postgresql(postgres_gateway, method, path, headers, body, param):
    response = httpx.request(method, postgres_gateway.url + path, headers=headers, content=body)
    check(response, 400, param)
    assert "control character" in response.json()["error"]["message"]
