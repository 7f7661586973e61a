"""Faults that need two `sora-gateway serve` processes on the real PostgreSQL and Redis: leases, key slots
and single-flight across instances."""
from __future__ import annotations

import httpx
import openai
import pytest
import redis

from gateway.core.cache import cache_key
from gateway.core.request import VideoRequest
from tests.support import ADMIN_KEY, build_config, finished_video, running_video_id, upstream_table, wait_until
from tests.test_chat import assert_playable_mp4
from tests.test_instances import (  # noqa: F401 - fixtures
    REDIS,
    cluster,
    sdk,
    services_up,
    shared_storage,
    usage_total,
)

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def upstream(simulator, **settings) -> dict:
    return upstream_table(simulator.url + "/v1", **settings)


def in_flight(url: str) -> list[int]:
    upstreams = httpx.get(url + "/admin/upstreams", headers=ADMIN).json()["data"]
    return [key["in_flight"] for u in upstreams for key in u["keys"]]


def creates(simulator) -> int:
    return simulator.app.state.sim.count(method="POST")


# 2. A lease is not renewed while a job is being submitted ------------------------------------------------------

def test_a_slow_create_is_not_taken_over_and_is_charged_once(start_simulator, cluster):  # noqa: F811
    simulator = start_simulator(duration_s=0.5, slow_s=12)  # the create alone outlasts a lease (10 s)
    c = cluster(simulator, upstreams=[upstream(simulator, keys=["sk-slowcreate-1"], timeout_s=30)])
    a, b = c.start(), c.start()
    video = sdk(a).videos.create(model="sora-2", prompt="a create slower than a lease")
    done = finished_video(sdk(b), video.id, timeout=60)
    assert done.status == "completed", done.error
    assert usage_total(a) == {"requests": 1, "videos": 1, "video_seconds": 4, "cost_usd": 0.4, "resubmitted": 0}
    assert creates(simulator) == 1


# 3. Losing a lease leaks the key slot; a Redis blip loses relay jobs ------------------------------------------

def test_a_lease_that_ran_out_in_a_redis_blip_keeps_its_job_and_frees_its_slot(  # noqa: F811
        start_simulator, cluster, shared_storage):  # noqa: F811
    simulator = start_simulator(kind="chat", duration_s=3)
    c = cluster(simulator, kind="chat")
    url = c.start()
    stream = sdk(url).chat.completions.create(model="sora-2", stream=True,
                                              messages=[{"role": "user", "content": "a relay job in a blip"}])
    video_id = running_video_id(stream)
    client = redis.Redis.from_url(REDIS)
    prefix = shared_storage["redis_prefix"]
    # the blip: the gateway's connections drop and its lease runs out before it can renew it
    client.delete(f"{prefix}job:{video_id}:owner")
    for entry in client.client_list():
        if entry.get("name", "").startswith("sora-gateway:" + prefix):
            client.client_kill_filter(_id=entry["id"])
    stream.close()
    video = finished_video(sdk(url), video_id, timeout=40)
    assert video.status == "completed", video.error
    assert_playable_mp4(sdk(url).videos.download_content(video_id).read())
    wait_until(lambda: in_flight(url) == [0])
    assert creates(simulator) == 1


# 4. A join of another instance's job never leaves the local single-flight -------------------------------------

def test_a_request_that_joined_a_failed_job_elsewhere_is_not_joined_to_it_again(start_simulator, cluster):  # noqa: F811
    simulator = start_simulator(duration_s=2)
    c = cluster(simulator)
    a, b = c.start(), c.start()
    messages = [{"role": "user", "content": "[fail] a job that fails on the other instance"}]
    running_video_id(sdk(a).chat.completions.create(model="sora-2", stream=True, messages=messages))
    with pytest.raises(openai.APIStatusError) as joined:
        sdk(b).chat.completions.create(model="sora-2", messages=messages)
    assert joined.value.response.headers["x-cache"] == "joined"
    with pytest.raises(openai.APIStatusError) as again:
        sdk(b).chat.completions.create(model="sora-2", messages=messages)
    assert again.value.response.headers["x-cache"] == "miss"  # a job of its own, not the failed one
    assert creates(simulator) == 2


def test_a_request_that_joined_a_job_elsewhere_is_a_hit_once_it_finished(start_simulator, cluster):  # noqa: F811
    simulator = start_simulator(duration_s=2)
    c = cluster(simulator)
    a, b = c.start(), c.start()
    messages = [{"role": "user", "content": "a job both instances wait on"}]
    running_video_id(sdk(a).chat.completions.create(model="sora-2", stream=True, messages=messages))
    first = sdk(b).chat.completions.with_raw_response.create(model="sora-2", messages=messages)
    second = sdk(b).chat.completions.with_raw_response.create(model="sora-2", messages=messages)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("joined", "hit")
    assert creates(simulator) == 1


# 6. A slot freed on another instance never wakes a waiter -----------------------------------------------------

def test_a_slot_freed_on_another_instance_is_taken_by_a_waiting_request(start_simulator, cluster):  # noqa: F811
    simulator = start_simulator(duration_s=2)
    c = cluster(simulator, upstreams=[upstream(simulator, max_concurrent_per_key=1, max_retry_s=30)])
    a, b = c.start(), c.start()
    running_video_id(sdk(a).chat.completions.create(model="sora-2", stream=True,
                                                   messages=[{"role": "user", "content": "holds the one slot"}]))
    completion = sdk(b).chat.completions.create(model="sora-2",
                                                messages=[{"role": "user", "content": "waits for that slot"}])
    assert completion.model_extra["video"]["status"] == "completed"
    assert creates(simulator) == 2


# 11. A stale Redis flight claim turns single-flight off ------------------------------------------------------

def test_a_stale_flight_claim_is_replaced_and_identical_requests_share_one_job(  # noqa: F811
        start_simulator, cluster, shared_storage):  # noqa: F811
    simulator = start_simulator(duration_s=2)
    c = cluster(simulator)
    prompt = "two instances, one stale claim"
    model = build_config(c.raw).models["sora-2"]
    key = cache_key(VideoRequest(model=model, prompt=prompt, size=model.size, seconds=model.seconds), None, "alpha")
    # an instance died between claiming the flight and writing its job
    redis.Redis.from_url(REDIS).set(f"{shared_storage['redis_prefix']}flight:{key}", "video_" + "0" * 32, px=600_000)
    a, b = c.start(), c.start()
    messages = [{"role": "user", "content": prompt}]
    video_id = running_video_id(sdk(a).chat.completions.create(model="sora-2", stream=True, messages=messages))
    joined = sdk(b).chat.completions.with_raw_response.create(model="sora-2", messages=messages)
    assert joined.headers["x-cache"] == "joined"
    assert joined.parse().model_extra["video"]["id"] == video_id
    assert creates(simulator) == 1
