"""Faults where jobs, feeds, background rounds, storage and reloads meet, each at the level where it lives.

The two-instance faults (leases, key slots, flights across processes) are in test_instance_faults.py.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import httpx
import openai
import pytest

from gateway.backends.coordination import LocalCoordinator
from gateway.backends.store_local import LocalVideoStore
from gateway.core.errors import QuotaExceeded
from gateway.core.feed import JobHandle
from gateway.core.flights import Flights
from gateway.core.live import LiveJobs
from gateway.core.periodic import every
from gateway.core.records import JobRecord
from gateway.core.upstream import UpstreamStatus
from gateway.upstreams.list_poll import PAGE_SIZE, ListPoller
from tests.support import (
    ADMIN_KEY,
    ALPHA_KEY,
    BETA_KEY,
    finished_video,
    running_video_id,
    to_toml,
    upstream_table,
    wait_until,
)
from tests.test_chat import PROMPT, assert_playable_mp4

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def sdk(gateway, key: str = ALPHA_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def job(status: str = "in_progress", progress: float = 0.0, **values) -> JobRecord:
    return JobRecord(id="video_" + "ab" * 16, team="alpha", key_id="k", model="sora-2", upstream_model="sora-2",
                     prompt="p", size="720x1280", seconds=4, created_at=time.time(), status=status,
                     progress=progress, **values)


# 1. A stream can end without its video ------------------------------------------------------------------------

async def test_a_reader_busy_when_the_job_ends_still_reads_the_end():
    handle = JobHandle(job(progress=40.0))
    feed = handle.changes()
    assert await anext(feed) is True and handle.record.status == "in_progress"
    # while the reader is still sending that chunk to a slow client, the job finishes
    handle.record.status, handle.record.progress = "completed", 100.0
    handle.publish()
    assert await anext(feed) is True and handle.record.status == "completed"
    with pytest.raises(StopAsyncIteration):
        await anext(feed)


async def test_a_change_during_a_keepalive_is_not_missed():
    handle = JobHandle(job())
    feed = handle.changes()
    assert await anext(feed) is True
    tick = asyncio.ensure_future(anext(feed))
    await asyncio.sleep(0)  # the reader is waiting for news
    handle.wake()  # a keep-alive tick
    assert await tick is False
    handle.record.status = "failed"  # ends while the reader sends its ping
    handle.publish()
    assert await asyncio.wait_for(anext(feed), 5) is True and handle.done


# 9. Watched progress goes backwards ---------------------------------------------------------------------------

async def test_a_stale_copy_never_moves_a_watched_job_back():
    handle = JobHandle(job(progress=42.0))
    assert not handle.adopt({"status": "in_progress", "progress": 40.0})  # the database's coarser copy
    assert not handle.adopt({"status": "queued", "progress": 0.0})  # a late message from before
    assert handle.record.status == "in_progress" and handle.record.progress == 42.0
    assert handle.adopt({"status": "in_progress", "progress": 57.0})
    assert handle.record.progress == 57.0


# 7. One failed round stops a background loop for good -------------------------------------------------------

async def test_a_background_round_that_fails_does_not_end_the_loop():
    rounds: list[int] = []
    second = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise ConnectionError("database briefly away")
        second.set()

    task = asyncio.create_task(every(lambda: 0.0, work, "test round"))
    try:
        await asyncio.wait_for(second.wait(), 10)
    finally:
        task.cancel()
    assert rounds[:2] == [0, 1]


async def test_the_list_poller_survives_an_unexpected_answer():
    calls = 0

    async def list_page(after):
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"data": "not a list", "has_more": "yes"}["missing"]  # KeyError: an answer it cannot read
        return {"data": [{"id": "v1", "status": "completed", "progress": 100}], "has_more": False}

    async def get_one(upstream_id):
        raise AssertionError("the listing shows every job")

    poller = ListPoller(list_page, get_one, lambda v: UpstreamStatus(v["status"], v["progress"]), interval_s=0.0)
    try:
        statuses = [s.status async for s in poller.follow("v1")]
    finally:
        await poller.aclose()
    assert statuses == ["completed"] and calls == 2


async def test_jobs_that_join_during_a_list_round_do_not_push_its_own_jobs_to_single_polls():
    """A burst of new jobs sits on top of the listing (newest first) while a round pages down to the jobs it
    started with: those are still found in the listing, and the newcomers get their status from it too."""
    newcomers = [f"new{i}" for i in range(2500)]
    listing = [*reversed(newcomers), "old"]
    followers: list[asyncio.Task] = []
    single_polls: list[str] = []

    async def list_page(after):
        if not followers:  # the burst arrives while the first round runs
            followers.extend(asyncio.create_task(statuses(poller.follow(i))) for i in newcomers)
            await asyncio.sleep(0)
        start = listing.index(after) + 1 if after else 0
        page = listing[start:start + PAGE_SIZE]
        return {"data": [{"id": i, "status": "completed", "progress": 100} for i in page],
                "has_more": start + PAGE_SIZE < len(listing)}

    async def get_one(upstream_id):
        single_polls.append(upstream_id)
        return UpstreamStatus("completed", 100)

    async def statuses(follow):
        return [s.status async for s in follow]

    poller = ListPoller(list_page, get_one, lambda v: UpstreamStatus(v["status"], v["progress"]), interval_s=0.0)
    try:
        assert await statuses(poller.follow("old")) == ["completed"]
        assert all(s == ["completed"] for s in await asyncio.gather(*followers))
    finally:
        await poller.aclose()
    assert single_polls == []


# 5. A leader's own refusal reaches the requests that joined it -----------------------------------------------

async def test_a_joiner_never_gets_the_leaders_quota_error(tmp_path):
    from gateway.backends.sqlite import SQLiteDatabase

    db = SQLiteDatabase(str(tmp_path / "db.sqlite"))
    flights = Flights(LiveJobs(db, LocalCoordinator()), LocalCoordinator(), lambda: "video_" + "cd" * 16)
    gate = asyncio.Event()
    joiner_handle = JobHandle(job(status="queued"))

    async def leader_start(job_id: str) -> JobHandle:
        await gate.wait()
        raise QuotaExceeded("Team alpha has used 5 of 5 videos today.")

    async def joiner_start(job_id: str) -> JobHandle:
        return joiner_handle

    leader = asyncio.create_task(flights.run("vc1:key", leader_start, 60))
    joiner = asyncio.create_task(flights.run("vc1:key", joiner_start, 60))
    await asyncio.sleep(0)  # both reach their first wait: the leader on its admission, the joiner on the leader
    gate.set()
    with pytest.raises(QuotaExceeded):
        await leader
    handle, joined = await joiner
    assert handle is joiner_handle and joined is False  # it started a job of its own
    await db.close()


def test_a_team_handed_another_teams_video_by_the_global_cache_can_use_it(start_gateway, simulator):
    gateway = start_gateway(simulator, cache={"enabled": True, "ttl_s": 3600, "scope": "global"})
    prompt = "a lighthouse both teams asked for"
    first = sdk(gateway, ALPHA_KEY).videos.create_and_poll(model="sora-2", prompt=prompt)
    second = sdk(gateway, BETA_KEY).videos.create_and_poll(model="sora-2", prompt=prompt)
    assert second.id == first.id and second.status == "completed"
    assert_playable_mp4(sdk(gateway, BETA_KEY).videos.download_content(second.id).read())
    with pytest.raises(openai.NotFoundError):  # reading is shared; deleting stays the owner's
        sdk(gateway, BETA_KEY).videos.delete(second.id)
    assert simulator.app.state.sim.count(method="POST", path_prefix="/v1/videos") == 1


# 8. A config reload breaks downloads of running jobs -----------------------------------------------------------

def test_a_reload_that_moves_an_upstream_leaves_running_jobs_where_they_were(start_simulator, start_gateway):
    old, new = start_simulator(duration_s=1.0), start_simulator()
    gateway = start_gateway(old)
    old.app.state.sim.content_gate = gate = threading.Event()  # the job finishes while the reload happens
    try:
        stream = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True)
        video_id = running_video_id(stream)
        raw = dict(gateway.raw, upstreams=[{**gateway.raw["upstreams"][0], "base_url": new.url + "/v1"}])
        gateway.config_path.write_text(to_toml(raw | {"server": gateway.raw["server"]}))
        response = httpx.post(gateway.url + "/admin/reload", headers=ADMIN)
        assert "upstream sim: settings changed" in response.json()["changes"]
    finally:
        gate.set()
    video = finished_video(sdk(gateway), video_id)
    assert video.status == "completed", video.error
    assert_playable_mp4(sdk(gateway).videos.download_content(video_id).read())
    assert new.app.state.sim.count() == 0


def test_a_video_that_cannot_be_downloaded_fails_its_job_and_keeps_no_thumbnail(start_simulator, start_gateway):
    """When the video cannot be had, the job fails, nothing is charged and no file of it is kept."""
    simulator = start_simulator(duration_s=0.2)
    gateway = start_gateway(simulator)
    simulator.app.state.sim.content_errors["video"] = 404
    video = finished_video(sdk(gateway), sdk(gateway).videos.create(model="sora-2", prompt="a lost reel").id)
    assert video.status == "failed"
    assert "could not be downloaded" in video.error.message
    store = gateway.app.state.gateway.store
    assert not store.local_path(video.id, "video").exists()
    assert not store.local_path(video.id, "thumbnail").exists()
    usage = httpx.get(gateway.url + "/admin/usage", headers=ADMIN).json()
    assert sum(group["cost_usd"] for group in usage["data"]) == 0


# 10. The download counts against job_timeout_s ------------------------------------------------------------------

def test_a_video_ready_just_in_time_is_delivered_however_long_its_download_takes(start_simulator, start_gateway):
    simulator = start_simulator(duration_s=0.2)
    upstream = upstream_table(simulator.url + "/v1", job_timeout_s=2)
    gateway = start_gateway(simulator, upstreams=[upstream])
    simulator.app.state.sim.content_gate = gate = threading.Event()
    try:
        video = sdk(gateway).videos.create(model="sora-2", prompt="ready at the last moment")
        wait_until(lambda: simulator.app.state.sim.content_held >= 1)
        wait_until(lambda: time.time() > video.created_at + 3)  # the job's time is up while it downloads
    finally:
        gate.set()
    done = finished_video(sdk(gateway), video.id)
    assert done.status == "completed", done.error


# 12. Smaller faults ----------------------------------------------------------------------------------------------

async def test_two_writers_of_one_file_never_interleave(tmp_path):
    store = LocalVideoStore(tmp_path)

    async def chunks(byte: bytes):
        for _ in range(50):
            yield byte * 1000
            await asyncio.sleep(0)  # give the other writer its turn between chunks

    await asyncio.gather(store.save("video_" + "ef" * 16, "spritesheet", chunks(b"a")),
                         store.save("video_" + "ef" * 16, "spritesheet", chunks(b"b")))
    data = store.local_path("video_" + "ef" * 16, "spritesheet").read_bytes()
    assert data in (b"a" * 50_000, b"b" * 50_000)
    assert not list(tmp_path.rglob("*.part"))


async def test_a_large_file_is_written_as_it_arrives_and_a_broken_one_leaves_nothing(tmp_path):
    store = LocalVideoStore(tmp_path)
    video_id = "video_" + "cd" * 16
    part = bytes(range(256)) * 1024  # 256 kB: the file passes the size gathered in memory, then streams

    async def chunks(count: int, fail_after: int | None = None):
        for i in range(count):
            if i == fail_after:
                raise ConnectionError("the download broke off")
            yield part

    assert await store.save(video_id, "video", chunks(12)) == 12 * len(part)
    assert store.local_path(video_id, "video").read_bytes() == part * 12
    for fail_after in (2, 8):  # before and after the file is created
        with pytest.raises(ConnectionError):
            await store.save(video_id, "thumbnail", chunks(12, fail_after))
    assert not store.local_path(video_id, "thumbnail").exists()
    assert not list(tmp_path.rglob("*.part"))
    assert store.local_path(video_id, "video").read_bytes() == part * 12  # the finished one is untouched


async def test_a_writer_cancelled_while_its_file_is_synced_leaves_no_part_file_and_no_descriptor(tmp_path):
    """Files are synced, closed and renamed in a worker thread; a job deleted or a gateway stopping meanwhile
    cancels the writer, and the thread still closes the file and leaves no temporary one behind."""
    store = LocalVideoStore(tmp_path)
    open_fds = len(os.listdir("/proc/self/fd"))
    written = asyncio.Event()

    async def chunks():
        yield b"x" * 1000
        written.set()

    syncing = asyncio.create_task(store.save("video_" + "ba" * 16, "video", chunks()))
    await written.wait()  # the bytes are written: the writer now waits for the sync, close and rename
    syncing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await syncing
    # a later file goes through the same worker-thread call, after the cancelled writer's
    assert await store.save("video_" + "cc" * 16, "video", chunks()) == 1000
    assert store.local_path("video_" + "cc" * 16).read_bytes() == b"x" * 1000
    assert not list(tmp_path.rglob("*.part"))
    assert len(os.listdir("/proc/self/fd")) == open_fds


def test_a_locked_database_does_not_stall_the_gateway(gateway, tmp_path):
    holder = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process (say `sora-gateway keys create`) holds the write lock
    result: dict = {}

    def create() -> None:
        result["video"] = sdk(gateway).videos.create(model="sora-2", prompt="written once the lock is free")

    def admitted() -> bool:  # past its quota check: its next step is writing the job
        teams = httpx.get(gateway.url + "/admin/teams", headers=ADMIN, timeout=10).json()["data"]
        return next(t for t in teams if t["name"] == "alpha")["usage"]["concurrent_jobs"] == 1

    writer = threading.Thread(target=create)
    writer.start()
    try:
        wait_until(admitted)
        # the gateway answers other requests while its write waits for the lock
        assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
        assert writer.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    writer.join(30)
    assert result["video"].status == "queued"


def test_a_reload_keeps_the_last_used_times_not_yet_written(gateway, no_secrets_in_logs):
    created = httpx.post(gateway.url + "/admin/teams/alpha/keys", headers=ADMIN, json={"name": "ci"}).json()
    no_secrets_in_logs.append(created["key"])
    sdk(gateway, created["key"]).models.list()
    assert httpx.post(gateway.url + "/admin/reload", headers=ADMIN).status_code == 200
    keys = httpx.get(gateway.url + "/admin/keys", headers=ADMIN).json()["data"]
    assert next(k for k in keys if k["id"] == created["id"])["last_used_at"] is not None


def test_a_status_fan_out_failure_is_not_told_to_the_client_as_nothing_charged(start_simulator, start_gateway):
    from tests.test_instances import REDIS, _reachable

    if (problem := _reachable()) is not None:
        pytest.fail(f"Redis unreachable: {problem}")
    gateway = start_gateway(start_simulator(), storage={"redis": REDIS,
                                                        "redis_prefix": f"sgwtest:{time.monotonic_ns()}:"})
    coordinator = gateway.app.state.gateway.coordinator
    original = coordinator.publish

    async def broken(*args, **kwargs):
        raise ConnectionError("redis went away")

    coordinator.publish = broken
    try:
        completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    finally:
        coordinator.publish = original
    assert completion.model_extra["video"]["status"] == "completed"
    usage = sdk(gateway).get("/usage", cast_to=httpx.Response).json()
    assert usage["total"]["cost_usd"] == 0.4


# The fault table: a key that keeps timing out rests -----------------------------------------------------------

async def test_a_key_that_keeps_timing_out_stops_getting_new_jobs_for_a_while():
    from gateway.core.faults import STRIKES_TO_REST, Operation, decide
    from gateway.core.keypool import KeyPool

    pool = KeyPool.from_secrets("sim", ("sk-slow-1", "sk-good-2"), 10, LocalCoordinator())
    slow = pool.states[0]
    timeout = decide(Operation.SUBMIT, None)
    for _ in range(STRIKES_TO_REST):
        await pool.failed(slow, timeout.key, "timed out")
    assert slow.state(time.monotonic()) == "cooling"
    slot = await pool.acquire()
    assert slot.key.label == pool.states[1].key.label
    pool.succeeded(slow)  # a success later clears its record
    assert slow.strikes == 0
