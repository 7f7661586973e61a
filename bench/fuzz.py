"""The fuzz test's generator, run longer with fresh randomness against a gateway process.

Starts the simulator and the gateway as child processes (like bench/streams.py), sends N generated requests
(tests/fuzz_inputs.py: every public endpoint, hostile values), and reports the count by status, every 5xx and
every response that is not OpenAI's error envelope, the gateway's peak RSS, and whether it is still up.

    .venv/bin/python bench/fuzz.py [--n 3000] [--seed S] [--postgres]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as seeded  # noqa: E402

from bench._common import Child, cli_command, free_port, proc_status, wait_http  # noqa: E402
from tests.fuzz_inputs import FuzzRequest, check_envelope, requests  # noqa: E402
from tests.support import base_config, to_toml  # noqa: E402

POSTGRES = os.environ.get("GATEWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--postgres", action="store_true", help="the ledger and jobs in a fresh PostgreSQL database")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    with tempfile.TemporaryDirectory(prefix="sgw-fuzz-") as tmp:
        return run(Path(tmp), args.n, seed, args.postgres)


def run(tmp: Path, n: int, seed: int, postgres: bool) -> int:
    sim_port, gw_port = free_port(), free_port()
    raw = base_config(tmp, f"http://127.0.0.1:{sim_port}/v1")
    raw["server"].update(public_url=f"http://127.0.0.1:{gw_port}", max_prompt_chars=4000)
    database = None
    if postgres:
        database = "sgw_fuzz_" + secrets.token_hex(4)
        _admin_sql(f'CREATE DATABASE "{database}"')
        raw["storage"]["database"] = POSTGRES.rpartition("/")[0] + "/" + database
    config = tmp / "gateway.toml"
    config.write_text(to_toml(raw))
    sim = Child("simulator", [*cli_command(), "simulator", "--port", str(sim_port), "--duration", "0.05"],
                tmp / "sim.log")
    gateway = Child("gateway", [*cli_command(), "serve", "--config", str(config), "--port", str(gw_port)],
                    tmp / "gw.log")
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    started = time.monotonic()
    try:
        wait_http(sim, f"http://127.0.0.1:{sim_port}/_sim/calls")
        wait_http(gateway, f"http://127.0.0.1:{gw_port}/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{gw_port}", timeout=30) as client:

            @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(requests())
            def one(request: FuzzRequest) -> None:
                try:
                    response = client.request(request.method, request.path, params=request.params,
                                              headers=request.headers, content=request.content,
                                              data=request.data, files=request.files)
                except httpx.HTTPError as exc:
                    statuses[0] += 1
                    problems.append(f"transport error {type(exc).__name__} for {request.describe()}")
                    return
                statuses[response.status_code] += 1
                if response.status_code >= 500 or check_envelope(response) is not None:
                    problems.append(f"{response.status_code} for {request.describe()}: {response.text[:300]}")

            seeded(seed)(one)()
            alive = client.get("/healthz").status_code == 200
        rss_kib = proc_status(gateway.pid).get("VmHWM", 0)
    finally:
        gateway.stop()
        sim.stop()
        if database:
            _admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    elapsed = time.monotonic() - started
    result = {"requests": sum(statuses.values()), "seed": seed, "postgres": postgres,
              "by_status": dict(sorted(statuses.items())), "server_errors": sum(v for k, v in statuses.items()
                                                                               if k >= 500 or k == 0),
              "problems": problems[:20], "alive": alive, "gateway_peak_rss_mib": round(rss_kib / 1024, 1),
              "seconds": round(elapsed, 1)}
    print(json.dumps(result))
    print(f"fuzz: {result['requests']} requests in {elapsed:.0f} s, by status {result['by_status']}, "
          f"{result['server_errors']} server errors, {len(problems)} problems, gateway "
          f"{'up' if alive else 'DOWN'}, peak RSS {result['gateway_peak_rss_mib']} MiB")
    return 0 if alive and not problems else 1



def _admin_sql(sql: str) -> None:
    import asyncio

    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
