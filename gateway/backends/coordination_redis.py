"""The shared Coordinator: job leases, single-flight, key health and status fan-out in Redis.

Every check-and-set is one Lua script or one SET NX, never a read followed by a write from Python.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis

from gateway.core.coordination import KeyHealth, StatusListener, new_instance_id

log = logging.getLogger("gateway.coordination")

# A lease that ran out (a Redis blip, a paused process) and that no other instance took is still ours:
# taking it back is safe, and dropping it would abandon jobs only this instance can follow (relay streams).
_RENEW = """
local owned = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    owned[#owned + 1] = i
  elseif not holder then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    owned[#owned + 1] = i
  end
end
return owned
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FLIGHT_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""
_FLIGHT_REPLACE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return false
end
return holder
"""
_SLOT_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return false end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 60000)
return ARGV[4]
"""


class RedisCoordinator:
    shared = True

    def __init__(self, client: aioredis.Redis, prefix: str = "sgw:") -> None:
        self.client = client
        self.prefix = prefix
        self.instance_id = new_instance_id()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._flight_claim = client.register_script(_FLIGHT_CLAIM)
        self._flight_replace = client.register_script(_FLIGHT_REPLACE)
        self._slot_acquire = client.register_script(_SLOT_ACQUIRE)
        self._listener: asyncio.Task | None = None
        self._pubsub = None

    @property
    def status_channel(self) -> str:
        return self.prefix + "events:status"

    @property
    def key_channel(self) -> str:
        return self.prefix + "events:keys"

    async def start(self, on_status: StatusListener, on_key: Callable[[str], None]) -> None:
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.status_channel, self.key_channel)
        self._listener = asyncio.create_task(self._listen(on_status, on_key), name="coordination-listener")

    async def _listen(self, on_status: StatusListener, on_key: Callable[[str], None]) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a broken connection is retried, not fatal
                log.warning("coordination listener lost its connection; retrying")
                await asyncio.sleep(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            data = message["data"]
            try:
                if channel == self.key_channel:
                    on_key(data.decode() if isinstance(data, bytes) else data)
                else:
                    job_id, _, payload = data.partition(b"\n")
                    result = on_status(job_id.decode(), payload)
                    if asyncio.iscoroutine(result):
                        await result
            except Exception:
                log.exception("coordination message handler failed")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.client.aclose()

    # job ownership
    def _owner(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:owner"

    async def claim(self, job_id: str, ttl_s: float) -> bool:
        return bool(await self.client.set(self._owner(job_id), self.instance_id, nx=True, px=int(ttl_s * 1000)))

    async def renew(self, job_ids: list[str], ttl_s: float) -> list[str]:
        if not job_ids:
            return []
        owned = await self._renew(keys=[self._owner(j) for j in job_ids],
                                  args=[self.instance_id, int(ttl_s * 1000)])
        return [job_ids[i - 1] for i in owned]

    async def release(self, job_id: str) -> None:
        await self._release(keys=[self._owner(job_id)], args=[self.instance_id])

    # fan-out
    async def publish(self, job_id: str, payload: bytes) -> None:
        await self.client.publish(self.status_channel, job_id.encode() + b"\n" + payload)

    # single flight
    async def flight_claim(self, key: str, job_id: str, ttl_s: float) -> str | None:
        existing = await self._flight_claim(keys=[self.prefix + "flight:" + key], args=[job_id, int(ttl_s * 1000)])
        return existing.decode() if isinstance(existing, bytes) else existing

    async def flight_replace(self, key: str, stale_job_id: str, job_id: str, ttl_s: float) -> str | None:
        holder = await self._flight_replace(keys=[self.prefix + "flight:" + key],
                                            args=[stale_job_id, job_id, int(ttl_s * 1000)])
        return holder.decode() if isinstance(holder, bytes) else holder

    async def flight_release(self, key: str, job_id: str) -> None:
        await self._release(keys=[self.prefix + "flight:" + key], args=[job_id])

    # upstream keys
    def _health_key(self, label: str) -> str:
        return f"{self.prefix}key:{label}:health"

    async def key_health(self, labels: list[str]) -> dict[str, KeyHealth]:
        if not labels:
            return {}
        values = await self.client.mget([self._health_key(label) for label in labels])
        out = {}
        for label, raw in zip(labels, values):
            if raw:
                data = orjson.loads(raw)
                out[label] = KeyHealth(data.get("cooling_until", 0.0), data.get("disabled_reason"))
        return out

    async def set_key_health(self, label: str, health: KeyHealth) -> None:
        key = self._health_key(label)
        if health.disabled_reason is None and health.cooling_until <= time.time():
            await self.client.delete(key)
        else:
            value = orjson.dumps({"cooling_until": health.cooling_until, "disabled_reason": health.disabled_reason})
            await self.client.set(key, value)
        await self.client.publish(self.key_channel, label)

    def _slots(self, label: str) -> str:
        return f"{self.prefix}key:{label}:slots"

    async def key_acquire(self, label: str, limit: int, lease_s: float) -> str | None:
        token = f"{self.instance_id}:{time.monotonic_ns()}"
        got = await self._slot_acquire(keys=[self._slots(label)], args=[time.time(), limit, lease_s, token])
        return token if got else None

    async def key_release(self, label: str, token: str) -> None:
        await self.client.zrem(self._slots(label), token)

    async def key_renew(self, label: str, token: str, lease_s: float) -> None:
        await self.client.zadd(self._slots(label), {token: time.time() + lease_s}, xx=True)

    async def ping(self) -> bool:
        return bool(await self.client.ping())
