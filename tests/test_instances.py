"""Two gateway processes on one Redis and one PostgreSQL: every promise still holds."""
from __future__ import annotations

import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import openai
import pytest
import redis

from tests.support import (
    ALPHA_KEY,
    base_config,
    finished_video,
    free_port,
    hash_key,
    running_video_id,
    to_toml,
    wait_until,
)
from tests.test_chat import assert_playable_mp4
from tests.test_durability import start_gateway_process

POSTGRES = os.environ.get("GATEWAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


def _reachable() -> str | None:
    import asyncio

    async def check() -> None:
        conn = await asyncpg.connect(POSTGRES, timeout=3)
        await conn.close()

    try:
        asyncio.run(check())
        redis.Redis.from_url(REDIS, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def services_up() -> None:
    problem = _reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL or Redis unreachable in CI: {problem}")
        pytest.skip(f"PostgreSQL or Redis unreachable: {problem}")


@pytest.fixture
def shared_storage(services_up):
    """A fresh PostgreSQL database and Redis key prefix for one test."""
    import asyncio

    name = "sgw_test_" + secrets.token_hex(4)
    base, _, _ = POSTGRES.rpartition("/")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    prefix = f"sgwtest:{secrets.token_hex(4)}:"
    yield {"database": f"{base}/{name}", "redis": REDIS, "redis_prefix": prefix}
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Cluster:
    def __init__(self, tmp_path, simulator, storage, **overrides) -> None:
        self.tmp_path = tmp_path
        self.raw = base_config(tmp_path, simulator.url + "/v1", **overrides)
        self.raw["storage"].update(storage)
        self.processes: dict[int, object] = {}

    def start(self, port: int | None = None) -> str:
        port = port or free_port()
        raw = dict(self.raw, server={**self.raw["server"], "public_url": f"http://127.0.0.1:{port}"})
        path = self.tmp_path / f"gateway-{port}.toml"
        path.write_text(to_toml(raw))
        self.processes[port] = start_gateway_process(path, port, self.tmp_path / f"gateway-{port}.log")
        return f"http://127.0.0.1:{port}"

    def kill(self, url: str) -> None:
        process = self.processes.pop(int(url.rsplit(":", 1)[1]))
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except Exception:  # noqa: BLE001
                process.kill()

    def logs(self) -> str:
        return "".join(p.read_text() for p in self.tmp_path.glob("gateway-*.log"))


@pytest.fixture
def cluster(tmp_path, shared_storage, no_secrets_in_logs):
    clusters: list[Cluster] = []

    def make(simulator, **overrides) -> Cluster:
        c = Cluster(tmp_path, simulator, shared_storage, **overrides)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop()
        log = c.logs()
        for secret in [*no_secrets_in_logs, *c.raw["upstreams"][0]["keys"]]:
            assert secret not in log


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=ALPHA_KEY, max_retries=0)


def usage_total(url: str) -> dict:
    return sdk(url).get("/usage", cast_to=httpx.Response).json()["total"]


def test_concurrent_jobs_quota_is_exact_across_two_instances(start_simulator, cluster):
    simulator = start_simulator(duration_s=30)
    c = cluster(simulator, teams=[{"name": "alpha", "keys": [hash_key(ALPHA_KEY)], "quotas": {"concurrent_jobs": 2}}])
    a, b = c.start(), c.start()

    def attempt(i: int) -> bool:
        try:
            stream = sdk(a if i % 2 else b).chat.completions.create(
                model="sora-2", stream=True, messages=[{"role": "user", "content": f"shot {i}"}])
            stream.close()
            return True
        except openai.RateLimitError:
            return False

    with ThreadPoolExecutor(12) as pool:
        admitted = sum(pool.map(attempt, range(12)))
    assert admitted == 2
    wait_until(lambda: simulator.app.state.sim.count(method="POST") == 2)
    assert simulator.app.state.sim.count(method="POST") == 2


def test_identical_requests_on_both_instances_make_one_upstream_job(start_simulator, cluster):
    simulator = start_simulator(duration_s=1.5)
    c = cluster(simulator)
    a, b = c.start(), c.start()
    messages = [{"role": "user", "content": "one lighthouse, two instances"}]

    def generate(url: str):
        raw = sdk(url).chat.completions.with_raw_response.create(model="sora-2", messages=messages)
        return raw.headers["x-cache"], raw.parse().model_extra["video"]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(generate, [a, b, a, b, a, b]))
    assert sorted(state for state, _ in results).count("miss") == 1
    assert len({video["id"] for _, video in results}) == 1
    assert all(video["status"] == "completed" for _, video in results)
    assert simulator.app.state.sim.count(method="POST", path_prefix="/v1/videos") == 1
    assert_playable_mp4(httpx.get(results[0][1]["url"].replace(a, b).replace(b, a)).content)


def test_a_key_cooled_by_one_instance_is_avoided_by_the_other(start_simulator, cluster):
    simulator = start_simulator(retry_after_s=120)
    c = cluster(simulator)
    c.raw["upstreams"][0]["keys"] = ["sk-429-first", "sk-good-second"]
    a, b = c.start(), c.start()
    sdk(a).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "on a"}])
    assert simulator.app.state.sim.count(key="sk-429-first") == 1
    admin = {"authorization": "Bearer sk-admin-0123456789abcdef"}
    wait_until(lambda: {k["state"] for k in httpx.get(b + "/admin/upstreams", headers=admin).json()["data"][0]["keys"]}
               == {"cooling", "healthy"}, timeout=10)
    for i in range(3):
        sdk(b).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": f"on b {i}"}])
    assert simulator.app.state.sim.count(key="sk-429-first") == 1


