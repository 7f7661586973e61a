"""One behaviour suite for every database backend: SQLite on a file, PostgreSQL on the real test server.

Each PostgreSQL test runs in a schema of its own, created empty and dropped afterwards. Without a
reachable server those tests skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.backends.postgres import MIGRATIONS, PostgresDatabase, migrate
from gateway.backends.sqlite import SQLiteDatabase
from gateway.core.records import CharacterRecord, JobRecord, KeyRecord, LedgerRow

Database = SQLiteDatabase | PostgresDatabase

POSTGRES_DSN = os.environ.get("GATEWAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def connect_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES_DSN, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = f"PostgreSQL is unreachable (GATEWAY_TEST_POSTGRES_DSN): {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    admin = await connect_admin()
    schema = f"t_{secrets.token_hex(8)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    async with fresh_schema() as schema:
        yield schema


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = SQLiteDatabase(str(tmp_path / "gateway.db"))
        yield db
        await db.close()
        return
    async with fresh_schema() as schema:
        db = await PostgresDatabase.connect(POSTGRES_DSN, schema=schema)
        yield db
        await db.close()


def job(job_id: str, **changes: Any) -> JobRecord:
    record = JobRecord(id=job_id, team="alpha", key_id="key_a", model="sora-2", upstream_model="sora-2",
                       prompt="a red fox in the snow", size="720x1280", seconds=4, created_at=1_700_000_000.0)
    return replace(record, **changes)


def key(key_id: str, team: str, created_at: float, **changes: Any) -> KeyRecord:
    return replace(KeyRecord(id=key_id, team=team, name=f"{key_id} name", hash=f"sha256:{key_id}",
                             created_at=created_at), **changes)


def ledger_row(request_id: str, at: float, **changes: Any) -> LedgerRow:
    row = LedgerRow(request_id=request_id, time=at, team="alpha", key_id="key_a", model="sora-2",
                    size="720x1280", seconds=4, outcome="pending")
    return replace(row, **changes)


# Differs from job("video_bare") in every column, so a column a backend drops or mangles shows up.
FULL = JobRecord(
    id="video_full", team="beta", key_id="key_b", model="sora-2-hd", upstream_model="sora-2-pro",
    prompt="un renard — 狐狸 — 'quoted' \"twice\"", size="1280x720", seconds=12,
    created_at=1_700_000_123.456789, status="completed", progress=87.25, upstream="relay-a",
    upstream_key="relay-a#2", upstream_job_id="video_up_1", error_code="moderation",
    error_message="refused: unsafe", refused=True, completed_at=1_700_000_456.125, cache_key="ck_1",
    remixed_from="video_source", request_id="req_1", user="user-42", price=1.2,
    has_thumbnail=True, deleted=True, reservation_id="res_1", edited_from="video_e", extended_from="video_x",
    base_seconds=8, webhook_url="https://hooks.example/v", resubmitted=True, progress_estimated=True,
    queue_position=3,
)


async def test_ping(database: Database) -> None:
    assert await database.ping() is True


async def test_job_round_trips_every_field(database: Database) -> None:
    bare = job("video_bare")
    assert all(getattr(FULL, name) != getattr(bare, name) for name in JobRecord.columns())

    await database.insert_job(FULL)
    await database.insert_job(bare)

    assert await database.get_job("video_full") == FULL
    assert await database.get_job("video_bare") == bare
    assert await database.get_job("video_missing") is None


async def test_update_job_sets_every_field_and_clears_back(database: Database) -> None:
    bare = job("video_bare")
    await database.insert_job(bare)
    everything = {name: getattr(FULL, name) for name in JobRecord.columns() if name != "id"}

    await database.update_job("video_bare", **everything)
    assert await database.get_job("video_bare") == replace(FULL, id="video_bare")

    defaults = {name: getattr(bare, name) for name in JobRecord.columns() if name != "id"}
    await database.update_job("video_bare", **defaults)
    assert await database.get_job("video_bare") == bare

    await database.update_job("video_missing", status="failed")
    assert await database.get_job("video_missing") is None


async def test_active_jobs_are_those_still_running(database: Database) -> None:
    for status in ("submitting", "queued", "in_progress", "completed", "failed"):
        await database.insert_job(job(f"video_{status}", status=status))

    active = await database.active_jobs()

    assert sorted(j.id for j in active) == ["video_in_progress", "video_queued", "video_submitting"]
    assert {j.status for j in active} == {"submitting", "queued", "in_progress"}


@pytest.fixture
async def listed(database: Database) -> list[str]:
    """Team alpha's visible jobs, oldest first; two share a timestamp and sort by id, bytewise."""
    records = [
        job("video_1", created_at=100.0),
        job("video_2", created_at=200.0),
        job("video_3a", created_at=300.0),
        job("video_3B", created_at=300.0),
        job("video_4", created_at=400.0),
        job("video_5", created_at=500.0),
        job("video_other_team", team="beta", created_at=250.0),
    ]
    for record in records:
        await database.insert_job(record)
    await database.update_job("video_4", deleted=True)
    return ["video_1", "video_2", "video_3B", "video_3a", "video_5"]


