"""The shared database: jobs, team keys and the ledger in PostgreSQL, for several gateway instances.

Same methods and semantics as `SQLiteDatabase`. Timestamps are epoch seconds in double precision
columns, as the records carry them, so both backends hand back identical records.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import asyncpg

from gateway.backends.group_commit import GroupCommit
from gateway.core.records import ACTIVE_STATES, CharacterRecord, JobRecord, KeyRecord, LedgerRow, WebhookEvent

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
        CREATE TABLE jobs (
            id text COLLATE "C" PRIMARY KEY, team text NOT NULL, key_id text NOT NULL, model text NOT NULL,
            upstream_model text NOT NULL, prompt text NOT NULL, size text NOT NULL, seconds integer NOT NULL,
            created_at double precision NOT NULL, status text NOT NULL,
            progress double precision NOT NULL DEFAULT 0,
            upstream text NOT NULL DEFAULT '', upstream_key text NOT NULL DEFAULT '',
            upstream_job_id text NOT NULL DEFAULT '', error_code text, error_message text,
            refused boolean NOT NULL DEFAULT false, completed_at double precision, cache_key text,
            remixed_from text, request_id text NOT NULL DEFAULT '', "user" text,
            price double precision NOT NULL DEFAULT 0,
            has_thumbnail boolean NOT NULL DEFAULT false, deleted boolean NOT NULL DEFAULT false
        );
        CREATE INDEX jobs_team_created ON jobs (team, created_at, id);
        CREATE INDEX jobs_status ON jobs (status);
        CREATE INDEX jobs_cache_key ON jobs (cache_key);
        CREATE TABLE api_keys (
            id text PRIMARY KEY, team text NOT NULL, name text NOT NULL, hash text NOT NULL UNIQUE,
            created_at double precision NOT NULL, expires_at double precision,
            revoked_at double precision, last_used_at double precision
        );
        CREATE TABLE ledger (
            request_id text PRIMARY KEY, time double precision NOT NULL, team text NOT NULL,
            key_id text NOT NULL, model text NOT NULL, size text NOT NULL, seconds integer NOT NULL,
            outcome text NOT NULL, cost_usd double precision NOT NULL DEFAULT 0, "user" text, job_id text,
            upstream text, upstream_key text, latency_ms double precision
        );
        CREATE INDEX ledger_team_time ON ledger (team, time);
        CREATE INDEX ledger_job ON ledger (job_id);
    """),
    (2, "ALTER TABLE jobs ADD COLUMN reservation_id text"),
    (3, """
        ALTER TABLE jobs ADD COLUMN webhook_url text;
        CREATE TABLE webhook_outbox (
            id text PRIMARY KEY, team text NOT NULL, url text NOT NULL, type text NOT NULL, body text NOT NULL,
            created_at double precision NOT NULL, job_id text, attempts integer NOT NULL DEFAULT 0,
            next_attempt_at double precision NOT NULL DEFAULT 0, delivered_at double precision,
            failed_at double precision, last_status integer, last_error text,
            claimed_until double precision NOT NULL DEFAULT 0
        );
        CREATE INDEX webhook_due ON webhook_outbox (next_attempt_at)
            WHERE delivered_at IS NULL AND failed_at IS NULL;
    """),
    (4, """
        ALTER TABLE jobs ADD COLUMN edited_from text;
        ALTER TABLE jobs ADD COLUMN extended_from text;
        ALTER TABLE jobs ADD COLUMN base_seconds integer NOT NULL DEFAULT 0;
        CREATE TABLE characters (
            id text PRIMARY KEY, team text NOT NULL, name text NOT NULL, created_at double precision NOT NULL,
            media bytea NOT NULL, source text NOT NULL, source_video_id text,
            deleted boolean NOT NULL DEFAULT false
        );
        CREATE INDEX characters_team ON characters (team, created_at);
        CREATE TABLE character_keys (
            character_id text NOT NULL, upstream_key text NOT NULL, upstream_character_id text NOT NULL,
            PRIMARY KEY (character_id, upstream_key)
        );
    """),
    (5, """
        ALTER TABLE jobs ADD COLUMN resubmitted boolean NOT NULL DEFAULT false;
        ALTER TABLE ledger ADD COLUMN resubmitted boolean NOT NULL DEFAULT false;
    """),
    # whether a running job's progress is the gateway's estimate, and its place in the provider's queue, so every
    # instance shows a job the same way
    (6, """
        ALTER TABLE jobs ADD COLUMN progress_estimated boolean NOT NULL DEFAULT false;
        ALTER TABLE jobs ADD COLUMN queue_position integer;
    """),
)

