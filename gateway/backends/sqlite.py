"""The embedded database: jobs, team keys and the ledger in one SQLite file (WAL).

Statements are short and run on the event loop's thread: with WAL and synchronous=NORMAL a commit is
a write to the OS page cache, which survives a killed process, and costs tens of microseconds. Copying the WAL
back into the database (a checkpoint) syncs both files to disk, which can take milliseconds: SQLite would do it
inside a commit every 1,000 pages, holding the event loop, so here it runs in a worker thread on a connection of
its own every `CHECKPOINT_ROWS` changed rows. SQLite's own
busy wait would stall the event loop while another process (`sora-gateway keys create`) holds the write lock,
so a write that finds the file locked waits on the event loop instead, up to `LOCK_WAIT_S`.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gateway.backends.group_commit import GroupCommit
from gateway.core.records import ACTIVE_STATES, CharacterRecord, JobRecord, KeyRecord, LedgerRow, WebhookEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
    upstream_model TEXT NOT NULL, prompt TEXT NOT NULL, size TEXT NOT NULL, seconds INTEGER NOT NULL,
    created_at REAL NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    upstream TEXT NOT NULL DEFAULT '', upstream_key TEXT NOT NULL DEFAULT '',
    upstream_job_id TEXT NOT NULL DEFAULT '', error_code TEXT, error_message TEXT,
    refused INTEGER NOT NULL DEFAULT 0, completed_at REAL, cache_key TEXT, remixed_from TEXT,
    request_id TEXT NOT NULL DEFAULT '', user TEXT, price REAL NOT NULL DEFAULT 0,
    has_thumbnail INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, reservation_id TEXT,
    edited_from TEXT, extended_from TEXT, base_seconds INTEGER NOT NULL DEFAULT 0,
    progress_estimated INTEGER NOT NULL DEFAULT 0, queue_position INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_team_created ON jobs (team, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_cache_key ON jobs (cache_key);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL, expires_at REAL, revoked_at REAL, last_used_at REAL
);
CREATE TABLE IF NOT EXISTS ledger (
    request_id TEXT PRIMARY KEY, time REAL NOT NULL, team TEXT NOT NULL, key_id TEXT NOT NULL,
    model TEXT NOT NULL, size TEXT NOT NULL, seconds INTEGER NOT NULL, outcome TEXT NOT NULL,
    cost_usd REAL NOT NULL DEFAULT 0, user TEXT, job_id TEXT, upstream TEXT, upstream_key TEXT,
    latency_ms REAL
);
CREATE TABLE IF NOT EXISTS characters (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, name TEXT NOT NULL, created_at REAL NOT NULL, media BLOB NOT NULL,
    source TEXT NOT NULL, source_video_id TEXT, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS characters_team ON characters (team, created_at);
CREATE TABLE IF NOT EXISTS character_keys (
    character_id TEXT NOT NULL, upstream_key TEXT NOT NULL, upstream_character_id TEXT NOT NULL,
    PRIMARY KEY (character_id, upstream_key)
);
CREATE INDEX IF NOT EXISTS ledger_team_time ON ledger (team, time);
CREATE INDEX IF NOT EXISTS ledger_job ON ledger (job_id);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, url TEXT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
    created_at REAL NOT NULL, job_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, delivered_at REAL, failed_at REAL, last_status INTEGER,
    last_error TEXT, claimed_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL
    AND failed_at IS NULL;
"""
# Columns added after a release: a database made before them gains them when it is opened.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("jobs", "edited_from", "TEXT"),
    ("jobs", "extended_from", "TEXT"),
    ("jobs", "base_seconds", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "webhook_url", "TEXT"),
    ("jobs", "resubmitted", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger", "resubmitted", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "progress_estimated", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "queue_position", "INTEGER"),
)

_JOB_COLUMNS = JobRecord.columns()
_INSERT_JOB = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' for _ in _JOB_COLUMNS)})"
_LEDGER_COLUMNS = LedgerRow.__slots__
_INSERT_LEDGER = (f"INSERT OR REPLACE INTO ledger ({', '.join(_LEDGER_COLUMNS)})"
                  f" VALUES ({', '.join('?' for _ in _LEDGER_COLUMNS)})")