async def page_ids(database: Database, after: str | None, limit: int, order: str) -> tuple[list[str], bool]:
    jobs, has_more = await database.list_jobs("alpha", after=after, limit=limit, order=order)
    return [j.id for j in jobs], has_more


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_list_jobs_orders_by_creation_then_id(database: Database, listed: list[str],
                                                    order: str) -> None:
    expected = listed if order == "asc" else listed[::-1]

    assert await page_ids(database, None, 10, order) == (expected, False)
    assert await page_ids(database, None, 5, order) == (expected, False)
    assert await page_ids(database, None, 4, order) == (expected[:4], True)


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3, 5])
async def test_list_jobs_pages_with_a_cursor(database: Database, listed: list[str], order: str,
                                            limit: int) -> None:
    expected = listed if order == "asc" else listed[::-1]
    seen: list[str] = []
    after = None
    while True:
        ids, has_more = await page_ids(database, after, limit, order)
        seen += ids
        assert has_more == (len(seen) < len(expected))
        if not has_more:
            break
        after = ids[-1]
    assert seen == expected


async def test_list_jobs_cursor_edge_cases(database: Database, listed: list[str]) -> None:
    assert await page_ids(database, "video_4", 2, "desc") == (["video_3a", "video_3B"], True)
    assert await page_ids(database, "video_4", 2, "asc") == (["video_5"], False)
    assert await page_ids(database, "video_5", 2, "asc") == ([], False)
    assert await page_ids(database, "video_other_team", 2, "desc") == ([], False)
    assert await page_ids(database, "video_missing", 2, "desc") == ([], False)
    assert await database.list_jobs("nobody", after=None, limit=10, order="desc") == ([], False)


async def test_find_cached_returns_the_newest_completed_job_within_the_ttl(database: Database) -> None:
    await database.insert_job(job("video_old", status="completed", cache_key="ck", completed_at=1000.0))
    await database.insert_job(job("video_new", status="completed", cache_key="ck", completed_at=2000.0))
    await database.insert_job(job("video_failed", status="failed", cache_key="ck", completed_at=3000.0))
    await database.insert_job(job("video_deleted", status="completed", cache_key="ck", completed_at=4000.0,
                                  deleted=True))
    await database.insert_job(job("video_running", status="in_progress", cache_key="ck"))
    await database.insert_job(job("video_other", status="completed", cache_key="ck2", completed_at=5000.0))

    assert (await database.find_cached("ck", 0.0)).id == "video_new"
    assert (await database.find_cached("ck", 2000.0)).id == "video_new"
    assert await database.find_cached("ck", 2000.5) is None
    assert await database.find_cached("ck_missing", 0.0) is None