def test_an_instance_killed_mid_job_has_its_job_finished_by_the_other_with_one_charge(start_simulator, cluster):
    simulator = start_simulator(duration_s=3)
    c = cluster(simulator)
    a, b = c.start(), c.start()
    stream = sdk(a).chat.completions.create(model="sora-2", stream=True,
                                            messages=[{"role": "user", "content": "a job that outlives a"}])
    video_id = running_video_id(stream)
    c.kill(a)
    stream.close()
    video = finished_video(sdk(b), video_id, timeout=40)
    assert video.status == "completed"
    assert_playable_mp4(sdk(b).videos.download_content(video_id).read())
    assert simulator.app.state.sim.count(method="POST", path_prefix="/v1/videos") == 1
    usage = sdk(b).get("/usage", cast_to=httpx.Response).json()
    assert usage["total"] == {"requests": 1, "videos": 1, "video_seconds": 4, "cost_usd": 0.4, "resubmitted": 0}


def test_readyz_reports_each_backend(start_simulator, cluster):
    c = cluster(start_simulator())
    url = c.start()
    body = httpx.get(url + "/readyz").json()
    assert body["checks"]["database"] is True and body["checks"]["redis"] is True


# -- videos in an object store: no disk is shared ----------------------------------------------------------


def on_object_store(c: Cluster, s3, **storage) -> Cluster:
    """Keep the cluster's videos in the test's S3 bucket instead of a folder (no shared volume)."""
    del c.raw["storage"]["videos_dir"]
    c.raw["storage"].update(s3.storage(**storage))
    return c


def test_a_video_finished_by_one_instance_is_served_with_range_and_etag_by_the_other(start_simulator, cluster, s3):
    c = on_object_store(cluster(start_simulator()), s3)
    a, b = c.start(), c.start()
    video = sdk(a).videos.create_and_poll(model="sora-2", prompt="made on a, watched on b")
    assert video.status == "completed"
    data = sdk(b).videos.download_content(video.id).read()
    assert_playable_mp4(data)
    url = f"/v1/videos/{video.id}/content"
    headers = {"authorization": f"Bearer {ALPHA_KEY}"}
    from_a, from_b = httpx.get(a + url, headers=headers), httpx.get(b + url, headers=headers)
    assert from_a.content == from_b.content == data and from_a.headers["etag"] == from_b.headers["etag"]
    part = httpx.get(b + url, headers={**headers, "range": "bytes=10-1009"})
    assert part.status_code == 206 and part.content == data[10:1010]
    assert part.headers["content-range"] == f"bytes 10-1009/{len(data)}"
    assert httpx.get(b + url, headers={**headers, "if-none-match": from_a.headers["etag"]}).status_code == 304


def test_a_video_deleted_through_one_instance_is_gone_for_both(start_simulator, cluster, s3):
    c = on_object_store(cluster(start_simulator()), s3)
    a, b = c.start(), c.start()
    video = sdk(a).videos.create_and_poll(model="sora-2", prompt="deleted on b")
    assert_playable_mp4(sdk(a).videos.download_content(video.id).read())
    sdk(b).videos.delete(video.id)
    assert s3.keys() == []
    for url in (a, b):
        with pytest.raises(openai.NotFoundError):
            sdk(url).videos.download_content(video.id)


def test_a_running_video_deleted_through_the_other_instance_keeps_nothing_and_is_charged(start_simulator, cluster,
                                                                                          s3):
    c = on_object_store(cluster(start_simulator(duration_s=1)), s3)
    a, b = c.start(), c.start()
    running = sdk(a).videos.create(model="sora-2", prompt="made on a, deleted on b while it runs")
    assert sdk(b).videos.delete(running.id).deleted is True
    wait_until(lambda: usage_total(b)["videos"] == 1, timeout=30)  # a finished it: the upstream charged for it
    assert usage_total(b)["cost_usd"] == 0.4
    assert s3.keys() == []  # a learnt of the delete from the database and kept nothing
    with pytest.raises(openai.NotFoundError):
        sdk(a).videos.retrieve(running.id)


def test_expired_videos_are_swept_from_the_store_for_every_instance(start_simulator, cluster, s3):
    c = on_object_store(cluster(start_simulator(), cache={"enabled": True, "ttl_s": 2, "scope": "team"}), s3)
    a, b = c.start(), c.start()
    video = sdk(a).videos.create(model="sora-2", prompt="kept for two seconds")
    wait_until(lambda: f"{video.id}.mp4" in s3.keys())
    wait_until(lambda: s3.keys() == [], timeout=30)
    for url in (a, b):
        with pytest.raises(openai.NotFoundError):
            sdk(url).videos.download_content(video.id)


def test_redirect_mode_sends_either_instances_clients_to_the_store(start_simulator, cluster, s3):
    c = on_object_store(cluster(start_simulator()), s3, serve="redirect")
    a, b = c.start(), c.start()
    video = sdk(a).videos.create_and_poll(model="sora-2", prompt="bytes straight from the store")
    moved = httpx.get(f"{b}/v1/videos/{video.id}/content", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert moved.status_code == 302 and moved.headers["location"].startswith(s3.endpoint)
    assert_playable_mp4(httpx.get(moved.headers["location"]).content)
    assert sdk(b).videos.download_content(video.id).read() == httpx.get(moved.headers["location"]).content
    assert httpx.get(f"{b}/v1/videos/{video.id}/content").status_code == 401
