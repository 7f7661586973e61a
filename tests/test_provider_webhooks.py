"""Provider webhooks (`[[upstreams]] webhook_secret`, fal's `webhooks = true`): a verified callback wakes the
job's follower, which polls at once; a forged, stale or replayed one changes nothing.

Every upstream here polls only every 120 s, so a video that is ready within the test's wait was finished by the
callback path, without any timing assertion.
"""
from __future__ import annotations

import base64
import re
import time

import httpx
import orjson
import pytest

from gateway.config import ConfigError
from gateway.upstreams.callbacks import Callbacks, StandardWebhooks
from gateway.upstreams.gemini import CORRELATION, GeminiUpstream
from gateway.upstreams.provider_http import Wakeups
from tests.providers import models_for, sdk, simulator, start, upstream_for
from tests.support import base_config, build_config, finished_video, wait_until
from tests.test_chat import assert_playable_mp4

WHSEC = "whsec_" + base64.b64encode(b"provider-webhook-secret-for-tests!").decode()
OTHER_WHSEC = "whsec_" + base64.b64encode(b"a-different-secret-nobody-shares!").decode()
HMAC_SECRET = "or-signing-secret-0123456789abcdef"
OTHER_HMAC = "or-signing-secret-forged-9876543210"


# kind: (the gateway's webhook_secret, "" for fal whose keys are published; a secret the gateway does not know)
SECRETS = {
    "replicate": (WHSEC, OTHER_WHSEC),
    "fal": ("", ""),
    "openrouter": (HMAC_SECRET, OTHER_HMAC),
    "gemini": (WHSEC, OTHER_WHSEC),
}


def webhook_gateway(start_simulator, start_gateway, no_secrets_in_logs, kind: str, *, forged: bool = False):
    """A simulator of `kind` that calls back, and a gateway that polls it only every 120 s. `forged`: the
    simulator signs with a secret (for fal: a key) the gateway does not trust."""
    secret, other = SECRETS[kind]
    sim = simulator(start_simulator, kind, webhook_secret=other if forged else secret)
    table = upstream_for(sim, kind, poll_interval_s=120, job_timeout_s=300)
    if kind == "fal":
        keys = start_simulator(kind="fal") if forged else sim  # another simulator's key set: not the signer's
        table.update(webhooks=True, webhook_jwks_url=keys.url + "/.well-known/jwks.json")
    else:
        table["webhook_secret"] = secret
        no_secrets_in_logs.append(secret)
    return sim, start_gateway(sim, upstreams=[table], models=models_for(kind))