async def test_expired_jobs_are_finished_undeleted_and_older_than_the_cutoff(database: Database) -> None:
    await database.insert_job(job("video_completed", status="completed", completed_at=1000.0))
    await database.insert_job(job("video_failed", status="failed", completed_at=2000.0))
    await database.insert_job(job("video_recent", status="completed", completed_at=3000.0))
    await database.insert_job(job("video_deleted", status="completed", completed_at=1000.0, deleted=True))
    await database.insert_job(job("video_running", status="in_progress"))

    expired = await database.expired_jobs(3000.0)

    assert sorted(j.id for j in expired) == ["video_completed", "video_failed"]


async def test_keys_insert_lookup_list_revoke_and_touch(database: Database) -> None:
    first = key("key_1", "alpha", 100.0)
    second = key("key_2", "beta", 200.0)
    third = key("key_3", "alpha", 300.0, expires_at=9_999_999_999.5)
    for record in (third, first, second):
        await database.insert_key(record)

    assert await database.key_by_hash("sha256:key_3") == third
    assert await database.key_by_hash("sha256:missing") is None
    assert await database.list_keys() == [first, second, third]
    assert await database.list_keys("alpha") == [first, third]
    assert await database.list_keys("nobody") == []

    before = time.time()
    assert await database.revoke_key("key_1") is True
    assert await database.revoke_key("key_1") is False
    assert await database.revoke_key("key_missing") is False
    revoked_at = (await database.key_by_hash("sha256:key_1")).revoked_at
    assert before <= revoked_at <= time.time()

    await database.touch_keys({})
    await database.touch_keys({"key_2": 500.0, "key_3": 600.25, "key_missing": 1.0})
    assert await database.list_keys() == [replace(first, revoked_at=revoked_at),
                                          replace(second, last_used_at=500.0),
                                          replace(third, last_used_at=600.25)]


async def test_ledger_insert_replaces_a_row_with_the_same_request_id(database: Database) -> None:
    await database.ledger_insert(ledger_row("req_1", 100.0, user="u1", job_id="video_1", latency_ms=5.0))
    replacement = ledger_row("req_1", 150.0, team="beta", key_id="key_b", model="sora-2-hd", size="1280x720",
                             seconds=8, outcome="cache_hit", cost_usd=0.8, upstream="relay-a",
                             upstream_key="relay-a#1")

    await database.ledger_insert(replacement)

    assert await database.ledger_rows(None, None, None) == [replacement]


async def test_finish_job_closes_the_job_and_every_pending_row_of_it_once(database: Database) -> None:
    rows = [
        ledger_row("req_submitter", 100.0, job_id="video_1"),
        ledger_row("req_joiner", 250.0, team="beta", job_id="video_1"),
        ledger_row("req_cached", 300.0, job_id="video_1", outcome="cache_hit", latency_ms=2.0),
        ledger_row("req_elsewhere", 400.0, job_id="video_2"),
        ledger_row("req_no_job", 500.0),
    ]
    await database.insert_job(job("video_1", status="in_progress"), rows[0])
    assert await database.ledger_rows(None, None, None) == [rows[0]]  # written with the job
    for row in rows[1:]:
        await database.ledger_insert(row)
    changes = {"status": "completed", "progress": 100.0, "completed_at": 1000.0, "upstream": "relay-a",
               "upstream_key": "relay-a#1"}

    assert await database.finish_job("video_1", changes, "completed", 0.4) is True
    assert await database.finish_job("video_1", {**changes, "status": "failed"}, "failed", 0.0) is False

    closed = {"outcome": "completed", "cost_usd": 0.4, "upstream": "relay-a", "upstream_key": "relay-a#1"}
    assert await database.ledger_rows(None, None, None) == [
        replace(rows[0], **closed, latency_ms=900_000.0),
        replace(rows[1], **closed, latency_ms=750_000.0),
        *rows[2:],
    ]
    finished = await database.get_job("video_1")
    assert (finished.status, finished.completed_at, finished.upstream_key) == ("completed", 1000.0, "relay-a#1")



