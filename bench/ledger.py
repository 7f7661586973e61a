"""The cost of the ledger write on the request path: one row per request, embedded SQLite and PostgreSQL.

Sequential writes show the latency one request pays; 50 concurrent writers show what group commit does when
requests arrive together (rows of one event-loop turn share a transaction).

    .venv/bin/python bench/ledger.py [--rows 5000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.backends.sqlite import SQLiteDatabase
from gateway.core.records import LedgerRow

POSTGRES = os.environ.get("GATEWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def row() -> LedgerRow:
    return LedgerRow(request_id="req_" + secrets.token_hex(12), time=time.time(), team="alpha", key_id="cfg_1",
                     model="sora-2", size="720x1280", seconds=4, outcome="cache_hit", latency_ms=0.0)


async def measure(db, rows: int) -> dict:
    start = time.perf_counter()
    for _ in range(rows):
        await db.ledger_insert(row())
    sequential = (time.perf_counter() - start) / rows

    async def writer(n: int) -> None:
        for _ in range(n):
            await db.ledger_insert(row())

    start = time.perf_counter()
    await asyncio.gather(*(writer(rows // 50) for _ in range(50)))
    concurrent = (time.perf_counter() - start) / (rows // 50 * 50)
    return {"sequential_us_per_row": round(sequential * 1e6, 1), "concurrent50_us_per_row": round(concurrent * 1e6, 1),
            "concurrent50_rows_per_s": round(1 / concurrent)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    report: dict = {"benchmark": "ledger_write", "rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        db = SQLiteDatabase(f"{tmp}/bench.db")
        report["sqlite"] = await measure(db, args.rows)
        await db.close()
    try:
        import asyncpg

        from gateway.backends.postgres import PostgresDatabase

        schema = "bench_" + secrets.token_hex(4)
        conn = await asyncpg.connect(POSTGRES)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            db = await PostgresDatabase.connect(POSTGRES, schema=schema)
            report["postgres"] = await measure(db, args.rows // 5)
            await db.close()
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
    except OSError as exc:
        report["postgres"] = {"skipped": str(exc)}
    print(json.dumps(report))
    for name in ("sqlite", "postgres"):
        r = report[name]
        if "skipped" not in r:
            print(f"ledger write, {name}: {r['sequential_us_per_row']} µs per request alone, "
                  f"{r['concurrent50_us_per_row']} µs per request with 50 writers "
                  f"({r['concurrent50_rows_per_s']} rows/s)")


if __name__ == "__main__":
    asyncio.run(main())
