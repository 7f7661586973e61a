"""Accounting: what a request may use, and what it is written down as.

A new job reserves its estimated price against every quota of the team; a cache hit or a join counts against
the request rate only and costs nothing. Every request gets one ledger row; a job's row is written with the
job (outcome `pending`) and closed with it.
"""
from __future__ import annotations

import logging
import time

from gateway.core.auth import Principal
from gateway.core.database import Database
from gateway.core.errors import GatewayError, QuotaExceeded, RateLimited
from gateway.core.quota import Admission, Charge, QuotaStore, Rejection, calendar_at
from gateway.core.records import JobRecord, LedgerRow
from gateway.core.request import VideoRequest
from gateway.observability.metrics import MetricsSink

log = logging.getLogger("gateway.accounting")


def charge_of(seconds: int, price: float) -> Charge:
    """The estimate a job reserves: one video, its seconds, its price."""
    return Charge(videos=1, video_seconds=seconds, usd=price)


class Accounting:
    def __init__(self, quotas: QuotaStore, db: Database, metrics: MetricsSink) -> None:
        self.quotas = quotas
        self.db = db
        self.metrics = metrics

    async def seed(self, teams: list[str]) -> None:
        """Rebuild quota counters from the ledger (the embedded store keeps none across restarts)."""
        now = time.time()
        cal = calendar_at(now)
        totals = await self.db.completed_totals(cal.day_start, cal.month_start)
        active = await self.db.active_jobs()
        for team in teams:
            videos_today, seconds_month, usd_month = totals.get(team, (0, 0, 0.0))
            await self.quotas.seed(
                team, videos_today=videos_today, seconds_month=seconds_month, usd_month=usd_month,
                active=[(j.reservation_id, charge_of(j.seconds, j.price)) for j in active
                        if j.team == team and j.reservation_id],
                now=now,
            )

    async def reserve(self, principal: Principal, request: VideoRequest, request_id: str) -> Admission:
        """Reserve a new job's price; a refused request is written down as `rejected` and raised."""
        team = principal.team
        answer = await self.quotas.admit(team.name, team.quotas, charge_of(request.seconds, request.price))
        if isinstance(answer, Rejection):
            await self._rejected(principal, request, request_id, answer)
        return answer

    async def admit_hit(self, principal: Principal, request: VideoRequest, request_id: str,
                        job_id: str) -> dict[str, str]:
        """A cache hit or a join: the request rate only, free, written down as `cache_hit`."""
        charge = charge_of(request.seconds, request.price)
        answer = await self.quotas.admit(principal.team.name, principal.team.quotas, charge, count_job=False)
        if isinstance(answer, Rejection):
            await self._rejected(principal, request, request_id, answer)
        row = ledger_row(principal, request, request_id, "cache_hit")
        row.job_id = job_id
        await self.db.ledger_insert(row)
        return rate_headers(answer)

    async def _rejected(self, principal: Principal, request: VideoRequest, request_id: str,
                        rejection: Rejection) -> None:
        self.metrics.quota_rejected(rejection.limit)
        await self.db.ledger_insert(ledger_row(principal, request, request_id, "rejected"))
        raise rejected(rejection)

    async def give_back(self, team: str, reservation_id: str | None) -> None:
        """A reservation whose job was never recorded (refunds are idempotent)."""
        if reservation_id:
            await self.quotas.refund(team, reservation_id)

    async def close(self, record: JobRecord) -> None:
        """A job ended and its ledger row is closed: keep its charge when it completed, else refund it."""
        if not record.reservation_id:
            return
        if record.status == "completed":
            await self.quotas.settle(record.team, record.reservation_id)
        else:
            await self.quotas.refund(record.team, record.reservation_id)


def ledger_row(principal: Principal, request: VideoRequest, request_id: str, outcome: str) -> LedgerRow:
    return LedgerRow(request_id=request_id, time=time.time(), team=principal.team.name,
                     key_id=principal.key_id, model=request.model.name, size=request.size,
                     seconds=request.seconds, outcome=outcome, user=request.user,
                     latency_ms=0.0 if outcome in ("cache_hit", "rejected") else None)


def rate_headers(answer: Admission | Rejection) -> dict[str, str]:
    if answer.rpm_limit is None:
        return {}
    return {
        "x-ratelimit-limit-requests": str(answer.rpm_limit),
        "x-ratelimit-remaining-requests": str(answer.rpm_remaining),
        "x-ratelimit-reset-requests": f"{answer.rpm_reset_s:.0f}s",
    }


def rejected(rejection: Rejection) -> GatewayError:
    kind = RateLimited if rejection.code == "rate_limit_exceeded" else QuotaExceeded
    return kind(rejection.message, code=rejection.code, retry_after=rejection.retry_after_s,
                headers=rate_headers(rejection))
