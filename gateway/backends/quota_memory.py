"""Quota counters in process memory, for a single gateway instance.

Each operation runs start to finish without awaiting, so on one event loop a check and its reservation cannot
interleave with another request's: that is what makes `admit` atomic here. Counters start from zero at start-up;
`seed` rebuilds them from the ledger.
"""
from __future__ import annotations

import itertools
import secrets
import time
from typing import NamedTuple

from gateway.config import QuotaConfig
from gateway.core.quota import (
    RESERVATION_TTL_S,
    Admission,
    Charge,
    Rejection,
    admission,
    calendar_at,
    from_micros,
    rejection,
    to_micros,
)


class _Reservation(NamedTuple):
    videos: int
    seconds: int
    micros: int
    day: int  # UTC day number (days since the epoch)
    month: str
    expires_at: float


class _TeamCounters:
    """One team's counters for the current windows; a counter restarts at zero when its window moves on."""

    __slots__ = ("active", "day", "micros", "minute", "month", "requests", "seconds", "videos")

    def __init__(self) -> None:
        self.minute = -1
        self.requests = 0
        self.day = -1
        self.videos = 0
        self.month = ""
        self.seconds = 0
        self.micros = 0
        self.active: dict[str, _Reservation] = {}

    def roll(self, now: float) -> None:
        # Windows only move forward: a clock stepping back over a boundary keeps counting in the newer window
        # instead of wiping it.
        minute = int(now // 60)
        if minute > self.minute:
            self.minute = minute
            self.requests = 0
        day = int(now // 86_400)
        if day > self.day:
            self.day = day
            self.videos = 0
            month = calendar_at(now).month
            if month != self.month:
                self.month = month
                self.seconds = 0
                self.micros = 0

    def expire(self, now: float) -> None:
        expired = [rid for rid, reservation in self.active.items() if reservation.expires_at <= now]
        for rid in expired:
            del self.active[rid]


class MemoryQuotaStore:
    def __init__(self, reservation_ttl_s: float = RESERVATION_TTL_S) -> None:
        self.reservation_ttl_s = reservation_ttl_s
        self._teams: dict[str, _TeamCounters] = {}
        # Ids outlive the process in job records and come back through `seed`, so they need a random part;
        # a counter after it keeps minting them cheap.
        self._id_prefix = secrets.token_hex(8) + "-"
        self._ids = itertools.count(1)

    def _counters(self, team: str) -> _TeamCounters:
        counters = self._teams.get(team)
        if counters is None:
            counters = self._teams[team] = _TeamCounters()
        return counters

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
        counters = self._counters(team)
        counters.roll(now)
        rpm_limit = limits.requests_per_minute
        if rpm_limit is not None and counters.requests >= rpm_limit:
            return self._reject(team, limits, "requests_per_minute", counters.requests, 1, counters, now)
        reservation_id = None
        if count_job:
            active = counters.active
            limit = limits.concurrent_jobs
            if limit is not None and len(active) >= limit:
                counters.expire(now)
                if len(active) >= limit:
                    return self._reject(team, limits, "concurrent_jobs", len(active), 1, counters, now)
            limit = limits.videos_per_day
            if limit is not None and counters.videos + charge.videos > limit:
                return self._reject(team, limits, "videos_per_day", counters.videos, charge.videos, counters, now)
            limit = limits.video_seconds_per_month
            if limit is not None and counters.seconds + charge.video_seconds > limit:
                return self._reject(
                    team, limits, "video_seconds_per_month", counters.seconds, charge.video_seconds, counters, now
                )
            micros = to_micros(charge.usd)
            budget = limits.budget_usd_per_month
            if budget is not None and counters.micros + micros > to_micros(budget):
                return self._reject(team, limits, "budget_usd_per_month", counters.micros, micros, counters, now)
            reservation_id = f"{self._id_prefix}{next(self._ids):x}"
            self._reserve(counters, reservation_id, charge.videos, charge.video_seconds, micros, now)
        counters.requests += 1
        return admission(reservation_id, rpm_limit, counters.requests, now)

    def _reserve(
        self, counters: _TeamCounters, reservation_id: str, videos: int, seconds: int, micros: int, now: float
    ) -> None:
        counters.active[reservation_id] = _Reservation(
            videos, seconds, micros, counters.day, counters.month, now + self.reservation_ttl_s
        )
        counters.videos += videos
        counters.seconds += seconds
        counters.micros += micros

    @staticmethod
    def _reject(
        team: str,
        limits: QuotaConfig,
        limit: str,
        used: int,
        requested: int,
        counters: _TeamCounters,
        now: float,
    ) -> Rejection:
        return rejection(
            team, limits, limit, used=used, requested=requested, requests=counters.requests, now=now
        )

    async def settle(self, team: str, reservation_id: str) -> None:
        counters = self._teams.get(team)
        if counters is not None:
            counters.active.pop(reservation_id, None)

    async def refund(self, team: str, reservation_id: str) -> None:
        counters = self._teams.get(team)
        if counters is None:
            return
        reservation = counters.active.pop(reservation_id, None)
        if reservation is None:
            return
        # A window that has moved on since the reservation started from zero; there is nothing to give back.
        if counters.day == reservation.day:
            counters.videos -= reservation.videos
        if counters.month == reservation.month:
            counters.seconds -= reservation.seconds
            counters.micros -= reservation.micros

    async def usage(self, team: str, now: float | None = None) -> dict[str, int | float]:
        if now is None:
            now = time.time()
        counters = self._counters(team)
        counters.roll(now)
        counters.expire(now)
        return {
            "requests_per_minute": counters.requests,
            "concurrent_jobs": len(counters.active),
            "videos_per_day": counters.videos,
            "video_seconds_per_month": counters.seconds,
            "budget_usd_per_month": from_micros(counters.micros),
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
        """Replace the team's job counters with the ledger's figures plus the unfinished jobs' reservations."""
        if now is None:
            now = time.time()
        counters = self._counters(team)
        counters.roll(now)
        counters.videos = videos_today
        counters.seconds = seconds_month
        counters.micros = to_micros(usd_month)
        counters.active = {}
        for reservation_id, charge in active:
            micros = to_micros(charge.usd)
            self._reserve(counters, reservation_id, charge.videos, charge.video_seconds, micros, now)

    async def close(self) -> None:
        self._teams.clear()
