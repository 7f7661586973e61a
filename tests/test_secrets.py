"""An upstream that quotes the key it was sent, in every error and failed job: the key reaches nobody.

The simulator's `quote_key` mode appends the key to every error message, failed job and failure line it sends,
plainly, as a bearer header and inside a URL. Keys come in the shapes providers use; a plain one with no
recognisable shape is caught only because the gateway knows its configured secrets.
"""
from __future__ import annotations

import httpx
import openai
import pytest
import redis

from tests.support import ADMIN_KEY, ALPHA_KEY, wait_until
from tests.test_instances import REDIS, services_up, shared_storage  # noqa: F401 - fixtures

KEYS = [
    "sk-proj-Qx7AbCdEf0123456789zz",
    "AIzaSyD-quoteTEST0123456789abcdefghijk",
    "9f3b5c2d1e0a4b6c8d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyZWxheS1hY2NvdW50In0.c2lnbmF0dXJlLXZhbHVlLTAxMjM",
    "relay-plain-secret-77",
]


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)


def admin_views(gateway) -> str:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return "".join(httpx.get(gateway.url + path, headers=headers).text
                   for path in ("/admin/upstreams", "/admin/usage", "/metrics"))


def redis_values(prefix: str) -> str:
    client = redis.Redis.from_url(REDIS)
    out = []
    for name in client.scan_iter(prefix + "*"):
        kind = client.type(name).decode()
        if kind == "string":
            out.append(client.get(name))
        elif kind == "hash":
            out.extend(b"%s=%s" % item for item in client.hgetall(name).items())
        elif kind == "set":
            out.extend(client.smembers(name))
        elif kind == "zset":
            out.extend(client.zrange(name, 0, -1))
        elif kind == "list":
            out.extend(client.lrange(name, 0, -1))
        out.append(name)
    return b" ".join(out).decode("utf-8", "replace")


def assert_no_key(*texts: str) -> None:
    for text in texts:
        for key in KEYS:
            assert key not in text, f"upstream key found in: {text[:400]}"
            assert key[6:-6] not in text, f"part of an upstream key found in: {text[:400]}"


@pytest.fixture
def quoting_gateway(shared_storage, start_simulator, start_gateway):  # noqa: F811
    """A gateway on PostgreSQL and Redis (torn down after it) in front of a simulator with the given faults."""

    def start(faults: str = "", kind: str = "videos", **upstream):
        simulator = start_simulator(quote_key=True, faults=faults, kind=kind)
        overrides = {"storage": shared_storage, "cache": {"enabled": False}}
        gateway = start_gateway(simulator, keys=KEYS, kind=kind, **overrides)
        return simulator, gateway

    return start


@pytest.mark.parametrize("fault", ["401", "500"])
def test_keys_quoted_in_auth_and_server_errors_reach_no_client_view_or_store(quoting_gateway, fault,
                                                                             shared_storage):  # noqa: F811
    simulator, gateway = quoting_gateway(fault)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a fox"}])
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "upstream_unavailable"
    assert "upstream sim" in caught.value.message and f"HTTP {fault}" in caught.value.message
    sent = {call.key for call in simulator.app.state.sim.calls}
    assert sent & set(KEYS), "the upstream was never called"
    assert_no_key(caught.value.response.text, admin_views(gateway), redis_values(shared_storage["redis_prefix"]))


def test_a_quoted_key_in_a_request_refusal_is_cut_from_the_relayed_reason(start_simulator, start_gateway):
    simulator = start_simulator(quote_key=True)
    models = {"sora-2": {"upstreams": ["sim"], "upstream_model": "sora-2", "sizes": ["720x1280", "640x640"]}}
    gateway = start_gateway(simulator, keys=KEYS, models=models, cache={"enabled": False})
    messages = []
    for _ in KEYS:  # one request per key: rotation sends each to the least recently used one
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a fox"}],
                                                 extra_body={"size": "640x640"})
        messages.append(caught.value.response.text)
        assert "Supported values are" in caught.value.message  # what to change still gets through
    assert {call.key for call in simulator.app.state.sim.calls} == set(KEYS)
    assert_no_key(*messages, admin_views(gateway))


@pytest.mark.parametrize("kind", ["videos", "chat"])
def test_a_quoted_key_in_a_failed_job_reaches_no_response_or_store(quoting_gateway, kind,
                                                                  shared_storage):  # noqa: F811
    simulator, gateway = quoting_gateway(kind=kind)
    client = sdk(gateway)
    texts = []
    for _ in KEYS:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a fox [fail]"}])
        assert caught.value.status_code == 502
        texts.append(caught.value.response.text)
    stream = client.chat.completions.create(model="sora-2", stream=True,
                                            messages=[{"role": "user", "content": "a fox [fail] streamed"}])
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    texts.append(str(caught.value))
    listed = httpx.get(gateway.url + "/v1/videos?limit=100", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert [video["status"] for video in listed.json()["data"]] == ["failed"] * (len(KEYS) + 1)
    assert all(video["error"]["message"] for video in listed.json()["data"])
    wait_until(lambda: {call.key for call in simulator.app.state.sim.calls} >= set(KEYS))
    assert_no_key(*texts, listed.text, admin_views(gateway), redis_values(shared_storage["redis_prefix"]))


@pytest.mark.parametrize("key", KEYS[:4] + ["key-live-0a1b2c3d4e5f", "Bearer abc.def.ghi", "tok_0123456789abcdef"])
def test_key_shapes_are_redacted_even_when_not_configured(key):
    from gateway.redaction import Redactor

    text = Redactor()(f"Incorrect API key provided: {key}. You can find your key at https://x.example/k?k={key}")
    assert key not in text and key.split()[-1] not in text
    assert text.startswith("Incorrect API key provided: ")


def test_configured_secrets_are_redacted_whatever_their_shape_and_ids_are_kept():
    from gateway.redaction import Redactor

    redact = Redactor([KEYS[-1]])
    text = redact(f"key {KEYS[-1]} (url-encoded relay-plain-secret-77) used for video_{'0' * 32} req_{'a' * 24}")
    assert KEYS[-1] not in text
    assert f"video_{'0' * 32}" in text and f"req_{'a' * 24}" in text  # ids the operator needs stay readable