_ledger_values = operator.attrgetter(*_LEDGER_COLUMNS)
LOCK_WAIT_S = 5.0
CHECKPOINT_ROWS = 2000
T = TypeVar("T")
log = logging.getLogger("gateway.database")
_BOOL_COLUMNS = {"refused", "has_thumbnail", "deleted", "resubmitted", "progress_estimated"}


class SQLiteDatabase:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=0")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")  # see `_after_write`
        self.conn.executescript(SCHEMA)
        self._add_columns()
        self._ledger_writer: GroupCommit[LedgerRow] = GroupCommit(self._ledger_insert_many)
        self._job_writer: GroupCommit[tuple[JobRecord, LedgerRow | None]] = GroupCommit(
            self._insert_jobs, item_errors=(sqlite3.IntegrityError,))
        self._advances: GroupCommit[tuple[str, dict[str, Any]]] = GroupCommit(self._each(self._advance))
        self._finishes: GroupCommit[tuple[str, dict[str, Any], str, float, tuple[WebhookEvent, ...]]] = (
            GroupCommit(self._each(self._finish)))
        self._checkpointed = self.conn.total_changes
        self._checkpoint: asyncio.Task | None = None
        self._checkpointer: sqlite3.Connection | None = None

    def _add_columns(self) -> None:
        for table, column, definition in ADDED_COLUMNS:
            present = {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it just now
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.shield(self._checkpoint)
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.conn.close()  # the last connection to close checkpoints what is left

    async def _write(self, work: Callable[[], T]) -> T:
        """Run a write; while another connection holds the lock, wait for it without blocking the loop."""
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = 0.005
        while True:
            try:
                result = work()
                self._after_write()
                return result
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _after_write(self) -> None:
        """Start a checkpoint in a worker thread once enough rows changed since the last one started."""
        changes = self.conn.total_changes
        if changes - self._checkpointed < CHECKPOINT_ROWS or self._checkpoint is not None or self.path == ":memory:":
            return
        self._checkpointed = changes
        self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._checkpoint_now)
        except sqlite3.Error as exc:  # the WAL keeps the changes; the next checkpoint copies them
            log.warning("database checkpoint failed", extra={"error": str(exc)})
        finally:
            self._checkpoint = None

    def _checkpoint_now(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # PASSIVE: copies what no reader still needs, without waiting for readers or holding back writers
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def ping(self) -> bool:
        self.conn.execute("SELECT 1").fetchone()
        return True

    # jobs
    async def insert_job(self, job: JobRecord, ledger: LedgerRow | None = None) -> None:
        """Write a job and, in the same transaction, its ledger row (outcome 'pending'); the jobs recorded in
        one event-loop turn share the transaction."""
        await self._job_writer.write((job, ledger))

    async def _insert_jobs(self, jobs: list[tuple[JobRecord, LedgerRow | None]]) -> None:
        def insert() -> None:
            with self._transaction():
                self.conn.executemany(_INSERT_JOB, [job.values() for job, _ in jobs])
                self.conn.executemany(_INSERT_LEDGER, [_ledger_values(row) for _, row in jobs if row is not None])

        await self._write(insert)

    async def finish_job(self, job_id: str, changes: dict[str, Any], outcome: str, cost_usd: float,
                         events: tuple[WebhookEvent, ...] = ()) -> bool:
        """Record a job's end and close its pending ledger row in one transaction; the jobs finished in one
        event-loop turn share it.

        Only an unfinished job is finished: False means it had ended already, and nothing was changed.
        """
        return await self._finishes.write((job_id, changes, outcome, cost_usd, events))

    def _finish(self, job_id: str, changes: dict[str, Any], outcome: str, cost_usd: float,
                events: tuple[WebhookEvent, ...]) -> bool:
        if not self._advance(job_id, changes):
            return False
        self.conn.execute(
            "UPDATE ledger SET outcome = ?, cost_usd = ?, upstream = ?, upstream_key = ?,"
            " latency_ms = (? - time) * 1000, resubmitted = (SELECT resubmitted FROM jobs WHERE id = ?)"
            " WHERE job_id = ? AND outcome = 'pending'",
            (outcome, cost_usd, changes.get("upstream"), changes.get("upstream_key"),
             changes["completed_at"], job_id, job_id),
        )
        if events:
            self._enqueue(events)
        return True

    # webhook outbox
    def _enqueue(self, events: tuple[WebhookEvent, ...]) -> None:
        names = WebhookEvent.columns()
        self.conn.executemany(f"INSERT OR IGNORE INTO webhook_outbox ({', '.join(names)})"
                              f" VALUES ({', '.join('?' for _ in names)})", [e.values() for e in events])

    async def enqueue_webhooks(self, events: tuple[WebhookEvent, ...]) -> None:
        await self._write(lambda: self._enqueue(events))

    async def claim_webhooks(self, now: float, lease_s: float, limit: int) -> list[WebhookEvent]:
        names = ", ".join(WebhookEvent.columns())
        rows = await self._write(lambda: self.conn.execute(
            "UPDATE webhook_outbox SET claimed_until = ? WHERE id IN (SELECT id FROM webhook_outbox"
            " WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ? AND claimed_until <= ?"
            f" ORDER BY next_attempt_at LIMIT ?) RETURNING {names}", (now + lease_s, now, now, limit)).fetchall())
        return [WebhookEvent(**dict(r)) for r in rows]

    async def webhook_attempted(self, event_id: str, *, status: int | None, error: str | None,
                                delivered_at: float | None, next_attempt_at: float | None,
                                failed_at: float | None) -> None:
        await self._write(lambda: self.conn.execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = ?, last_error = ?, delivered_at = ?,"
            " next_attempt_at = COALESCE(?, next_attempt_at), failed_at = ?, claimed_until = 0 WHERE id = ?",
            (status, error, delivered_at, next_attempt_at, failed_at, event_id)))

    async def webhook_events(self, limit: int) -> list[WebhookEvent]:
        names = ", ".join(WebhookEvent.columns())
        rows = self.conn.execute(f"SELECT {names} FROM webhook_outbox WHERE delivered_at IS NULL"
                                 " ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [WebhookEvent(**dict(r)) for r in rows]

    async def webhook_counts(self) -> dict[str, int]:
        row = self.conn.execute(
            "SELECT SUM(delivered_at IS NOT NULL), SUM(failed_at IS NOT NULL),"
            " SUM(delivered_at IS NULL AND failed_at IS NULL) FROM webhook_outbox").fetchone()
        return {"delivered": int(row[0] or 0), "failed": int(row[1] or 0), "pending": int(row[2] or 0)}

    async def advance_job(self, job_id: str, **changes: Any) -> bool:
        """Change an unfinished job; False when it had ended. The jobs advanced in one event-loop turn (a list
        poll reports many at once) share one transaction."""
        return await self._advances.write((job_id, changes))

    def _each(self, write_one: Callable[..., bool]) -> Callable[[list[tuple]], Awaitable[list[bool]]]:
        """A group commit's batch writer: `write_one(*item)` for every item, all in one transaction."""
        async def write_many(items: list[tuple]) -> list[bool]:
            def work() -> list[bool]:
                with self._transaction():
                    return [write_one(*item) for item in items]

            return await self._write(work)

        return write_many

    def _advance(self, job_id: str, changes: dict[str, Any]) -> bool:
        cur = self.conn.execute(_advance_statement(tuple(changes)), (*changes.values(), job_id, *ACTIVE_STATES))
        return cur.rowcount > 0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    async def update_job(self, job_id: str, **changes: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in changes)
        await self._write(lambda: self.conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?",
                                                    (*changes.values(), job_id)))

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    async def active_jobs(self) -> list[JobRecord]:
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        rows = self.conn.execute(f"SELECT * FROM jobs WHERE status IN ({marks})", ACTIVE_STATES).fetchall()
        return [_job(r) for r in rows]

    async def list_jobs(self, team: str, *, after: str | None, limit: int, order: str) -> tuple[list[JobRecord], bool]:
        """One page of a team's jobs, newest first for `desc`; returns (jobs, has_more)."""
        op, direction = ("<", "DESC") if order == "desc" else (">", "ASC")
        params: list[Any] = [team]
        where = "team = ? AND deleted = 0"
        if after:
            anchor = self.conn.execute("SELECT created_at, id FROM jobs WHERE id = ? AND team = ?",
                                       (after, team)).fetchone()
            if anchor is None:
                return [], False
            where += f" AND (created_at, id) {op} (?, ?)"
            params += [anchor["created_at"], anchor["id"]]
        rows = self.conn.execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY created_at {direction}, id {direction} LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    async def find_cached(self, cache_key: str, since: float) -> JobRecord | None:
        row = self.conn.execute(
            "SELECT * FROM jobs WHERE cache_key = ? AND status = 'completed' AND deleted = 0 AND completed_at >= ?"
            " ORDER BY completed_at DESC LIMIT 1",
            (cache_key, since),
        ).fetchone()
        return _job(row) if row else None

    async def expired_jobs(self, before: float) -> list[JobRecord]:
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE status IN ('completed', 'failed') AND deleted = 0 AND completed_at < ?",
            (before,),
        ).fetchall()
        return [_job(r) for r in rows]

    async def served_to(self, job_id: str, team: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM ledger WHERE job_id = ? AND team = ? AND outcome = 'cache_hit'"
                                " LIMIT 1", (job_id, team)).fetchone()
        return row is not None

    # characters
    async def insert_character(self, character: CharacterRecord) -> None:
        await self._write(lambda: self.conn.execute(
            "INSERT INTO characters (id, team, name, created_at, media, source, source_video_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (character.id, character.team, character.name, character.created_at, character.media, character.source,
             character.source_video_id)))

    async def get_character(self, character_id: str) -> CharacterRecord | None:
        row = self.conn.execute("SELECT * FROM characters WHERE id = ?", (character_id,)).fetchone()
        return _character(row) if row else None

    async def list_characters(self, team: str) -> list[CharacterRecord]:
        rows = self.conn.execute("SELECT * FROM characters WHERE team = ? AND deleted = 0 ORDER BY created_at, id",
                                 (team,))
        return [_character(r) for r in rows]

    async def delete_character(self, character_id: str) -> bool:
        cur = await self._write(lambda: self.conn.execute(
            "UPDATE characters SET deleted = 1 WHERE id = ? AND deleted = 0", (character_id,)))
        return cur.rowcount > 0

    async def character_keys(self, character_ids: list[str]) -> dict[str, dict[str, str]]:
        marks = ", ".join("?" for _ in character_ids)
        found: dict[str, dict[str, str]] = {c: {} for c in character_ids}
        if character_ids:
            for row in self.conn.execute(f"SELECT * FROM character_keys WHERE character_id IN ({marks})",
                                         character_ids):
                found[row["character_id"]][row["upstream_key"]] = row["upstream_character_id"]
        return found

    async def save_character_key(self, character_id: str, upstream_key: str, upstream_id: str) -> None:
        await self._write(lambda: self.conn.execute(
            "INSERT OR REPLACE INTO character_keys (character_id, upstream_key, upstream_character_id)"
            " VALUES (?, ?, ?)", (character_id, upstream_key, upstream_id)))

    # keys
    async def insert_key(self, key: KeyRecord) -> None:
        await self._write(lambda: self.conn.execute(
            "INSERT INTO api_keys (id, team, name, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key.id, key.team, key.name, key.hash, key.created_at, key.expires_at),
        ))

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = self.conn.execute("SELECT * FROM api_keys WHERE hash = ?", (key_hash,)).fetchone()
        return KeyRecord(**dict(row)) if row else None

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        sql, params = "SELECT * FROM api_keys", ()
        if team:
            sql, params = sql + " WHERE team = ?", (team,)
        return [KeyRecord(**dict(r)) for r in self.conn.execute(sql + " ORDER BY created_at", params)]

    async def revoke_key(self, key_id: str) -> bool:
        cur = await self._write(lambda: self.conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)))
        return cur.rowcount > 0

    async def touch_keys(self, last_used: dict[str, float]) -> None:
        await self._write(lambda: self.conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                                                        [(t, k) for k, t in last_used.items()]))

    # ledger
    async def ledger_insert(self, row: LedgerRow) -> None:
        await self._ledger_writer.write(row)

    async def _ledger_insert_many(self, rows: list[LedgerRow]) -> None:
        def insert() -> None:
            with self._transaction():
                self.conn.executemany(_INSERT_LEDGER, [_ledger_values(row) for row in rows])

        await self._write(insert)

    def _ledger_insert(self, row: LedgerRow) -> None:
        self.conn.execute(_INSERT_LEDGER, _ledger_values(row))

    async def completed_totals(self, day_start: float, month_start: float) -> dict[str, tuple[int, int, float]]:
        """Per team, what completed requests used since the starts given: (videos that day, video seconds and
        USD that month). Quota counters are rebuilt from it at start-up."""
        rows = self.conn.execute(
            "SELECT team, SUM(time >= ?), SUM(seconds), SUM(cost_usd) FROM ledger"
            " WHERE outcome = 'completed' AND time >= ? GROUP BY team",
            (day_start, month_start),
        )
        return {team: (int(videos or 0), int(seconds or 0), float(usd or 0.0)) for team, videos, seconds, usd in rows}

    async def ledger_rows(self, team: str | None, since: float | None, until: float | None) -> list[LedgerRow]:
        where, params = ["1 = 1"], []
        if team:
            where.append("team = ?")
            params.append(team)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if until is not None:
            where.append("time < ?")
            params.append(until)
        rows = self.conn.execute(f"SELECT * FROM ledger WHERE {' AND '.join(where)} ORDER BY time", params)
        return [LedgerRow(**{**dict(r), "resubmitted": bool(r["resubmitted"])}) for r in rows]


    async def usage_groups(self, team: str | None, since: float | None, until: float | None,
                           group: str, per_team: bool = False) -> list[tuple]:
        """(group value, requests, videos, video seconds, USD, resubmitted) per group, summed by SQLite.

        The scan runs in a worker thread on a connection of its own (WAL lets it read beside the writer), so a
        report over a large ledger does not stall the event loop.
        """
        where, params = _ledger_filter(team, since, until)
        keys = "team, g" if per_team else "g"
        sql = (f"SELECT {'team, ' if per_team else ''}{_SQLITE_GROUPS[group]} AS g, COUNT(*),"
               f" SUM(outcome = 'completed'), SUM(CASE WHEN outcome = 'completed' THEN seconds ELSE 0 END),"
               f" SUM(cost_usd), SUM(resubmitted) FROM ledger WHERE {where} GROUP BY {keys} ORDER BY {keys}")
        if self.path == ":memory:":
            return [tuple(r) for r in self.conn.execute(sql, params)]
        return await asyncio.to_thread(_read_all, self.path, sql, params)

    async def usage_by_day(self, team: str | None, since: float, group: str) -> list[tuple]:
        """(day, group value, videos, video seconds, USD) per day and team or model, completed requests only."""
        where, params = _ledger_filter(team, since, None)
        sql = (f"SELECT {_SQLITE_GROUPS['day']} AS d, {_SQLITE_GROUPS[group]} AS g, COUNT(*), SUM(seconds),"
               f" SUM(cost_usd) FROM ledger WHERE {where} AND outcome = 'completed' GROUP BY d, g ORDER BY d, g")
        if self.path == ":memory:":
            return [tuple(r) for r in self.conn.execute(sql, params)]
        return await asyncio.to_thread(_read_all, self.path, sql, params)

    async def recent_failures(self, team: str | None, limit: int) -> list[JobRecord]:
        where, params = ("status = 'failed'", []) if team is None else ("status = 'failed' AND team = ?", [team])
        rows = self.conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY completed_at DESC LIMIT ?",
                                 (*params, limit)).fetchall()
        return [_job(r) for r in rows]


