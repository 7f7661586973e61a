"""`kind = "openrouter"`: what only OpenRouter's video API does, end to end through the `openai` SDK against its
fake. What every provider kind does alike is in tests/test_provider_kinds.py."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, key_states, sdk, start
from tests.support import wait_until
from tests.test_chat import assert_playable_mp4

MODEL = KINDS["openrouter"].model


def router_gateway(start_simulator, start_gateway, keys=("sk-good-1",), **model):
    return start(start_simulator, start_gateway, "openrouter", keys, **model)


def test_a_moderation_403_on_the_create_is_a_refusal_not_a_bad_key(start_simulator, start_gateway):
    sim, gateway = router_gateway(start_simulator, start_gateway, keys=("sk-good-1", "sk-good-2"))
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="[moderate] a scene")
    assert err.value.code == "content_policy_violation" and "flagged" in err.value.message
    assert len(calls(sim, method="POST")) == 1 and key_states(gateway) == {"healthy"}


def test_the_fake_answers_202_with_a_relative_polling_url_and_guards_the_bytes(start_simulator):
    sim = start_simulator(kind="openrouter", duration_s=0.2)
    headers = {"authorization": "Bearer sk-good-1"}
    created = httpx.post(sim.url + "/api/v1/videos", headers=headers, json={"model": MODEL, "prompt": "a fox"})
    assert created.status_code == 202
    job = created.json()
    assert job["status"] == "pending" and job["polling_url"] == f"/api/v1/videos/{job['id']}"
    done = wait_until(lambda: (j := httpx.get(sim.url + job["polling_url"], headers=headers).json())["status"]
                      == "completed" and j)
    [url] = done["unsigned_urls"]
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["message"] == "Missing Authentication header"
    assert_playable_mp4(httpx.get(url, headers=headers).content)
    bad = httpx.post(sim.url + "/api/v1/videos", headers=headers, json={"model": MODEL, "prompt": "x", "duration": 5})
    assert bad.status_code == 400 and "supported: 4, 6, 8" in bad.json()["error"]["message"]
