"""Quota admissions per second on one core: the memory store and the Redis store, in one run.

Each store is driven by one sequential caller, then by 50 concurrent callers on the same event loop. Every
admission checks all five limits (set high enough never to trigger) and reserves a job, which is what a cache
miss costs on the hot path. The memory store never awaits, so its callers take turns rather than overlap. For
Redis the same run measures a bare PING the same way, so the script's cost reads as a ratio to one round trip
rather than as an absolute time that drifts on a shared machine. Prints one JSON object with every figure,
then one readable line.

    .venv/bin/python bench/quota.py [--seconds 1.0] [--redis redis://127.0.0.1:6379/0]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.backends.quota_memory import MemoryQuotaStore
from gateway.backends.quota_redis import RedisQuotaStore
from gateway.config import QuotaConfig
from gateway.core.quota import Admission, Charge, QuotaStore

LIMITS = QuotaConfig(
    requests_per_minute=10**9,
    concurrent_jobs=10**9,
    videos_per_day=10**9,
    video_seconds_per_month=10**12,
    budget_usd_per_month=10.0**9,
)
CHARGE = Charge(videos=1, video_seconds=4, usd=0.40)
CONCURRENCY = 50


async def rate(operation: Callable[[], Awaitable[object]], seconds: float, callers: int) -> float:
    """Operations per second completed by `callers` tasks looping on `operation` for `seconds`."""
    deadline = time.perf_counter() + seconds
    counts = [0] * callers

    async def caller(index: int) -> None:
        while time.perf_counter() < deadline:
            for _ in range(100):
                await operation()
            counts[index] += 100
            await asyncio.sleep(0)  # the memory store never yields; let the other callers take turns

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return sum(counts) / (time.perf_counter() - started)


def admit_on(store: QuotaStore) -> Callable[[], Awaitable[object]]:
    team = "bench-" + secrets.token_hex(4)

    async def admit() -> object:
        result = await store.admit(team, LIMITS, CHARGE)
        assert isinstance(result, Admission), result
        return result

    return admit


async def measure(store: QuotaStore, seconds: float) -> dict[str, float]:
    await rate(admit_on(store), min(seconds, 0.2), 1)  # warm-up: script load, connection, caches
    sequential = await rate(admit_on(store), seconds, 1)
    concurrent = await rate(admit_on(store), seconds, CONCURRENCY)
    return {
        "sequential_per_s": round(sequential),
        "concurrent_per_s": round(concurrent),
        "sequential_us": round(1e6 / sequential, 2),
    }


async def measure_redis(url: str, seconds: float) -> dict[str, object]:
    client = Redis.from_url(url, socket_connect_timeout=1, max_connections=CONCURRENCY + 10)
    prefix = f"sgw-bench:{secrets.token_hex(4)}:"
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            return {"error": f"Redis at {url} is unreachable: {exc}"}
        figures: dict[str, object] = dict(await measure(RedisQuotaStore(client, prefix=prefix), seconds))
        ping_sequential = await rate(client.ping, seconds, 1)
        ping_concurrent = await rate(client.ping, seconds, CONCURRENCY)
        figures |= {
            "ping_sequential_per_s": round(ping_sequential),
            "ping_concurrent_per_s": round(ping_concurrent),
            "sequential_vs_ping": round(figures["sequential_per_s"] / ping_sequential, 2),
            "concurrent_vs_ping": round(figures["concurrent_per_s"] / ping_concurrent, 2),
        }
        return figures
    finally:
        with contextlib.suppress(RedisError, OSError):
            keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start:start + 1000])
        await client.aclose()


async def main(args: argparse.Namespace) -> dict[str, object]:
    return {
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "cpus": sorted(os.sched_getaffinity(0)),
        "callers": CONCURRENCY,
        "seconds_per_figure": args.seconds,
        "memory": await measure(MemoryQuotaStore(), args.seconds),
        "redis": await measure_redis(args.redis, args.seconds),
    }


def pin_to_one_core() -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run(args: argparse.Namespace) -> dict[str, object]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main(args))
    return uvloop.run(main(args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each figure is measured")
    parser.add_argument("--redis", default=os.environ.get("GATEWAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    pin_to_one_core()
    report = run(args)
    print(orjson.dumps(report).decode())
    memory, redis = report["memory"], report["redis"]
    line = (
        f"memory: {memory['sequential_per_s']:,}/s sequential ({memory['sequential_us']} µs per admit), "
        f"{memory['concurrent_per_s']:,}/s with {CONCURRENCY} callers"
    )
    if "error" in redis:
        line += f" | redis: {redis['error']}"
    else:
        line += (
            f" | redis: {redis['sequential_per_s']:,}/s sequential ({redis['sequential_vs_ping']}x a PING), "
            f"{redis['concurrent_per_s']:,}/s with {CONCURRENCY} callers ({redis['concurrent_vs_ping']}x a PING)"
        )
    print(line)
