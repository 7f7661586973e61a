"""Quota counters in Redis, shared by every gateway instance that uses the same prefix.

Every operation is one Lua script, so a check and its reservation happen in one step on the server and instances
never overshoot a limit between them. Keys, per team (the `{team}` hash tag keeps one team's keys in one cluster
slot, which a script touching several of them needs):

    {prefix}quota:{team}:rpm:<minute>         requests in one UTC minute          expires 60 s after the minute
    {prefix}quota:{team}:videos:<YYYY-MM-DD>  videos reserved in one UTC day      expires 1 h after the day
    {prefix}quota:{team}:seconds:<YYYY-MM>    video seconds in one UTC month      expires 1 h after the month
    {prefix}quota:{team}:usd:<YYYY-MM>        micro-dollars in one UTC month      expires 1 h after the month
    {prefix}quota:{team}:active               sorted set: reservation id -> the moment it expires
    {prefix}quota:{team}:res:<id>             hash: the counters a reservation charged and by how much

A reservation lives `reservation_ttl_s` (two days by default). If the instance running the job is lost and nobody
settles or refunds it, its entry in `active` lapses (expired entries are dropped by the next `admit`) and its hash
expires: the concurrency slot comes back and the charge stays counted.

The request-rate admissions of cache hits and joins that an instance makes in one event-loop turn go to Redis
as one pipeline: each is still its own script, run in order, so the count stays exact; the batch pays for one
round trip instead of one each.

Windows are computed from the calling instance's clock, so instances should keep their clocks in sync (NTP); a skew
of a few milliseconds only matters for requests that land on a window's edge.
"""
from __future__ import annotations

import itertools
import math
import secrets
import time

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway.backends.group_commit import GroupCommit
from gateway.config import QuotaConfig
from gateway.core.quota import (
    LIMITS,
    RESERVATION_TTL_S,
    Admission,
    Charge,
    Rejection,
    admission,
    calendar_at,
    from_micros,
    minute_at,
    rejection,
    to_micros,
)

MINUTE_MARGIN_S = 60
WINDOW_MARGIN_S = 3_600
UNLIMITED = -1

# KEYS: 1 rpm, 2 active, 3 videos (day), 4 seconds (month), 5 usd (month), 6 reservation
# ARGV: 1 now, 2 count_job, 3..7 limits (rpm, concurrent, videos, seconds, micro-dollars; -1 is unlimited),
#       8..10 charge (videos, seconds, micro-dollars), 11 reservation id, 12 reservation expiry (epoch s),
#       13 reservation ttl, 14 rpm ttl, 15 day ttl, 16 month ttl
# Returns {1, requests counted} when admitted, {0, index of the limit in LIMITS + 1, used, requests} when not.
ADMIT = """
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local rpm_limit = tonumber(ARGV[3])
if rpm_limit >= 0 and requests >= rpm_limit then
    return {0, 1, requests, requests}
end
local count_job = ARGV[2] == '1'
if count_job then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
    local limit = tonumber(ARGV[4])
    if limit >= 0 then
        local running = redis.call('ZCARD', KEYS[2])
        if running >= limit then
            return {0, 2, running, requests}
        end
    end
    for i = 3, 5 do
        limit = tonumber(ARGV[i + 2])
        if limit >= 0 then
            local used = tonumber(redis.call('GET', KEYS[i]) or '0')
            if used + tonumber(ARGV[i + 5]) > limit then
                return {0, i, used, requests}
            end
        end
    end
end
requests = redis.call('INCR', KEYS[1])
if requests == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[14])
end
if count_job then
    redis.call('ZADD', KEYS[2], ARGV[12], ARGV[11])
    redis.call('EXPIRE', KEYS[2], ARGV[13])
    for i = 3, 5 do
        redis.call('INCRBY', KEYS[i], ARGV[i + 5])
        redis.call('EXPIRE', KEYS[i], i == 3 and ARGV[15] or ARGV[16])
    end
    redis.call('HSET', KEYS[6],
        'videos_key', KEYS[3], 'videos', ARGV[8],
        'seconds_key', KEYS[4], 'seconds', ARGV[9],
        'usd_key', KEYS[5], 'usd', ARGV[10])
    redis.call('EXPIRE', KEYS[6], ARGV[13])
end
return {1, requests}
"""

