"""Team quotas: what a job costs, the answer to "may this request run?", and the store interface.

A store admits a request in one atomic step: it checks every configured limit and, only when all of them pass,
counts the request and reserves the job's charge. The charge is settled when the job completes (kept) or refunded
when it fails (given back). Stores live in `gateway.backends.quota_memory` and `gateway.backends.quota_redis`.

Windows, all in UTC and derived from the clock alone, so every instance sharing a store agrees on them:

* `requests_per_minute` is a fixed window per calendar minute (`floor(now / 60)`). Counts are exact and the reset
  time is the same for every caller; the price is that a client may spend one window's allowance at the end of a
  minute and the next one at the start of the following minute. The expensive resources are guarded by the job
  quotas below, so the request rate only has to stop floods.
* `videos_per_day` counts per UTC calendar day; `video_seconds_per_month` and `budget_usd_per_month` per UTC
  calendar month.
* `concurrent_jobs` counts reservations neither settled nor refunded. A reservation expires after
  `RESERVATION_TTL_S`, so an instance that dies mid-job cannot hold a slot forever; the expired job's charge stays
  counted, since it may well have run.

Money is compared in integer micro-dollars, so a budget stops at the cent whatever the charges add up to in floats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

from gateway.config import QuotaConfig

LIMITS = (
    "requests_per_minute",
    "concurrent_jobs",
    "videos_per_day",
    "video_seconds_per_month",
    "budget_usd_per_month",
)
RATE_LIMITS = frozenset({"requests_per_minute", "concurrent_jobs"})
MICROS_PER_USD = 1_000_000
RESERVATION_TTL_S = 2 * 86_400  # far beyond any job_timeout_s; only a lost instance ever reaches it
CONCURRENCY_RETRY_AFTER_S = 5.0  # nothing says when a running job ends, so suggest a short wait


@dataclass(frozen=True, slots=True)
class Charge:
    """What one job costs against the team's quotas."""

    videos: int
    video_seconds: int
    usd: float


@dataclass(frozen=True, slots=True)
class Admission:
    """The request got in. `reservation_id` is None when only the request rate was counted."""

    reservation_id: str | None
    rpm_limit: int | None
    rpm_remaining: int | None
    rpm_reset_s: float | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """The request did not get in and consumed nothing. `message` is meant for the caller, as is."""

    limit: str  # one of LIMITS
    code: str  # "rate_limit_exceeded" | "quota_exceeded"
    message: str
    retry_after_s: float
    rpm_limit: int | None
    rpm_remaining: int | None
    rpm_reset_s: float | None


