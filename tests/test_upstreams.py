"""Key pools and the fault table, aimed at single keys through the simulator; chat relays of every family."""
from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.support import ADMIN_KEY, ALPHA_KEY
from tests.test_chat import PROMPT, assert_playable_mp4


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)


def upstream(sim, keys, *, name="sim", kind="videos", **extra) -> dict:
    return {"name": name, "kind": kind, "base_url": sim.url + "/v1", "keys": keys, "max_concurrent_per_key": 50,
            "poll_interval_s": 0.05, "timeout_s": 2, "job_timeout_s": 60, "max_retry_s": 10, **extra}


def calls(sim, key=None, method=None, path=None) -> int:
    return sim.app.state.sim.count(method=method, path_prefix=path, key=key)


def test_a_pool_with_a_401_a_429_and_a_flaky_key_serves_every_request(start_simulator, start_gateway):
    sim = start_simulator(retry_after_s=60)
    keys = ["sk-401-a", "sk-429-b", "sk-flaky-c", "sk-good-d"]
    gateway = start_gateway(sim, upstreams=[upstream(sim, keys)])
    for i in range(6):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert calls(sim, key="sk-401-a") == 1  # disabled after its first 401
    assert calls(sim, key="sk-429-b") == 1  # cooling for 60 s: not tried again
    assert calls(sim, method="POST", path="/v1/videos") <= 6 + 3  # six jobs, and each bad key wasted one call
    state = httpx.get(gateway.url + "/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    by_state = {k["state"] for k in state["data"][0]["keys"]}
    assert by_state == {"disabled", "cooling", "healthy"}


def test_every_key_rate_limited_is_503_with_retry_after(start_simulator, start_gateway):
    sim = start_simulator(retry_after_s=30)
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-429-a", "sk-429-b"])])
    with pytest.raises(openai.InternalServerError) as err:
        sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert err.value.status_code == 503 and err.value.code == "upstream_unavailable"
    assert 25 <= int(err.value.response.headers["retry-after"]) <= 30
    assert calls(sim, key="sk-429-a") == 1 and calls(sim, key="sk-429-b") == 1
    # cooling keys are not hammered: a second request fails fast without calling the upstream
    with pytest.raises(openai.InternalServerError):
        sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert calls(sim) == 2


def test_disabled_keys_give_503_and_admin_can_re_enable_them(start_simulator, start_gateway):
    sim = start_simulator()
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-403-a"])])
    with pytest.raises(openai.InternalServerError) as err:
        sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert err.value.code == "upstream_unavailable"
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    listing = httpx.get(gateway.url + "/admin/upstreams", headers=admin)
    assert "sk-403-a" not in listing.text
    [key] = listing.json()["data"][0]["keys"]
    assert key["state"] == "disabled" and "403" in key["disabled_reason"]
    response = httpx.post(f"{gateway.url}/admin/upstreams/sim/keys/{key['label']}/enable", headers=admin)
    assert response.status_code == 200 and response.json()["key"]["state"] == "healthy"
    assert httpx.get(gateway.url + "/admin/upstreams").status_code == 401
    assert httpx.get(gateway.url + "/admin/upstreams", headers={"authorization": f"Bearer {ALPHA_KEY}"}
                     ).status_code == 401


def test_server_errors_move_to_another_key(start_simulator, start_gateway):
    sim = start_simulator()
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-500-a", "sk-good-b"])])
    for i in range(3):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["url"]
    assert calls(sim, key="sk-500-a") <= 1 + 1  # the failing key loses priority after its first strike


def test_a_flaky_key_alone_still_finishes_its_jobs(start_simulator, start_gateway):
    """Half of all calls fail, including polls: a failed poll is retried on the next tick, not a failed job."""
    sim = start_simulator()
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-flaky-a"])])
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    failed = [c for c in sim.app.state.sim.calls if c.status >= 500]
    assert any(c.method == "GET" for c in failed)  # a poll failed along the way


def test_a_hanging_key_times_out_and_the_job_moves_on_marked_as_sent_again(start_simulator, start_gateway):
    sim = start_simulator()
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-hang-a", "sk-good-b"], timeout_s=0.5)])
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    # the create timed out after it was sent: the key's jobs were looked at (they hang too) before resending
    assert calls(sim, key="sk-hang-a", method="POST") == 1 and calls(sim, key="sk-hang-a", method="GET") == 2
    assert calls(sim, key="sk-good-b", method="POST") == 1
    usage = httpx.get(gateway.url + "/admin/usage", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert usage["total"]["resubmitted"] == 1


def test_upstream_400_goes_back_to_the_client_and_is_not_retried(start_simulator, start_gateway):
    sim = start_simulator()
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-good-a", "sk-good-b"])],
                            models={"sora-2": {"upstreams": ["sim"], "sizes": ["720x1280", "999x999"]}})
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, extra_body={"size": "999x999"})
    assert "999x999" in err.value.message and "sk-good" not in err.value.message
    assert calls(sim) == 1