# The request rate alone (a cache hit or a join): ADMIT with count_job 0, with only what that reads.
# KEYS: 1 rpm. ARGV: 1 rpm limit (-1 is unlimited), 2 rpm ttl. Returns what ADMIT returns.
ADMIT_REQUEST = """
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local rpm_limit = tonumber(ARGV[1])
if rpm_limit >= 0 and requests >= rpm_limit then
    return {0, 1, requests, requests}
end
requests = redis.call('INCR', KEYS[1])
if requests == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1, requests}
"""

# KEYS: 1 active, 2 reservation. ARGV: 1 reservation id.
SETTLE = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""

# KEYS: 1 active, 2 reservation. ARGV: 1 reservation id.
# The counters come from the reservation, so a refund made in a later day or month lands in the window that was
# charged; a counter whose window has expired is left alone rather than recreated below zero without a TTL.
REFUND = """
redis.call('ZREM', KEYS[1], ARGV[1])
local r = redis.call('HMGET', KEYS[2], 'videos_key', 'videos', 'seconds_key', 'seconds', 'usd_key', 'usd')
if not r[1] then
    return 0
end
redis.call('DEL', KEYS[2])
for i = 1, 5, 2 do
    if redis.call('EXISTS', r[i]) == 1 then
        redis.call('DECRBY', r[i], r[i + 1])
    end
end
return 1
"""