async def test_a_job_sent_again_after_a_lost_answer_marks_its_ledger_row(database: Database) -> None:
    row = ledger_row("req_resent", 100.0, job_id="video_1")
    await database.insert_job(job("video_1", status="submitting"), row)
    assert await database.advance_job("video_1", status="queued", upstream_job_id="up_2", resubmitted=True)
    changes = {"status": "completed", "progress": 100.0, "completed_at": 200.0, "upstream": "relay-a",
               "upstream_key": "relay-a#1"}
    assert await database.finish_job("video_1", changes, "completed", 0.4)
    [closed] = await database.ledger_rows(None, None, None)
    assert (closed.outcome, closed.resubmitted) == ("completed", True)
    assert (await database.get_job("video_1")).resubmitted is True

async def test_completed_totals_per_team_since_the_day_and_month_starts(database: Database) -> None:
    rows = [
        ledger_row("req_last_month", 50.0, outcome="completed", seconds=12, cost_usd=1.2),
        ledger_row("req_this_month", 150.0, outcome="completed", seconds=8, cost_usd=0.8),
        ledger_row("req_today", 250.0, outcome="completed", seconds=4, cost_usd=0.4),
        ledger_row("req_failed_today", 260.0, outcome="failed", seconds=4),
        ledger_row("req_hit_today", 270.0, outcome="cache_hit", seconds=4),
        ledger_row("req_beta", 280.0, team="beta", outcome="completed", seconds=4, cost_usd=0.3),
    ]
    for row in rows:
        await database.ledger_insert(row)

    totals = await database.completed_totals(day_start=200.0, month_start=100.0)

    assert totals == {"alpha": (1, 12, pytest.approx(1.2)), "beta": (1, 4, pytest.approx(0.3))}


async def test_ledger_rows_filter_by_team_and_half_open_time_range(database: Database) -> None:
    teams = {100: "alpha", 200: "alpha", 300: "beta", 400: "alpha"}
    rows = [ledger_row(f"req_{at}", float(at), team=team) for at, team in teams.items()]
    for row in reversed(rows):
        await database.ledger_insert(row)

    async def request_ids(team: str | None, since: float | None, until: float | None) -> list[str]:
        return [r.request_id for r in await database.ledger_rows(team, since, until)]

    assert await request_ids(None, None, None) == ["req_100", "req_200", "req_300", "req_400"]
    assert await request_ids("alpha", None, None) == ["req_100", "req_200", "req_400"]
    assert await request_ids(None, 200.0, None) == ["req_200", "req_300", "req_400"]
    assert await request_ids(None, None, 300.0) == ["req_100", "req_200"]
    assert await request_ids("alpha", 200.0, 400.0) == ["req_200"]
    assert await request_ids("nobody", None, None) == []


async def test_usage_is_grouped_by_the_database_the_same_way_on_both_backends(database: Database) -> None:
    day = 86_400.0
    rows = [
        ledger_row("req_1", 10.0, outcome="completed", seconds=4, cost_usd=0.4),
        ledger_row("req_2", 20.0, outcome="failed", seconds=8),
        ledger_row("req_3", day + 5, outcome="completed", seconds=12, cost_usd=1.2),
        ledger_row("req_4", day + 6, team="beta", outcome="cache_hit", seconds=4),
    ]
    rows[2].resubmitted = True  # sent again after a create whose answer was lost
    for row in rows:
        await database.ledger_insert(row)

    assert await database.usage_groups(None, None, None, "day") == [
        ("1970-01-01", 2, 1, 4, pytest.approx(0.4), 0), ("1970-01-02", 2, 1, 12, pytest.approx(1.2), 1)]
    assert await database.usage_groups("alpha", day, None, "team") == [("alpha", 1, 1, 12, pytest.approx(1.2), 1)]
    assert await database.usage_groups(None, None, day, "model") == [("sora-2", 2, 1, 4, pytest.approx(0.4), 0)]
    assert await database.usage_groups("nobody", None, None, "key") == []