class QuotaStore(Protocol):
    async def admit(
        self,
        team: str,
        limits: QuotaConfig,
        charge: Charge,
        *,
        count_job: bool = True,
        now: float | None = None,
    ) -> Admission | Rejection:
        """Check every configured limit and, if all pass, count the request and reserve `charge`.

        With `count_job=False` (a cache hit) only the request rate is checked and counted.
        """
        ...

    async def settle(self, team: str, reservation_id: str) -> None:
        """The job completed: keep its charge, free its concurrency slot. Idempotent."""
        ...

    async def refund(self, team: str, reservation_id: str) -> None:
        """The job failed or was refused: give its charge back to the windows it was taken from, free its slot.

        Idempotent, and does nothing after `settle`.
        """
        ...

    async def usage(self, team: str, now: float | None = None) -> dict[str, int | float]:
        """Current counters, keyed by the limit each is measured against (see `LIMITS`)."""
        ...

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
        """Rebuild a team's counters after a restart from the durable ledger.

        `videos_today`, `seconds_month` and `usd_month` are what finished jobs used in the current windows;
        `active` are the unfinished jobs' reservations, which are re-created on top of them in the current
        windows and hold a concurrency slot each until settled or refunded.
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Calendar:
    """The UTC day and month a moment falls in, with the epoch seconds each of them starts and ends."""

    day: str  # "2025-01-31"
    day_end: int
    month: str  # "2025-01"
    month_end: int
    day_start: int
    month_start: int


@lru_cache(maxsize=8)
def _calendar(day_number: int) -> Calendar:
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day_number)
    next_month = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return Calendar(
        day=f"{start:%Y-%m-%d}",
        day_end=(day_number + 1) * 86_400,
        month=f"{start:%Y-%m}",
        month_end=int(next_month.timestamp()),
        day_start=day_number * 86_400,
        month_start=int(datetime(start.year, start.month, 1, tzinfo=UTC).timestamp()),
    )


def calendar_at(now: float) -> Calendar:
    # POSIX time has no leap seconds, so every UTC day is exactly 86 400 s long.
    return _calendar(int(now // 86_400))


def minute_at(now: float) -> int:
    return int(now // 60)


def to_micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def from_micros(micros: int) -> float:
    return round(micros / MICROS_PER_USD, 6)


def admission(reservation_id: str | None, rpm_limit: int | None, requests: int, now: float) -> Admission:
    """An admission after `requests` requests (this one included) were counted in the current minute."""
    if rpm_limit is None:
        return Admission(reservation_id, None, None, None)
    return Admission(reservation_id, rpm_limit, max(rpm_limit - requests, 0), _minute_reset_s(now))


def rejection(
    team: str,
    limits: QuotaConfig,
    limit: str,
    *,
    used: int,
    requested: int,
    requests: int,
    now: float,
) -> Rejection:
    """Describe why `limit` turned a request away.

    `used` and `requested` are in the limit's own unit (micro-dollars for the budget); `requests` is how many
    requests the current minute has counted so far.
    """
    rpm_limit = limits.requests_per_minute
    if limit == "requests_per_minute":
        retry_after = _minute_reset_s(now)
        reset = f"resets in {_duration(retry_after)}"
    elif limit == "concurrent_jobs":
        retry_after = CONCURRENCY_RETRY_AFTER_S
        reset = f"a slot frees up when one of them finishes; retry in {_duration(retry_after)}"
    elif limit == "videos_per_day":
        retry_after = calendar_at(now).day_end - now
        reset = f"resets at 00:00 UTC in {_duration(retry_after)}"
    else:
        month_end = calendar_at(now).month_end
        retry_after = month_end - now
        first = datetime.fromtimestamp(month_end, UTC)
        reset = f"resets on {first:%Y-%m-%d} 00:00 UTC in {_duration(retry_after)}"
    return Rejection(
        limit=limit,
        code="rate_limit_exceeded" if limit in RATE_LIMITS else "quota_exceeded",
        message=f"Team {team!r} {_overrun(limits, limit, used, requested)}; {reset}.",
        retry_after_s=retry_after,
        rpm_limit=rpm_limit,
        rpm_remaining=None if rpm_limit is None else max(rpm_limit - requests, 0),
        rpm_reset_s=None if rpm_limit is None else _minute_reset_s(now),
    )


def _overrun(limits: QuotaConfig, limit: str, used: int, requested: int) -> str:
    value = getattr(limits, limit)
    if limit == "budget_usd_per_month":
        setting = f"{limit} = {_usd(to_micros(value))} USD"
        return f"would exceed {setting} ({_usd(used)} USD used, this request costs {_usd(requested)} USD)"
    setting = f"{limit} = {value}"
    if limit == "concurrent_jobs":
        return f"reached {setting} ({used} running)"
    if used >= value:
        return f"reached {setting} ({used} used)"
    return f"would exceed {setting} ({used} used, this request needs {requested})"


def _minute_reset_s(now: float) -> float:
    return 60.0 - now % 60


def _usd(micros: int) -> str:
    if micros % 10_000 == 0:
        return f"{micros / MICROS_PER_USD:.2f}"
    return f"{micros / MICROS_PER_USD:.6f}".rstrip("0")


def _duration(seconds: float) -> str:
    total = max(math.ceil(seconds), 1)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"