def callbacks_counted(gateway, outcome: str) -> float:
    text = httpx.get(gateway.url + "/metrics").text
    found = re.search(r'^sora_gateway_upstream_callbacks_total\{outcome="%s",upstream="sim"\} (\S+)$' % outcome,
                      text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def polls(sim) -> int:
    """GETs of the provider's job (status, result or operation reads), not of files or catalogues."""
    return sum(1 for c in sim.app.state.sim.calls if c.method == "GET" and not c.path.startswith(
        ("/files/", "/.well-known/", "/api/v1/videos/models")) and "/content" not in c.path
               and ":download" not in c.path)


def post(gateway, headers: dict, body: bytes, upstream: str = "sim") -> httpx.Response:
    return httpx.post(f"{gateway.url}/upstream-webhooks/{upstream}", content=body,
                      headers={"content-type": "application/json", **headers})


def signature_values(headers: dict) -> list[str]:
    return [v for k, v in headers.items() if k.endswith("signature")]


@pytest.mark.parametrize("kind", SECRETS)
def test_the_callback_finishes_the_job_and_a_replay_does_nothing(kind, start_simulator, start_gateway,
                                                                 no_secrets_in_logs):
    sim, gateway = webhook_gateway(start_simulator, start_gateway, no_secrets_in_logs, kind)
    client = sdk(gateway)
    video = finished_video(client, client.videos.create(model="sora-2", prompt="a lighthouse at dusk").id,
                           timeout=20)
    assert video.status == "completed"
    assert_playable_mp4(client.videos.download_content(video.id).read())
    [delivery] = sim.app.state.sim.deliveries
    no_secrets_in_logs.extend(signature_values(delivery.headers))
    assert delivery.url == gateway.url + "/upstream-webhooks/sim" and delivery.status == 204
    assert callbacks_counted(gateway, "accepted") == 1
    seen = polls(sim)

    again = post(gateway, delivery.headers, delivery.body)  # a replay, inside the window: acknowledged only
    assert again.status_code == 204
    assert callbacks_counted(gateway, "duplicate") == 1 and callbacks_counted(gateway, "accepted") == 1
    assert client.videos.retrieve(video.id).status == "completed" and polls(sim) == seen


@pytest.mark.parametrize("kind", SECRETS)
def test_a_callback_signed_by_anyone_else_is_refused_and_the_job_waits_for_its_poll(
        kind, start_simulator, start_gateway, no_secrets_in_logs):
    sim, gateway = webhook_gateway(start_simulator, start_gateway, no_secrets_in_logs, kind, forged=True)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a lighthouse at dusk")
    [delivery] = wait_until(lambda: sim.app.state.sim.deliveries)
    no_secrets_in_logs.extend(signature_values(delivery.headers))
    assert delivery.status == 401
    assert callbacks_counted(gateway, "forged") == 1 and callbacks_counted(gateway, "accepted") == 0
    assert client.videos.retrieve(created.id).status in ("queued", "in_progress") and polls(sim) == 0


@pytest.mark.parametrize("kind", SECRETS)
def test_stale_unsigned_and_tampered_callbacks_get_401_and_unknown_jobs_a_204(kind, start_simulator,
                                                                               start_gateway, no_secrets_in_logs):
    sim, gateway = webhook_gateway(start_simulator, start_gateway, no_secrets_in_logs, kind)
    signer = sim.app.state.dialect.callbacks
    body = orjson.dumps({"id": "abc123", "request_id": "abc123", "data": {"id": "abc123"}})
    stale = signer.sign(body, "abc123", timestamp=int(time.time()) - 600)
    early = signer.sign(body, "abc123", timestamp=int(time.time()) + 600)
    fresh = signer.sign(body, "abc123")
    no_secrets_in_logs.extend(signature_values(stale) + signature_values(early) + signature_values(fresh))
    for headers, sent in ((stale, body), (early, body), ({}, body), (fresh, body.replace(b"abc", b"abd"))):
        answer = post(gateway, headers, sent)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_signature"
    assert callbacks_counted(gateway, "forged") == 4

    assert post(gateway, fresh, body).status_code == 204  # genuine, but about no job followed here
    assert callbacks_counted(gateway, "unknown") == 1 and callbacks_counted(gateway, "accepted") == 0


def test_an_upstream_without_webhooks_is_404_and_asks_for_no_callback(start_simulator, start_gateway):
    sim, gateway = start(start_simulator, start_gateway, "replicate", simulator_settings={"duration_s": 0.2})
    for name in ("sim", "nobody"):
        answer = post(gateway, {"webhook-id": "msg_1"}, b"{}", upstream=name)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    client = sdk(gateway)
    assert finished_video(client, client.videos.create(model="sora-2", prompt="a fox").id).status == "completed"
    assert sim.app.state.sim.deliveries == []


@pytest.mark.parametrize(("kind", "settings", "problem"), [
    ("runway", {"webhook_secret": WHSEC}, "upstreams[0].webhook_secret: kind 'runway' has no provider webhooks"),
    ("videos", {"webhooks": True}, "upstreams[0].webhooks: kind 'videos' has no provider webhooks"),
    ("chat", {"webhook_secret": WHSEC}, "upstreams[0].webhook_secret: kind 'chat' has no provider webhooks"),
    ("replicate", {"webhook_secret": "not-a-whsec-secret-at-all"}, "upstreams[0].webhook_secret: must start with"),
    ("gemini", {"webhook_secret": ""}, "upstreams[0].webhook_secret: is empty"),
    ("openrouter", {"webhook_secret": "short"}, "upstreams[0].webhook_secret: is too short"),
    ("replicate", {"webhooks": True}, "upstreams[0].webhooks: is for kind 'fal'"),
    ("fal", {"webhook_secret": WHSEC}, "upstreams[0].webhook_secret: fal signs its callbacks with"),
    ("fal", {"webhook_jwks_url": "https://keys.example/jwks.json"}, "upstreams[0].webhook_jwks_url: is only read"),
])
def test_webhook_settings_where_they_do_not_belong_name_the_key(tmp_path, kind, settings, problem):
    raw = base_config(tmp_path, "https://upstream.example/v1", kind=kind)
    raw["upstreams"][0].update(settings)
    with pytest.raises(ConfigError) as caught:
        build_config(raw)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert WHSEC not in str(caught.value)


def test_fal_reads_its_own_key_set_unless_told_otherwise(tmp_path):
    raw = base_config(tmp_path, "https://queue.fal.run", kind="fal")
    raw["upstreams"][0]["webhooks"] = True
    upstream = build_config(raw).upstreams[0]
    assert upstream.has_webhooks and upstream.webhook_jwks_url == "https://rest.fal.ai/.well-known/jwks.json"


def test_gemini_maps_an_event_to_its_operation_by_name_or_by_our_token_in_either_casing():
    callbacks = Callbacks("sim", "https://gw.example/upstream-webhooks/sim", StandardWebhooks(WHSEC), Wakeups())
    dialect = GeminiUpstream("sim", "https://gemini.example/v1beta", timeout_s=1, poll_interval_s=1,
                             callbacks=callbacks)
    dialect._tokens["tok"] = "models/veo-3.1/operations/op1"
    assert dialect.callback_job({"data": {"user_metadata": {CORRELATION: "tok"}}}) == "models/veo-3.1/operations/op1"
    assert dialect.callback_job({"data": {"userMetadata": {CORRELATION: "tok"}}}) == "models/veo-3.1/operations/op1"
    assert dialect.callback_job({"data": {"operation": "models/veo-3/operations/op2"}}) == \
        "models/veo-3/operations/op2"
    assert dialect.callback_job({"data": {"user_metadata": {CORRELATION: "other"}}}) is None