# PostgreSQL only: start-up, migrations and argument checks.

async def test_concurrent_connects_on_an_empty_schema_all_succeed(postgres_schema: str) -> None:
    databases = await asyncio.gather(*(PostgresDatabase.connect(POSTGRES_DSN, schema=postgres_schema,
                                                                max_size=2) for _ in range(4)))
    try:
        versions = await databases[0].pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [version for version, _ in MIGRATIONS]
        assert await migrate(databases[1].pool) == []

        await databases[2].insert_job(FULL)
        assert await databases[3].get_job(FULL.id) == FULL
    finally:
        await asyncio.gather(*(db.close() for db in databases))


async def test_connect_accepts_both_url_schemes(postgres_schema: str) -> None:
    rest = POSTGRES_DSN.split("://", 1)[1]
    for scheme in ("postgresql", "postgres"):
        db = await PostgresDatabase.connect(f"{scheme}://{rest}", schema=postgres_schema)
        assert await db.ping() is True
        await db.close()

    for dsn in ("sqlite:///data/gateway.db", "mysql://root@127.0.0.1/test", rest):
        with pytest.raises(ValueError, match="postgresql://"):
            await PostgresDatabase.connect(dsn)


async def test_update_job_rejects_unknown_columns(postgres_schema: str) -> None:
    db = await PostgresDatabase.connect(POSTGRES_DSN, schema=postgres_schema)
    try:
        await db.insert_job(job("video_1"))
        with pytest.raises(ValueError, match="unknown job columns: nonsense"):
            await db.update_job("video_1", status="failed", nonsense=1)
        with pytest.raises(ValueError, match="unknown job columns"):
            await db.update_job("video_1", **{"status = 'failed', team": "beta"})
        assert await db.get_job("video_1") == job("video_1")
    finally:
        await db.close()


async def test_a_webhook_event_is_written_with_the_jobs_end_and_leased_to_one_sender(database: Database) -> None:
    from gateway.core.records import WebhookEvent

    await database.insert_job(job("video_1", status="in_progress"))
    event = WebhookEvent(id="evt_1", team="alpha", url="https://hooks.example/v", type="video.completed",
                         body='{"id": "evt_1"}', created_at=100.0, job_id="video_1", next_attempt_at=100.0)
    changes = {"status": "completed", "completed_at": 101.0}
    assert await database.finish_job("video_1", changes, "completed", 0.4, (event,))
    assert not await database.finish_job("video_1", changes, "completed", 0.4, (replace(event, id="evt_2"),))
    [claimed] = await database.claim_webhooks(now=102.0, lease_s=60.0, limit=10)
    assert claimed == event
    assert await database.claim_webhooks(now=103.0, lease_s=60.0, limit=10) == []  # leased: nobody else sends it
    await database.webhook_attempted("evt_1", status=500, error="HTTP 500", delivered_at=None,
                                     next_attempt_at=110.0, failed_at=None)
    assert await database.claim_webhooks(now=105.0, lease_s=60.0, limit=10) == []  # not due yet
    [again] = await database.claim_webhooks(now=111.0, lease_s=60.0, limit=10)
    assert (again.id, again.attempts, again.last_status) == ("evt_1", 1, 500)
    await database.webhook_attempted("evt_1", status=200, error=None, delivered_at=112.0, next_attempt_at=None,
                                     failed_at=None)
    assert await database.claim_webhooks(now=1_000.0, lease_s=60.0, limit=10) == []
    assert await database.webhook_counts() == {"delivered": 1, "failed": 0, "pending": 0}

