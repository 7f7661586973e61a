"""What the core needs from the database: jobs, team keys and the ledger.

`gateway.backends.sqlite.SQLiteDatabase` (embedded) and `gateway.backends.postgres.PostgresDatabase` (shared)
implement it. Every change that must happen together is one call, and so one transaction.
"""
from __future__ import annotations

from typing import Any, Protocol

from gateway.core.records import JobRecord, KeyRecord, LedgerRow, WebhookEvent


class Database(Protocol):
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    # jobs
    async def insert_job(self, job: JobRecord, ledger: LedgerRow | None = None) -> None:
        """Write a job and, in the same transaction, its pending ledger row."""

    async def advance_job(self, job_id: str, **changes: Any) -> bool:
        """Change a job that is still running; False (and nothing changed) when it has ended already."""

    async def finish_job(self, job_id: str, changes: dict[str, Any], outcome: str, cost_usd: float,
                         events: tuple[WebhookEvent, ...] = ()) -> bool:
        """End a running job, close its pending ledger row and put its webhook events in the outbox, in one
        transaction; False (and nothing written) when it had ended already."""

    async def update_job(self, job_id: str, **changes: Any) -> None: ...
    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def active_jobs(self) -> list[JobRecord]: ...
    async def list_jobs(self, team: str, *, after: str | None, limit: int,
                        order: str) -> tuple[list[JobRecord], bool]: ...
    async def find_cached(self, cache_key: str, since: float) -> JobRecord | None: ...
    async def expired_jobs(self, before: float) -> list[JobRecord]: ...
    async def served_to(self, job_id: str, team: str) -> bool:
        """Whether `team` was handed this job as a cache hit or a join (a global cache shares across teams)."""

    # team keys
    async def insert_key(self, key: KeyRecord) -> None: ...
    async def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...
    async def list_keys(self, team: str | None = None) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id: str) -> bool: ...
    async def touch_keys(self, last_used: dict[str, float]) -> None: ...

    # ledger
    async def ledger_insert(self, row: LedgerRow) -> None: ...
    async def completed_totals(self, day_start: float, month_start: float) -> dict[str, tuple[int, int, float]]: ...
    async def ledger_rows(self, team: str | None, since: float | None, until: float | None) -> list[LedgerRow]: ...
    async def usage_by_day(self, team: str | None, since: float, group: str) -> list[tuple]:
        """(day, team or model, videos, video seconds, USD) of completed requests, per day and group."""

    async def recent_failures(self, team: str | None, limit: int) -> list[JobRecord]: ...
    async def usage_groups(self, team: str | None, since: float | None, until: float | None,
                           group: str) -> list[tuple]:
        """(group value, requests, videos, video seconds, USD) per group, summed by the database."""

    # webhook outbox
    async def enqueue_webhooks(self, events: tuple[WebhookEvent, ...]) -> None: ...
    async def claim_webhooks(self, now: float, lease_s: float, limit: int) -> list[WebhookEvent]:
        """Due events, leased to the caller for `lease_s`, so one delivery is in flight per event."""

    async def webhook_attempted(self, event_id: str, *, status: int | None, error: str | None,
                                delivered_at: float | None, next_attempt_at: float | None,
                                failed_at: float | None) -> None: ...
    async def webhook_events(self, limit: int) -> list[WebhookEvent]:
        """Undelivered events (pending and given up), newest first."""

    async def webhook_counts(self) -> dict[str, int]: ...