_MIGRATIONS_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()
    )
"""

# Any constant works as long as every instance uses the same one.
_MIGRATION_LOCK = int.from_bytes(b"soragate", "big")

_JOB_COLUMNS = JobRecord.columns()
_JOB_COLUMN_SET = frozenset(_JOB_COLUMNS)
_BOOL_COLUMNS = frozenset({"refused", "has_thumbnail", "deleted", "progress_estimated"})
_KEY_COLUMNS = tuple(f.name for f in fields(KeyRecord))
_LEDGER_COLUMNS = tuple(f.name for f in fields(LedgerRow))
_CHARACTER_COLUMNS = tuple(f.name for f in fields(CharacterRecord))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column_list(names: Iterable[str]) -> str:
    return ", ".join(_ident(name) for name in names)


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


_JOBS = _column_list(_JOB_COLUMNS)
_KEYS = _column_list(_KEY_COLUMNS)
_LEDGER = _column_list(_LEDGER_COLUMNS)
_CHARACTERS = _column_list(_CHARACTER_COLUMNS)

_WEBHOOKS = _column_list(WebhookEvent.columns())
_INSERT_WEBHOOK = (f"INSERT INTO webhook_outbox ({_WEBHOOKS}) VALUES ({_placeholders(len(WebhookEvent.columns()))})"
                   " ON CONFLICT (id) DO NOTHING")
_INSERT_JOB = f"INSERT INTO jobs ({_JOBS}) VALUES ({_placeholders(len(_JOB_COLUMNS))})"
_UPSERT_LEDGER = (
    f"INSERT INTO ledger ({_LEDGER}) VALUES ({_placeholders(len(_LEDGER_COLUMNS))})"
    " ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{_ident(n)} = EXCLUDED.{_ident(n)}" for n in _LEDGER_COLUMNS if n != "request_id")
)


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the migrations this database lacks, in order, and return their versions.

    Everything runs in one transaction under an advisory lock, so instances starting together
    queue up: the first applies the migrations, the others find them recorded and do nothing.
    """
    applied: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(_MIGRATIONS_TABLE)
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied


class PostgresDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._ledger_writer: GroupCommit[LedgerRow] = GroupCommit(self._ledger_insert_many)
        self._job_writer: GroupCommit[tuple[JobRecord, LedgerRow | None]] = GroupCommit(
            self._insert_jobs, item_errors=(asyncpg.IntegrityConstraintViolationError,))

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10,
                      schema: str | None = None) -> PostgresDatabase:
        """Open a pool on `dsn` and bring the schema up to date.

        `schema` confines every table to that (existing) schema through the connections' search_path.
        """
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        settings = {"search_path": _ident(schema)} if schema else None
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, server_settings=settings)
        try:
            await migrate(pool)
        except BaseException:
            pool.terminate()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> bool:
        await self.pool.fetchval("SELECT 1")
        return True

    # jobs
    async def insert_job(self, job: JobRecord, ledger: LedgerRow | None = None) -> None:
        """Write a job and, in the same transaction, its ledger row (outcome 'pending'); the jobs recorded in
        one event-loop turn share the transaction."""
        await self._job_writer.write((job, ledger))

    async def _insert_jobs(self, jobs: list[tuple[JobRecord, LedgerRow | None]]) -> None:
        rows = [tuple(getattr(r, n) for n in _LEDGER_COLUMNS) for _, r in jobs if r is not None]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT_JOB, [tuple(_job_values(_JOB_COLUMNS, job.values())) for job, _ in jobs])
            if rows:
                await conn.executemany(_UPSERT_LEDGER, rows)

    async def finish_job(self, job_id: str, changes: dict[str, Any], outcome: str, cost_usd: float,
                         events: tuple[WebhookEvent, ...] = ()) -> bool:
        """Record a job's end and close its pending ledger row in one transaction.

        Only an unfinished job is finished: False means it had ended already, and nothing was changed.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            if not await _advance(conn, job_id, changes):
                return False
            await conn.execute(
                "UPDATE ledger SET outcome = $1, cost_usd = $2, upstream = $3, upstream_key = $4,"
                " latency_ms = ($5 - time) * 1000, resubmitted = (SELECT resubmitted FROM jobs WHERE id = $6)"
                " WHERE job_id = $6 AND outcome = 'pending'",
                outcome, cost_usd, changes.get("upstream"), changes.get("upstream_key"),
                changes["completed_at"], job_id,
            )
            if events:
                await conn.executemany(_INSERT_WEBHOOK, [e.values() for e in events])
        return True

    # webhook outbox
    async def enqueue_webhooks(self, events: tuple[WebhookEvent, ...]) -> None:
        if events:
            await self.pool.executemany(_INSERT_WEBHOOK, [e.values() for e in events])

    async def claim_webhooks(self, now: float, lease_s: float, limit: int) -> list[WebhookEvent]:
        """Due events, each leased to this instance for `lease_s`: another instance skips them meanwhile."""
        rows = await self.pool.fetch(
            "UPDATE webhook_outbox SET claimed_until = $1 WHERE id IN (SELECT id FROM webhook_outbox"
            " WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $2 AND claimed_until <= $2"
            f" ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {_WEBHOOKS}",
            now + lease_s, now, limit)
        return [WebhookEvent(**dict(r)) for r in rows]

    async def webhook_attempted(self, event_id: str, *, status: int | None, error: str | None,
                                delivered_at: float | None, next_attempt_at: float | None,
                                failed_at: float | None) -> None:
        await self.pool.execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $1, last_error = $2,"
            " delivered_at = $3, next_attempt_at = COALESCE($4, next_attempt_at), failed_at = $5,"
            " claimed_until = 0 WHERE id = $6", status, error, delivered_at, next_attempt_at, failed_at, event_id)

    async def webhook_events(self, limit: int) -> list[WebhookEvent]:
        rows = await self.pool.fetch(f"SELECT {_WEBHOOKS} FROM webhook_outbox WHERE delivered_at IS NULL"
                                     " ORDER BY created_at DESC LIMIT $1", limit)
        return [WebhookEvent(**dict(r)) for r in rows]

    async def webhook_counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(
            "SELECT COUNT(*) FILTER (WHERE delivered_at IS NOT NULL), COUNT(*) FILTER (WHERE failed_at IS NOT NULL),"
            " COUNT(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL) FROM webhook_outbox")
        return {"delivered": int(row[0]), "failed": int(row[1]), "pending": int(row[2])}

    async def advance_job(self, job_id: str, **changes: Any) -> bool:
        async with self.pool.acquire() as conn:
            return await _advance(conn, job_id, changes)

    async def served_to(self, job_id: str, team: str) -> bool:
        row = await self.pool.fetchval("SELECT 1 FROM ledger WHERE job_id = $1 AND team = $2"
                                       " AND outcome = 'cache_hit' LIMIT 1", job_id, team)
        return row is not None

    async def update_job(self, job_id: str, **changes: Any) -> None:
        unknown = changes.keys() - _JOB_COLUMN_SET
        if unknown:
            raise ValueError(f"unknown job columns: {', '.join(sorted(unknown))}")
        if not changes:
            return
        assignments = ", ".join(f"{_ident(name)} = ${i}" for i, name in enumerate(changes, start=2))
        await self.pool.execute(f"UPDATE jobs SET {assignments} WHERE id = $1",
                                job_id, *_job_values(changes.keys(), changes.values()))

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_JOBS} FROM jobs WHERE id = $1", job_id)
        return _job(row) if row else None

    async def active_jobs(self) -> list[JobRecord]:
        rows = await self.pool.fetch(f"SELECT {_JOBS} FROM jobs WHERE status = ANY($1::text[])",
                                     list(ACTIVE_STATES))
        return [_job(r) for r in rows]

    async def list_jobs(self, team: str, *, after: str | None, limit: int,
                        order: str) -> tuple[list[JobRecord], bool]:
        """One page of a team's jobs, newest first for `desc`; returns (jobs, has_more).

        An `after` that is not one of the team's jobs yields no rows: the row comparison with an
        empty subquery is NULL.
        """
        op, direction = ("<", "DESC") if order == "desc" else (">", "ASC")
        where, params = "team = $1 AND NOT deleted", [team, limit + 1]
        if after:
            anchor = "SELECT created_at, id FROM jobs WHERE id = $3 AND team = $1"
            where += f" AND (created_at, id) {op} ({anchor})"
            params.append(after)
        rows = await self.pool.fetch(
            f"SELECT {_JOBS} FROM jobs WHERE {where}"
            f" ORDER BY created_at {direction}, id {direction} LIMIT $2",
            *params,
        )
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    async def find_cached(self, cache_key: str, since: float) -> JobRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {_JOBS} FROM jobs WHERE cache_key = $1 AND status = 'completed' AND NOT deleted"
            " AND completed_at >= $2 ORDER BY completed_at DESC LIMIT 1",
            cache_key, since,
        )
        return _job(row) if row else None

    async def expired_jobs(self, before: float) -> list[JobRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_JOBS} FROM jobs WHERE status IN ('completed', 'failed') AND NOT deleted"
            " AND completed_at < $1",
            before,
        )
        return [_job(r) for r in rows]

    # characters
    async def insert_character(self, character: CharacterRecord) -> None:
        await self.pool.execute(
            "INSERT INTO characters (id, team, name, created_at, media, source, source_video_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            character.id, character.team, character.name, character.created_at, character.media, character.source,
            character.source_video_id)

    async def get_character(self, character_id: str) -> CharacterRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_CHARACTERS} FROM characters WHERE id = $1", character_id)
        return CharacterRecord(**dict(row)) if row else None

    async def list_characters(self, team: str) -> list[CharacterRecord]:
        rows = await self.pool.fetch(f"SELECT {_CHARACTERS} FROM characters WHERE team = $1 AND NOT deleted"
                                     " ORDER BY created_at, id", team)
        return [CharacterRecord(**dict(r)) for r in rows]

    async def delete_character(self, character_id: str) -> bool:
        deleted = await self.pool.fetchval(
            "UPDATE characters SET deleted = true WHERE id = $1 AND NOT deleted RETURNING id", character_id)
        return deleted is not None

    async def character_keys(self, character_ids: list[str]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {c: {} for c in character_ids}
        rows = await self.pool.fetch("SELECT character_id, upstream_key, upstream_character_id FROM character_keys"
                                     " WHERE character_id = ANY($1::text[])", character_ids)
        for row in rows:
            found[row["character_id"]][row["upstream_key"]] = row["upstream_character_id"]
        return found

    async def save_character_key(self, character_id: str, upstream_key: str, upstream_id: str) -> None:
        await self.pool.execute(
            "INSERT INTO character_keys (character_id, upstream_key, upstream_character_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (character_id, upstream_key)"
            " DO UPDATE SET upstream_character_id = EXCLUDED.upstream_character_id",
            character_id, upstream_key, upstream_id)

    # keys
    async def insert_key(self, key: KeyRecord) -> None:
        await self.pool.execute(
            "INSERT INTO api_keys (id, team, name, hash, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            key.id, key.team, key.name, key.hash, key.created_at, key.expires_at,
        )

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_KEYS} FROM api_keys WHERE hash = $1", key_hash)
        return KeyRecord(**dict(row)) if row else None

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        sql, params = f"SELECT {_KEYS} FROM api_keys", []
        if team:
            sql, params = sql + " WHERE team = $1", [team]
        rows = await self.pool.fetch(sql + " ORDER BY created_at", *params)
        return [KeyRecord(**dict(r)) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        revoked = await self.pool.fetchval(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id",
            time.time(), key_id,
        )
        return revoked is not None

    async def touch_keys(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        await self.pool.execute(
            "UPDATE api_keys AS k SET last_used_at = t.last_used"
            " FROM unnest($1::text[], $2::double precision[]) AS t (id, last_used) WHERE k.id = t.id",
            list(last_used.keys()), list(last_used.values()),
        )

    # ledger
    async def ledger_insert(self, row: LedgerRow) -> None:
        await self._ledger_writer.write(row)

    async def _ledger_insert_many(self, rows: list[LedgerRow]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(_UPSERT_LEDGER, [tuple(getattr(r, n) for n in _LEDGER_COLUMNS) for r in rows])

    async def completed_totals(self, day_start: float, month_start: float) -> dict[str, tuple[int, int, float]]:
        """Per team, what completed requests used since the starts given: (videos that day, video seconds and
        USD that month). Quota counters are rebuilt from it at start-up."""
        rows = await self.pool.fetch(
            "SELECT team, COUNT(*) FILTER (WHERE time >= $1) AS videos, SUM(seconds) AS seconds,"
            " SUM(cost_usd) AS usd FROM ledger WHERE outcome = 'completed' AND time >= $2 GROUP BY team",
            day_start, month_start,
        )
        return {r["team"]: (int(r["videos"] or 0), int(r["seconds"] or 0), float(r["usd"] or 0.0)) for r in rows}

    async def ledger_rows(self, team: str | None, since: float | None,
                          until: float | None) -> list[LedgerRow]:
        where, params = ["true"], []
        if team:
            params.append(team)
            where.append(f"team = ${len(params)}")
        if since is not None:
            params.append(since)
            where.append(f"time >= ${len(params)}")
        if until is not None:
            params.append(until)
            where.append(f"time < ${len(params)}")
        rows = await self.pool.fetch(
            f"SELECT {_LEDGER} FROM ledger WHERE {' AND '.join(where)} ORDER BY time", *params
        )
        return [LedgerRow(**dict(r)) for r in rows]

    async def usage_groups(self, team: str | None, since: float | None, until: float | None,
                           group: str, per_team: bool = False) -> list[tuple]:
        """(group value, requests, videos, video seconds, USD, resubmitted) per group, summed by PostgreSQL."""
        where, params = ["true"], []
        for column, op, value in (("team", "=", team or None), ("time", ">=", since), ("time", "<", until)):
            if value is not None:
                params.append(value)
                where.append(f"{column} {op} ${len(params)}")
        keys = "team, g" if per_team else "g"
        rows = await self.pool.fetch(
            f"SELECT {'team, ' if per_team else ''}{_PG_GROUPS[group]} AS g, COUNT(*),"
            f" COUNT(*) FILTER (WHERE outcome = 'completed'),"
            f" COALESCE(SUM(seconds) FILTER (WHERE outcome = 'completed'), 0), SUM(cost_usd),"
            f" COUNT(*) FILTER (WHERE resubmitted)"
            f" FROM ledger WHERE {' AND '.join(where)} GROUP BY {keys} ORDER BY {keys}", *params)
        return [tuple(r) for r in rows]

    async def usage_by_day(self, team: str | None, since: float, group: str) -> list[tuple]:
        """(day, group value, videos, video seconds, USD) per day and team or model, completed requests only."""
        params: list = [since]
        where = "time >= $1 AND outcome = 'completed'"
        if team:
            params.append(team)
            where += " AND team = $2"
        rows = await self.pool.fetch(
            f"SELECT {_PG_GROUPS['day']} AS d, {_PG_GROUPS[group]} AS g, COUNT(*), SUM(seconds), SUM(cost_usd)"
            f" FROM ledger WHERE {where} GROUP BY d, g ORDER BY d, g", *params)
        return [tuple(r) for r in rows]

    async def recent_failures(self, team: str | None, limit: int) -> list[JobRecord]:
        if team is None:
            rows = await self.pool.fetch(f"SELECT {_JOBS} FROM jobs WHERE status = 'failed'"
                                         " ORDER BY completed_at DESC LIMIT $1", limit)
        else:
            rows = await self.pool.fetch(f"SELECT {_JOBS} FROM jobs WHERE status = 'failed' AND team = $2"
                                         " ORDER BY completed_at DESC LIMIT $1", limit, team)
        return [_job(r) for r in rows]


_PG_GROUPS = {"day": "to_char(to_timestamp(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "model": "model",
              "key": "key_id", "team": "team"}


async def _advance(conn: asyncpg.Connection, job_id: str, changes: dict[str, Any]) -> bool:
    """Change a job only while it is still running."""
    unknown = changes.keys() - _JOB_COLUMN_SET
    if unknown:
        raise ValueError(f"unknown job columns: {', '.join(sorted(unknown))}")
    assignments = ", ".join(f"{_ident(name)} = ${i}" for i, name in enumerate(changes, start=2))
    status = await conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id = $1 AND status = ANY(${len(changes) + 2}::text[])",
        job_id, *_job_values(changes.keys(), changes.values()), list(ACTIVE_STATES))
    return not status.endswith(" 0")


def _job_values(names: Iterable[str], values: Iterable[Any]) -> list[Any]:
    """SQLite takes 0 and 1 for its boolean columns; PostgreSQL needs real booleans."""
    return [bool(v) if n in _BOOL_COLUMNS else v for n, v in zip(names, values, strict=True)]


def _job(row: asyncpg.Record) -> JobRecord:
    return JobRecord(**dict(row))