_SQLITE_GROUPS = {"day": "strftime('%Y-%m-%d', time, 'unixepoch')", "model": "model", "key": "key_id", "team": "team"}


def _ledger_filter(team: str | None, since: float | None, until: float | None) -> tuple[str, list]:
    where, params = ["1 = 1"], []
    for column, op, value in (("team", "=", team or None), ("time", ">=", since), ("time", "<", until)):
        if value is not None:
            params.append(value)
            where.append(f"{column} {op} ?")
    return " AND ".join(where), params


def _read_all(path: str, sql: str, params: list) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


@functools.lru_cache(maxsize=64)
def _advance_statement(columns: tuple[str, ...]) -> str:
    """The UPDATE of an unfinished job's `columns`: a handful of column sets, each made once."""
    assignments = ", ".join(f"{name} = ?" for name in columns)
    return f"UPDATE jobs SET {assignments} WHERE id = ? AND status IN ({', '.join('?' for _ in ACTIVE_STATES)})"


def _job(row: sqlite3.Row) -> JobRecord:
    values = dict(row)
    for name in _BOOL_COLUMNS:
        values[name] = bool(values[name])
    return JobRecord(**values)


def _character(row: sqlite3.Row) -> CharacterRecord:
    values = dict(row)
    values["deleted"] = bool(values["deleted"])
    return CharacterRecord(**values)
