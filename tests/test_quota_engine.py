"""The quota engine's behaviour, run against every store: in process memory and in a real Redis."""
from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.backends.quota_memory import MemoryQuotaStore
from gateway.backends.quota_redis import RedisQuotaStore
from gateway.config import QuotaConfig
from gateway.core.quota import RESERVATION_TTL_S, Admission, Charge, QuotaStore, Rejection

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEAM = "marketing"
JOB = Charge(videos=1, video_seconds=4, usd=0.40)


def at(text: str) -> float:
    """Epoch seconds of an ISO-8601 UTC moment."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = at("2025-03-14T10:00:10")


async def connect_redis() -> Redis:
    """A client for the test Redis; unreachable means failure in CI and a skip anywhere else."""
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unreachable in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return client


@pytest.fixture
async def redis_stores() -> AsyncIterator[Callable[[], Awaitable[RedisQuotaStore]]]:
    """Make RedisQuotaStores that share one fresh prefix, each on its own client like separate instances."""
    prefix = f"sgw-test:{secrets.token_hex(6)}:"
    clients: list[Redis] = []

    async def make() -> RedisQuotaStore:
        client = await connect_redis()
        clients.append(client)
        return RedisQuotaStore(client, prefix=prefix)

    yield make
    if clients:
        keys = [key async for key in clients[0].scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await clients[0].delete(*keys)
    for client in clients:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_stores) -> AsyncIterator[QuotaStore]:
    quota_store: QuotaStore = MemoryQuotaStore() if request.param == "memory" else await redis_stores()
    yield quota_store
    await quota_store.close()


async def admit_many(
    store: QuotaStore, limits: QuotaConfig, n: int, charge: Charge = JOB, now: float = NOW
) -> list[Admission | Rejection]:
    return list(await asyncio.gather(*(store.admit(TEAM, limits, charge, now=now) for _ in range(n))))


def admitted(results: list[Admission | Rejection]) -> list[Admission]:
    return [r for r in results if isinstance(r, Admission)]


async def test_concurrent_admits_never_exceed_concurrent_jobs(store: QuotaStore) -> None:
    limits = QuotaConfig(concurrent_jobs=2)

    results = await admit_many(store, limits, 12)

    ok = admitted(results)
    assert len(ok) == 2
    rejected = [r for r in results if isinstance(r, Rejection)]
    assert {(r.limit, r.code) for r in rejected} == {("concurrent_jobs", "rate_limit_exceeded")}
    assert 0 < rejected[0].retry_after_s <= 10
    assert "concurrent_jobs = 2 (2 running)" in rejected[0].message

    await store.settle(TEAM, ok[0].reservation_id)
    after = await admit_many(store, limits, 5)
    assert len(admitted(after)) == 1
    assert (await store.usage(TEAM, now=NOW))["concurrent_jobs"] == 2


async def test_videos_per_day_admits_exactly_the_limit(store: QuotaStore) -> None:
    limits = QuotaConfig(videos_per_day=5)

    first = await admit_many(store, limits, 4)
    second = await admit_many(store, limits, 4)
    sequential = [await store.admit(TEAM, limits, JOB, now=NOW) for _ in range(3)]

    assert len(admitted(first)) == 4
    assert len(admitted(second)) == 1
    assert admitted(sequential) == []
    rejection = sequential[-1]
    assert isinstance(rejection, Rejection)
    assert (rejection.limit, rejection.code) == ("videos_per_day", "quota_exceeded")
    assert "Team 'marketing' reached videos_per_day = 5 (5 used); resets at 00:00 UTC in 13 h 59 min" in (
        rejection.message
    )
    assert rejection.retry_after_s == at("2025-03-15T00:00:00") - NOW

    for admission in admitted(first + second):
        await store.settle(TEAM, admission.reservation_id)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW), Rejection)


async def test_budget_rejects_the_charge_that_does_not_fit(store: QuotaStore) -> None:
    limits = QuotaConfig(budget_usd_per_month=1.00)

    results = [await store.admit(TEAM, limits, JOB, now=NOW) for _ in range(3)]

    assert [type(r) for r in results] == [Admission, Admission, Rejection]
    rejection = results[2]
    assert (rejection.limit, rejection.code) == ("budget_usd_per_month", "quota_exceeded")
    assert "budget_usd_per_month = 1.00 USD (0.80 USD used, this request costs 0.40 USD)" in rejection.message
    assert "resets on 2025-04-01 00:00 UTC in 17 d 13 h" in rejection.message
    assert rejection.retry_after_s == at("2025-04-01T00:00:00") - NOW
    assert (await store.usage(TEAM, now=NOW))["budget_usd_per_month"] == 0.80


async def test_budget_that_fits_to_the_cent_is_admitted(store: QuotaStore) -> None:
    # In floats 0.10 + 0.20 + 0.70 is 1.0000000000000002; in micro-dollars it is exactly the budget.
    limits = QuotaConfig(budget_usd_per_month=1.00)

    for usd in (0.10, 0.20, 0.70):
        assert isinstance(await store.admit(TEAM, limits, Charge(1, 4, usd), now=NOW), Admission)

    assert isinstance(await store.admit(TEAM, limits, Charge(1, 4, 0.01), now=NOW), Rejection)
    assert isinstance(await store.admit(TEAM, limits, Charge(1, 4, 0.0), now=NOW), Admission)


async def test_refund_gives_the_charge_back_once(store: QuotaStore) -> None:
    limits = QuotaConfig(videos_per_day=2, budget_usd_per_month=0.80)
    first, _ = [await store.admit(TEAM, limits, JOB, now=NOW) for _ in range(2)]
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW), Rejection)

    await store.refund(TEAM, first.reservation_id)
    await store.refund(TEAM, first.reservation_id)

    assert await store.usage(TEAM, now=NOW) == {
        "requests_per_minute": 2,
        "concurrent_jobs": 1,
        "videos_per_day": 1,
        "video_seconds_per_month": 4,
        "budget_usd_per_month": 0.40,
    }
    results = await admit_many(store, limits, 4)
    assert len(admitted(results)) == 1


async def test_refund_after_settle_frees_nothing_more(store: QuotaStore) -> None:
    admission = await store.admit(TEAM, QuotaConfig(concurrent_jobs=1, videos_per_day=1), JOB, now=NOW)

    await store.settle(TEAM, admission.reservation_id)
    await store.refund(TEAM, admission.reservation_id)
    await store.settle(TEAM, admission.reservation_id)

    usage = await store.usage(TEAM, now=NOW)
    assert (usage["concurrent_jobs"], usage["videos_per_day"], usage["budget_usd_per_month"]) == (0, 1, 0.40)
    results = await admit_many(store, QuotaConfig(concurrent_jobs=1, videos_per_day=10), 3)
    assert len(admitted(results)) == 1


async def test_requests_per_minute(store: QuotaStore) -> None:
    limits = QuotaConfig(requests_per_minute=3)

    results = [await store.admit(TEAM, limits, JOB, now=NOW + i) for i in range(4)]

    assert [(r.rpm_limit, r.rpm_remaining, r.rpm_reset_s) for r in results[:3]] == [
        (3, 2, 50.0),
        (3, 1, 49.0),
        (3, 0, 48.0),
    ]
    rejection = results[3]
    assert isinstance(rejection, Rejection)
    assert (rejection.limit, rejection.code) == ("requests_per_minute", "rate_limit_exceeded")
    assert 0 < rejection.retry_after_s <= 60
    assert (rejection.rpm_limit, rejection.rpm_remaining, rejection.rpm_reset_s) == (3, 0, 47.0)
    assert "requests_per_minute = 3 (3 used); resets in 47 s" in rejection.message
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW + 50), Admission)


async def test_a_rejected_request_consumes_nothing(store: QuotaStore) -> None:
    limits = QuotaConfig(requests_per_minute=3, concurrent_jobs=1)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW), Admission)

    rejection = await store.admit(TEAM, limits, JOB, now=NOW)

    assert rejection.limit == "concurrent_jobs"
    assert (rejection.rpm_limit, rejection.rpm_remaining) == (3, 2)
    usage = await store.usage(TEAM, now=NOW)
    assert (usage["requests_per_minute"], usage["videos_per_day"]) == (1, 1)


async def test_a_new_utc_day_resets_videos_per_day(store: QuotaStore) -> None:
    limits = QuotaConfig(videos_per_day=1)
    evening = at("2025-03-14T23:59:30")
    yesterday = await store.admit(TEAM, limits, JOB, now=evening)

    rejection = await store.admit(TEAM, limits, JOB, now=evening + 10)
    assert rejection.retry_after_s == 20
    assert "resets at 00:00 UTC in 20 s" in rejection.message

    today = await store.admit(TEAM, limits, JOB, now=evening + 60)
    assert isinstance(today, Admission)
    # Yesterday's refund goes back to yesterday's count, not into today's.
    await store.refund(TEAM, yesterday.reservation_id)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=evening + 61), Rejection)


async def test_a_new_utc_month_resets_seconds_and_budget(store: QuotaStore) -> None:
    limits = QuotaConfig(video_seconds_per_month=8, budget_usd_per_month=0.40)
    end_of_month = at("2025-02-28T23:00:00")
    assert isinstance(await store.admit(TEAM, limits, JOB, now=end_of_month), Admission)

    rejection = await store.admit(TEAM, limits, JOB, now=end_of_month)
    assert rejection.limit == "budget_usd_per_month"
    assert "resets on 2025-03-01 00:00 UTC in 1 h" in rejection.message
    rejection = await store.admit(TEAM, limits, Charge(1, 8, 0.0), now=end_of_month)
    assert rejection.limit == "video_seconds_per_month"
    assert "would exceed video_seconds_per_month = 8 (4 used, this request needs 8)" in rejection.message

    assert isinstance(await store.admit(TEAM, limits, JOB, now=at("2025-03-01T00:00:00")), Admission)


async def test_cache_hits_count_requests_but_no_job(store: QuotaStore) -> None:
    limits = QuotaConfig(requests_per_minute=5, concurrent_jobs=1, videos_per_day=1, budget_usd_per_month=0.40)
    job = await store.admit(TEAM, limits, JOB, now=NOW)

    hits = [await store.admit(TEAM, limits, JOB, count_job=False, now=NOW) for _ in range(3)]

    assert all(isinstance(hit, Admission) and hit.reservation_id is None for hit in hits)
    assert [hit.rpm_remaining for hit in hits] == [3, 2, 1]
    assert await store.usage(TEAM, now=NOW) == {
        "requests_per_minute": 4,
        "concurrent_jobs": 1,
        "videos_per_day": 1,
        "video_seconds_per_month": 4,
        "budget_usd_per_month": 0.40,
    }
    await store.settle(TEAM, job.reservation_id)
    assert (await store.admit(TEAM, limits, JOB, count_job=False, now=NOW)).rpm_remaining == 0
    assert (await store.admit(TEAM, limits, JOB, count_job=False, now=NOW)).limit == "requests_per_minute"


async def test_unlimited_always_admits(store: QuotaStore) -> None:
    results = await admit_many(store, QuotaConfig(), 50, Charge(videos=3, video_seconds=12, usd=123.45))

    assert len(admitted(results)) == 50
    assert {(r.rpm_limit, r.rpm_remaining, r.rpm_reset_s) for r in results} == {(None, None, None)}
    usage = await store.usage(TEAM, now=NOW)
    assert (usage["concurrent_jobs"], usage["videos_per_day"]) == (50, 150)
    assert usage["budget_usd_per_month"] == 6172.5


async def test_teams_do_not_share_counters(store: QuotaStore) -> None:
    limits = QuotaConfig(concurrent_jobs=1)
    assert isinstance(await store.admit("marketing", limits, JOB, now=NOW), Admission)
    assert isinstance(await store.admit("research", limits, JOB, now=NOW), Admission)
    assert isinstance(await store.admit("marketing", limits, JOB, now=NOW), Rejection)


async def test_a_lost_reservation_frees_its_slot_after_the_ttl(store: QuotaStore) -> None:
    limits = QuotaConfig(concurrent_jobs=1)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW), Admission)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW + RESERVATION_TTL_S - 1), Rejection)

    later = NOW + RESERVATION_TTL_S + 1
    assert isinstance(await store.admit(TEAM, limits, JOB, now=later), Admission)
    assert (await store.usage(TEAM, now=later))["concurrent_jobs"] == 1


async def test_seed_rebuilds_counters_and_active_reservations(store: QuotaStore) -> None:
    await store.seed(
        TEAM, videos_today=3, seconds_month=20, usd_month=2.0, active=[("r-1", JOB), ("r-2", JOB)], now=NOW
    )

    assert await store.usage(TEAM, now=NOW) == {
        "requests_per_minute": 0,
        "concurrent_jobs": 2,
        "videos_per_day": 5,
        "video_seconds_per_month": 28,
        "budget_usd_per_month": 2.80,
    }
    limits = QuotaConfig(concurrent_jobs=2, videos_per_day=5)
    assert (await store.admit(TEAM, limits, JOB, now=NOW)).limit == "concurrent_jobs"
    await store.refund(TEAM, "r-1")
    await store.settle(TEAM, "r-2")
    usage = await store.usage(TEAM, now=NOW)
    assert (usage["concurrent_jobs"], usage["videos_per_day"]) == (0, 4)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=NOW), Admission)


async def test_redis_instances_sharing_a_prefix_never_overshoot(redis_stores) -> None:
    first, second = await redis_stores(), await redis_stores()
    limits = QuotaConfig(concurrent_jobs=3, requests_per_minute=15)

    results = await asyncio.gather(
        *(instance.admit(TEAM, limits, JOB, now=NOW) for _ in range(10) for instance in (first, second))
    )

    ok = admitted(list(results))
    assert len(ok) == 3
    await first.settle(TEAM, ok[0].reservation_id)
    await second.refund(TEAM, ok[1].reservation_id)
    assert (await second.usage(TEAM, now=NOW))["concurrent_jobs"] == 1
    assert (await first.usage(TEAM, now=NOW))["requests_per_minute"] == 3


async def test_concurrent_hits_count_exactly_even_after_redis_lost_its_scripts(redis_stores) -> None:
    """Hits admitted together go to Redis as one batch: each is still counted once, in order, and a server that
    forgot its scripts (a restart) has them loaded again."""
    first, second = await redis_stores(), await redis_stores()
    limits = QuotaConfig(requests_per_minute=25)

    async def hits(n: int) -> list[Admission | Rejection]:
        return list(await asyncio.gather(*(instance.admit(TEAM, limits, JOB, count_job=False, now=NOW)
                                           for _ in range(n) for instance in (first, second))))

    batch = await hits(8)
    assert sorted(hit.rpm_remaining for hit in batch) == list(range(9, 25))
    await first.redis.script_flush()
    rest = await hits(8)
    assert len(admitted(rest)) == 9
    assert {r.limit for r in rest if isinstance(r, Rejection)} == {"requests_per_minute"}
    assert (await first.usage(TEAM, now=NOW))["requests_per_minute"] == 25


async def test_redis_seed_leaves_live_counters_alone(redis_stores) -> None:
    first, restarted = await redis_stores(), await redis_stores()
    await first.admit(TEAM, QuotaConfig(), JOB, now=NOW)

    await restarted.seed(TEAM, videos_today=50, seconds_month=0, usd_month=0.0, active=[("r-1", JOB)], now=NOW)

    usage = await restarted.usage(TEAM, now=NOW)
    assert (usage["concurrent_jobs"], usage["videos_per_day"]) == (1, 1)


async def test_redis_keys_are_namespaced_and_expire(redis_stores) -> None:
    store = await redis_stores()
    await store.admit(TEAM, QuotaConfig(requests_per_minute=10), JOB)
    done = await store.admit(TEAM, QuotaConfig(), JOB)
    await store.settle(TEAM, done.reservation_id)

    keys = [key.decode() async for key in store.redis.scan_iter(match=store.prefix + "*")]
    assert sorted(key.split(":", 4)[4].split(":")[0] for key in keys) == [
        "active", "res", "rpm", "seconds", "usd", "videos"
    ]
    assert all(key.startswith(f"{store.prefix}quota:{{{TEAM}}}:") for key in keys)
    ttls = {key.split(":", 4)[4]: await store.redis.ttl(key) for key in keys}
    assert all(0 < ttl <= 32 * 86_400 for ttl in ttls.values()), ttls
    assert ttls["active"] <= RESERVATION_TTL_S


async def test_memory_windows_do_not_move_back_with_the_clock() -> None:
    store = MemoryQuotaStore()
    limits = QuotaConfig(videos_per_day=1)
    midnight = at("2025-03-15T00:00:00")
    assert isinstance(await store.admit(TEAM, limits, JOB, now=midnight + 0.5), Admission)

    assert isinstance(await store.admit(TEAM, limits, JOB, now=midnight - 0.2), Rejection)
    assert isinstance(await store.admit(TEAM, limits, JOB, now=midnight + 1), Rejection)