# KEYS: 1 active, 2 videos, 3 seconds, 4 usd, 5.. one per reservation
# ARGV: 1 reservation ttl, 2 day ttl, 3 month ttl, 4 videos, 5 seconds, 6 micro-dollars,
#       then per reservation: id, expiry, videos, seconds, micro-dollars
# Only rebuilds a team whose state is gone: any live counter means another instance is already counting.
SEED = """
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) > 0 then
    return 0
end
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[3])
redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[3])
for k = 5, #KEYS do
    local a = 7 + (k - 5) * 5
    redis.call('ZADD', KEYS[1], ARGV[a + 1], ARGV[a])
    redis.call('HSET', KEYS[k],
        'videos_key', KEYS[2], 'videos', ARGV[a + 2],
        'seconds_key', KEYS[3], 'seconds', ARGV[a + 3],
        'usd_key', KEYS[4], 'usd', ARGV[a + 4])
    redis.call('EXPIRE', KEYS[k], ARGV[1])
end
if #KEYS > 4 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else value


def _ttl(window_end: float, now: float, margin: int) -> int:
    return max(math.ceil(window_end - now), 1) + margin


class RedisQuotaStore:
    """Quotas shared through Redis. The client belongs to the caller, who closes it."""

    def __init__(self, redis: Redis, prefix: str = "sgw:", reservation_ttl_s: int = RESERVATION_TTL_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.reservation_ttl_s = reservation_ttl_s
        self._admit = redis.register_script(ADMIT)
        self._admit_request = redis.register_script(ADMIT_REQUEST)
        self._settle = redis.register_script(SETTLE)
        self._refund = redis.register_script(REFUND)
        self._seed = redis.register_script(SEED)
        # Unique across instances and restarts thanks to the random part; the counter keeps minting them cheap.
        self._id_prefix = secrets.token_hex(8) + "-"
        self._ids = itertools.count(1)
        self._requests: GroupCommit[tuple[str, int, int]] = GroupCommit(self._admit_requests)

    def _base(self, team: str) -> str:
        return f"{self.prefix}quota:{{{team}}}:"

    async def admit(
        self,
        team: str,
        limits: QuotaConfig,
        charge: Charge,
        *,
        count_job: bool = True,
        now: float | None = None,
    ) -> Admission | Rejection:
        if now is None:
            now = time.time()
        base = self._base(team)
        minute = minute_at(now)
        if not count_job:
            reply = await self._requests.write((f"{base}rpm:{minute}", _limit(limits.requests_per_minute),
                                                _ttl((minute + 1) * 60, now, MINUTE_MARGIN_S)))
            return self._answer(team, limits, charge, reply, None, now)
        calendar = calendar_at(now)
        reservation_id = f"{self._id_prefix}{next(self._ids):x}"
        budget = limits.budget_usd_per_month
        reply = await self._admit(
            keys=(
                f"{base}rpm:{minute}",
                f"{base}active",
                f"{base}videos:{calendar.day}",
                f"{base}seconds:{calendar.month}",
                f"{base}usd:{calendar.month}",
                f"{base}res:{reservation_id}",
            ),
            args=(
                repr(now),
                1,  # count_job: a request alone goes through ADMIT_REQUEST
                _limit(limits.requests_per_minute),
                _limit(limits.concurrent_jobs),
                _limit(limits.videos_per_day),
                _limit(limits.video_seconds_per_month),
                UNLIMITED if budget is None else to_micros(budget),
                charge.videos,
                charge.video_seconds,
                to_micros(charge.usd),
                reservation_id,
                repr(now + self.reservation_ttl_s),
                self.reservation_ttl_s,
                _ttl((minute + 1) * 60, now, MINUTE_MARGIN_S),
                _ttl(calendar.day_end, now, WINDOW_MARGIN_S),
                _ttl(calendar.month_end, now, WINDOW_MARGIN_S),
            ),
        )
        return self._answer(team, limits, charge, reply, reservation_id, now)

    async def _admit_requests(self, requests: list[tuple[str, int, int]]) -> list[list]:
        if len(requests) == 1:
            return [await self._admit_one(*requests[0])]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, limit, ttl in requests:
                pipe.evalsha(self._admit_request.sha, 1, key, limit, ttl)
            replies = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # the server lost its scripts (a restart): this one did not run
                replies[i] = await self._admit_one(*requests[i])
            elif isinstance(reply, Exception):
                raise reply
        return replies

    async def _admit_one(self, key: str, limit: int, ttl: int) -> list:
        """One request-rate admission on its own (the script object loads itself into a server without it)."""
        return await self._admit_request(keys=(key,), args=(limit, ttl))

    def _answer(self, team: str, limits: QuotaConfig, charge: Charge, reply: list, reservation_id: str | None,
                now: float) -> Admission | Rejection:
        if reply[0] == 1:
            return admission(reservation_id, limits.requests_per_minute, reply[1], now)
        _, index, used, requests = reply
        limit = LIMITS[index - 1]
        requested = (1, 1, charge.videos, charge.video_seconds, to_micros(charge.usd))[index - 1]
        return rejection(team, limits, limit, used=used, requested=requested, requests=requests, now=now)

    async def settle(self, team: str, reservation_id: str) -> None:
        base = self._base(team)
        await self._settle(keys=(f"{base}active", f"{base}res:{reservation_id}"), args=(reservation_id,))

    async def refund(self, team: str, reservation_id: str) -> None:
        base = self._base(team)
        await self._refund(keys=(f"{base}active", f"{base}res:{reservation_id}"), args=(reservation_id,))

    async def usage(self, team: str, now: float | None = None) -> dict[str, int | float]:
        if now is None:
            now = time.time()
        base = self._base(team)
        calendar = calendar_at(now)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(f"{base}active", f"({now!r}", "+inf")
            pipe.mget(
                f"{base}rpm:{minute_at(now)}",
                f"{base}videos:{calendar.day}",
                f"{base}seconds:{calendar.month}",
                f"{base}usd:{calendar.month}",
            )
            running, (requests, videos, seconds, micros) = await pipe.execute()
        return {
            "requests_per_minute": int(requests or 0),
            "concurrent_jobs": running,
            "videos_per_day": int(videos or 0),
            "video_seconds_per_month": int(seconds or 0),
            "budget_usd_per_month": from_micros(int(micros or 0)),
        }

    async def seed(
        self,
        team: str,
        *,
        videos_today: int,
        seconds_month: int,
        usd_month: float,
        active: list[tuple[str, Charge]],
        now: float | None = None,
    ) -> None:
        """Rebuild the team's counters if Redis has none (it was flushed or restarted without persistence).

        When any of the team's current counters exists, other instances are already counting and this does
        nothing, so every instance may call it at start-up.
        """
        if now is None:
            now = time.time()
        base = self._base(team)
        calendar = calendar_at(now)
        keys = [
            f"{base}active",
            f"{base}videos:{calendar.day}",
            f"{base}seconds:{calendar.month}",
            f"{base}usd:{calendar.month}",
        ]
        videos, seconds, micros = videos_today, seconds_month, to_micros(usd_month)
        reservations: list[str | int] = []
        expires_at = repr(now + self.reservation_ttl_s)
        for reservation_id, charge in active:
            keys.append(f"{base}res:{reservation_id}")
            charge_micros = to_micros(charge.usd)
            reservations += [reservation_id, expires_at, charge.videos, charge.video_seconds, charge_micros]
            videos += charge.videos
            seconds += charge.video_seconds
            micros += charge_micros
        await self._seed(
            keys=keys,
            args=(
                self.reservation_ttl_s,
                _ttl(calendar.day_end, now, WINDOW_MARGIN_S),
                _ttl(calendar.month_end, now, WINDOW_MARGIN_S),
                videos,
                seconds,
                micros,
                *reservations,
            ),
        )

    async def close(self) -> None:
        """Nothing to release: the Redis client is shared with other stores and closed by its owner."""