def test_when_an_upstream_is_exhausted_the_next_one_serves(start_simulator, start_gateway):
    dead, good = start_simulator(), start_simulator()
    gateway = start_gateway(dead, upstreams=[upstream(dead, ["sk-401-a", "sk-401-b"], name="dead"),
                                             upstream(good, ["sk-good-c"], name="good")],
                            models={"sora-2": {"upstreams": ["dead", "good"]},
                                    "org/sora-2-pro": {"upstreams": ["good"]}})
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert completion.model_extra["video"]["status"] == "completed"
    assert calls(dead) == 2 and calls(good, method="POST") == 1


@pytest.mark.parametrize("family", ["a", "b", "c"])
@pytest.mark.parametrize("language", ["zh", "en"])
def test_chat_relay_families_stream_progress_and_a_gateway_link(start_simulator, start_gateway, family, language):
    sim = start_simulator(kind="chat", duration_s=0.6)
    gateway = start_gateway(sim, upstreams=[upstream(sim, [f"sk-fam-{family}-{language}-1"], kind="chat")])
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    progress = [int(m.group(1)) for c in chunks
                for m in [re.search(r"Generating: (\d+)%", c.choices[0].delta.content or "")] if m]
    assert progress and progress == sorted(progress) and 0 < max(progress) < 100
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    url = final.model_extra["video"]["url"]
    assert url.startswith(gateway.url + "/v1/videos/")  # the relay's own link never reaches the client
    assert sim.url not in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert_playable_mp4(httpx.get(url).content)


@pytest.mark.parametrize("family", ["a", "b", "c"])
def test_chat_relay_refusal_ends_with_content_filter(start_simulator, start_gateway, family):
    sim = start_simulator(kind="chat", duration_s=0.3)
    gateway = start_gateway(sim, upstreams=[upstream(sim, [f"sk-fam-{family}-en-1"], kind="chat")])
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "❌ Video refused:" in "".join(c.choices[0].delta.content or "" for c in chunks)


def test_chat_relay_mid_stream_error_is_an_in_stream_error(start_simulator, start_gateway):
    sim = start_simulator(kind="chat", duration_s=0.3)
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-fam-c-1"], kind="chat")])
    with pytest.raises(openai.APIError) as err:
        for _ in sdk(gateway).chat.completions.create(
                model="sora-2", stream=True, messages=[{"role": "user", "content": "[error] scene"}]):
            pass
    assert "upstream generation error" in err.value.message


def test_chat_relay_rate_limit_rotates_to_another_key(start_simulator, start_gateway):
    sim = start_simulator(kind="chat", duration_s=0.3, retry_after_s=60)
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-429-fam-a-1", "sk-fam-a-2"], kind="chat")])
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert calls(sim, key="sk-429-fam-a-1") == 1


def test_jobs_of_one_key_are_polled_together_with_one_list_call_per_interval(start_simulator, start_gateway):
    sim = start_simulator(duration_s=0.6)
    gateway = start_gateway(sim)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(10) as pool:
        done = list(pool.map(lambda i: sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"crowd scene {i}"}]), range(10)))
    assert all(c.model_extra["video"]["status"] == "completed" for c in done)
    calls = sim.app.state.sim.calls
    lists = [c for c in calls if c.method == "GET" and c.path == "/v1/videos"]
    one_by_one = [c for c in calls if c.method == "GET" and c.path.startswith("/v1/videos/")
                  and not c.path.endswith("/content")]
    assert lists and one_by_one == []
    # ten jobs of ~0.6 s polled every 0.05 s would take well over a hundred single polls
    assert len(lists) < 60