async def test_characters_round_trip_list_per_team_delete_and_key_mappings(database: Database) -> None:
    clip = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256))
    mine = CharacterRecord(id="char_a", team="alpha", name="Mossy", created_at=1.0, media=clip)
    other = CharacterRecord(id="char_b", team="beta", name="Rex", created_at=2.0, media=b"x", source="video",
                            source_video_id="video_1")
    for record in (mine, other):
        await database.insert_character(record)
    assert await database.get_character("char_a") == mine
    assert await database.get_character("char_b") == other
    assert await database.get_character("char_nope") is None
    assert [c.id for c in await database.list_characters("alpha")] == ["char_a"]
    assert await database.character_keys(["char_a", "char_b"]) == {"char_a": {}, "char_b": {}}
    await database.save_character_key("char_a", "sim:1", "char_up_1")
    await database.save_character_key("char_a", "sim:2", "char_up_2")
    await database.save_character_key("char_a", "sim:2", "char_up_3")  # made again on that key
    assert await database.character_keys(["char_a"]) == {"char_a": {"sim:1": "char_up_1", "sim:2": "char_up_3"}}
    assert await database.delete_character("char_a") is True
    assert await database.delete_character("char_a") is False
    assert await database.list_characters("alpha") == []
    assert (await database.get_character("char_a")).deleted is True


async def test_a_sqlite_file_from_before_edits_gains_their_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, team TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,"
                " upstream_model TEXT NOT NULL, prompt TEXT NOT NULL, size TEXT NOT NULL, seconds INTEGER NOT NULL,"
                " created_at REAL NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,"
                " upstream TEXT NOT NULL DEFAULT '', upstream_key TEXT NOT NULL DEFAULT '',"
                " upstream_job_id TEXT NOT NULL DEFAULT '', error_code TEXT, error_message TEXT,"
                " refused INTEGER NOT NULL DEFAULT 0, completed_at REAL, cache_key TEXT, remixed_from TEXT,"
                " request_id TEXT NOT NULL DEFAULT '', user TEXT, price REAL NOT NULL DEFAULT 0,"
                " has_thumbnail INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, reservation_id TEXT)")
    old.execute("INSERT INTO jobs (id, team, key_id, model, upstream_model, prompt, size, seconds, created_at, status)"
                " VALUES ('video_old', 'alpha', 'k', 'sora-2', 'sora-2', 'p', '720x1280', 4, 1.0, 'completed')")
    old.commit()
    old.close()
    db = SQLiteDatabase(str(path))
    try:
        old_job = await db.get_job("video_old")
        assert (old_job.base_seconds, old_job.progress_estimated, old_job.queue_position) == (0, False, None)
        await db.insert_job(job("video_new", extended_from="video_old", base_seconds=4, seconds=8))
        new = await db.get_job("video_new")
        assert (new.extended_from, new.base_seconds, new.seconds) == ("video_old", 4, 8)
    finally:
        await db.close()


async def test_the_sqlite_write_ahead_log_is_copied_back_while_writes_go_on(tmp_path: Path) -> None:
    """Checkpoints run beside the writes: the log stays about one checkpoint's worth of pages, and every row is
    in the database file once it is closed."""
    from gateway.backends import sqlite as sqlite_backend

    database = SQLiteDatabase(str(tmp_path / "gateway.db"))
    wal = tmp_path / "gateway.db-wal"
    sizes = []
    for batch in range(12):
        await asyncio.gather(*(database.ledger_insert(LedgerRow(
            request_id=f"req-{batch}-{i}", time=time.time(), team="alpha", key_id="key_1", model="sora-2",
            size="720x1280", seconds=4, outcome="cache_hit")) for i in range(sqlite_backend.CHECKPOINT_ROWS)))
        if database._checkpoint is not None:
            await database._checkpoint
        sizes.append(wal.stat().st_size)
    assert max(sizes) < 4 * min(sizes[1:]), sizes  # without checkpoints it grows with every batch, 12 times over
    await database.close()
    reopened = SQLiteDatabase(str(tmp_path / "gateway.db"))
    rows = reopened.conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
    await reopened.close()
    assert rows == 12 * sqlite_backend.CHECKPOINT_ROWS
