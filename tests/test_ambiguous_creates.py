"""Never pay twice: a create whose answer was lost (the simulator's `[lost]` prompt: the job is made, the answer
is a proxy's 502), for every kind, through the `openai` SDK.

Where the provider lists a key's jobs (videos, replicate) the job is found and followed; elsewhere the kind's
default fails it rather than send it again, and `on_ambiguous_create = "resubmit"` sends it again, marked in the
ledger and in /admin/usage.
"""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.providers import KINDS, sdk, start
from tests.support import ADMIN_KEY, free_port
from tests.test_chat import assert_playable_mp4

LISTABLE = ("videos", "replicate")  # the kinds whose provider lists a key's jobs


def creates(sim) -> int:
    return sim.app.state.sim.count(method="POST")


def made(sim, kind: str) -> int:
    state = sim.app.state.sim
    return len(state.videos) if kind == "videos" else len(state.provider_jobs)


def usage_total(gateway) -> dict:
    return httpx.get(gateway.url + "/admin/usage", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["total"]


@pytest.mark.parametrize("kind", LISTABLE)
def test_a_lost_create_is_found_in_the_list_and_followed(start_simulator, start_gateway, kind):
    sim, gateway = start(start_simulator, start_gateway, kind)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[lost] a kite over the dunes", size="1280x720",
                                         seconds="4")
    assert sdk(gateway).videos.poll(created.id, poll_interval_ms=50).status == "completed"
    assert_playable_mp4(sdk(gateway).videos.download_content(created.id).read())
    assert (creates(sim), made(sim, kind)) == (1, 1)  # made once, paid once
    total = usage_total(gateway)
    assert (total["videos"], total["cost_usd"], total["resubmitted"]) == (1, 0.4, 0)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in LISTABLE])
def test_a_lost_create_that_cannot_be_looked_up_is_not_sent_again(start_simulator, start_gateway, kind):
    sim, gateway = start(start_simulator, start_gateway, kind)
    with pytest.raises(openai.APIStatusError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="[lost] a kite over the dunes", size="1280x720",
                                   seconds="4")
    assert err.value.status_code == 502 and err.value.code == "create_unconfirmed"
    assert "not sent again" in err.value.message and "sk-good" not in err.value.message
    assert (creates(sim), made(sim, kind)) == (1, 1)
    total = usage_total(gateway)
    assert (total["requests"], total["videos"], total["cost_usd"]) == (1, 0, 0.0)  # the client pays nothing


def test_a_create_that_never_connected_is_retried_not_taken_for_a_lost_one(start_simulator, start_gateway):
    """Nothing can have been made where no connection was: gemini, which never resends a lost create, keeps
    trying this one until its retry budget is spent and answers 503, not `create_unconfirmed`."""
    _, gateway = start(start_simulator, start_gateway, "gemini",
                       upstream={"base_url": f"http://127.0.0.1:{free_port()}/v1beta", "max_retry_s": 1})
    with pytest.raises(openai.APIStatusError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a kite over the dunes", size="1280x720", seconds="4")
    assert err.value.status_code == 503 and err.value.code == "upstream_unavailable"
    assert usage_total(gateway)["resubmitted"] == 0


def test_resubmit_sends_it_again_and_the_ledger_says_so(start_simulator, start_gateway):
    sim, gateway = start(start_simulator, start_gateway, "runway",
                        upstream={"on_ambiguous_create": "resubmit"})
    completion = sdk(gateway).chat.completions.create(
        model="sora-2", messages=[{"role": "user", "content": "[lost] a kite over the dunes"}])
    assert completion.model_extra["video"]["status"] == "completed"
    assert (creates(sim), made(sim, "runway")) == (2, 2)  # the provider may bill both
    total = usage_total(gateway)
    assert (total["videos"], total["resubmitted"]) == (1, 1)
    csv = httpx.get(gateway.url + "/admin/usage", params={"format": "csv"},
                    headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    assert csv.splitlines()[0].endswith(",cost_usd,resubmitted") and csv.splitlines()[1].endswith(",1")
