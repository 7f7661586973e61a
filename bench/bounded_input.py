"""What large input costs the gateway: peak memory for big bodies, and event-loop stalls during a usage report.

Each memory case starts a fresh gateway process (peak RSS, VmHWM, only ever grows), sends one request and
reports the peak over the idle process:
- `json_body`: a 20 MB chat body whose bulk is one ignored string field;
- `data_uri`: a chat whose image is a 20 MB data: URI (base64 wrapped every 76 characters, as MIME does);
- `padded_data_uri`: the same image size with a space after every base64 character.

The report case fills the SQLite ledger with `--rows` rows, then asks `/admin/usage` for all of them while
`/healthz` is probed every 5 ms, and reports the report's time and the slowest probe during it (against the
slowest probe with nothing else running).

    .venv/bin/python bench/bounded_input.py [--rows 300000] [--code DIR]

`--code DIR` runs the gateway from another checkout (e.g. an older commit exported with git archive), for a
before/after comparison on the same machine.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench._common import Child, cli_command, free_port, proc_status, wait_http  # noqa: E402
from tests.support import ADMIN_KEY, ALPHA_KEY, base_config, to_toml  # noqa: E402

MIB = 1024 * 1024
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def png_of(size: int) -> bytes:
    return PNG_HEADER + secrets.token_bytes(size - len(PNG_HEADER))


def chat(content) -> dict:
    return {"model": "sora-2", "messages": [{"role": "user", "content": content}]}


def image_chat(uri: str) -> dict:
    return chat([{"type": "text", "text": "a fox"}, {"type": "image_url", "image_url": {"url": uri}}])


def cases() -> dict[str, bytes]:
    body = chat("a fox")
    body["metadata"] = "x" * (20 * MIB)
    encoded = base64.b64encode(png_of(14 * MIB)).decode()
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    padded = " ".join(base64.b64encode(png_of(7 * MIB)).decode())
    return {
        "json_body": json.dumps(body).encode(),
        "data_uri": json.dumps(image_chat("data:image/png;base64," + wrapped)).encode(),
        "padded_data_uri": json.dumps(image_chat("data:image/png;base64," + padded)).encode(),
    }


class Gateway:
    def __init__(self, tmp: Path, sim_url: str, code: str | None) -> None:
        self.port = free_port()
        raw = base_config(tmp, sim_url + "/v1")
        raw["server"].update(public_url=f"http://127.0.0.1:{self.port}", max_body_bytes=26_214_400,
                             image_max_bytes=20 * MIB)
        raw["server"].pop("metrics_public", None)
        raw["cache"]["enabled"] = False
        tmp.mkdir(parents=True, exist_ok=True)
        self.path = tmp / f"gateway-{self.port}.toml"
        self.path.write_text(to_toml(raw))
        self.db = raw["storage"]["database"].removeprefix("sqlite:///")
        self.code = code
        self.child: Child | None = None

    def start(self) -> Gateway:
        env_before = os.environ.get("PYTHONPATH")
        if self.code:
            os.environ["PYTHONPATH"] = self.code
        try:
            self.child = Child("gateway", [*cli_command(), "serve", "--config", str(self.path), "--port",
                                           str(self.port)], self.path.with_suffix(".log"))
        finally:
            if env_before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = env_before
        wait_http(self.child, self.url + "/healthz")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_mib(self) -> float:
        return proc_status(self.child.pid).get("VmHWM", 0) / 1024

    def rss_mib(self) -> float:
        return proc_status(self.child.pid).get("VmRSS", 0) / 1024

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()



def memory_case(tmp: Path, sim_url: str, code: str | None, body: bytes) -> dict:
    gateway = Gateway(tmp, sim_url, code).start()
    try:
        idle = gateway.rss_mib()
        started = time.perf_counter()
        response = httpx.post(gateway.url + "/v1/chat/completions", content=body, timeout=120,
                              headers={"authorization": f"Bearer {ALPHA_KEY}", "content-type": "application/json"})
        elapsed = time.perf_counter() - started
        peak = gateway.peak_mib()
    finally:
        gateway.stop()
    body_mib = len(body) / MIB
    return {"status": response.status_code, "body_mib": round(body_mib, 1), "idle_rss_mib": round(idle, 1),
            "peak_rss_mib": round(peak, 1), "growth_mib": round(peak - idle, 1),
            "growth_x_body": round((peak - idle) / body_mib, 2), "seconds": round(elapsed, 2)}


def fill_ledger(path: str, rows: int) -> None:
    conn = sqlite3.connect(path)
    now = time.time()
    with conn:
        conn.executemany(
            "INSERT INTO ledger (request_id, time, team, key_id, model, size, seconds, outcome, cost_usd)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((f"req_bench_{i}", now - (i % 90) * 86_400 - i % 86_400, ("alpha", "beta")[i % 2], f"key_{i % 7}",
              "sora-2", "720x1280", 4, ("completed", "failed", "cache_hit")[i % 3], 0.4) for i in range(rows)))
    conn.close()


async def probe_healthz(url: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            await client.get(url + "/healthz")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
    return latencies


async def report_case(gateway: Gateway) -> dict:
    stop = asyncio.Event()
    quiet_task = asyncio.create_task(probe_healthz(gateway.url, stop))
    await asyncio.sleep(1.0)
    stop.set()
    quiet = await quiet_task
    stop = asyncio.Event()
    probes = asyncio.create_task(probe_healthz(gateway.url, stop))
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        response = await client.get(gateway.url + "/admin/usage?group_by=day",
                                    headers={"authorization": f"Bearer {ADMIN_KEY}"})
        elapsed = time.perf_counter() - started
    stop.set()
    during = await probes
    return {"status": response.status_code, "report_s": round(elapsed, 3),
            "groups": len(response.json().get("data", [])) if response.status_code == 200 else None,
            # the first probe of each series opens its connection
            "healthz_max_ms_idle": round(max(quiet[1:]) * 1000, 1),
            "healthz_max_ms_during": round(max(during[1:]) * 1000, 1),
            "healthz_probes_during": len(during)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--code", help="run the gateway from this checkout instead")
    args = parser.parse_args()
    result: dict = {"code": args.code or "this checkout"}
    with tempfile.TemporaryDirectory(prefix="sgw-input-") as tmp_name:
        tmp = Path(tmp_name)
        sim_port = free_port()
        sim = Child("simulator", [*cli_command(), "simulator", "--port", str(sim_port), "--duration", "0.2"],
                    tmp / "sim.log")
        try:
            sim_url = f"http://127.0.0.1:{sim_port}"
            wait_http(sim, sim_url + "/_sim/calls")
            for name, body in cases().items():
                result[name] = memory_case(tmp / name, sim_url, args.code, body)
            gateway = Gateway(tmp / "report", sim_url, args.code).start()
            try:
                gateway.stop()  # created the schema; fill it while nothing else writes
                fill_ledger(gateway.db, args.rows)
                gateway.start()
                result["usage_report"] = {"rows": args.rows, **asyncio.run(report_case(gateway))}
                result["usage_report"]["peak_rss_mib"] = round(gateway.peak_mib(), 1)
            finally:
                gateway.stop()
        finally:
            sim.stop()
    print(json.dumps(result))
    for name in ("json_body", "data_uri", "padded_data_uri"):
        case = result[name]
        print(f"{name}: {case['body_mib']} MiB body -> HTTP {case['status']}, peak RSS +{case['growth_mib']} MiB"
              f" ({case['growth_x_body']}x the body) in {case['seconds']} s")
    report = result["usage_report"]
    print(f"usage report over {report['rows']} rows: {report['report_s']} s; /healthz slowest "
          f"{report['healthz_max_ms_during']} ms during it ({report['healthz_max_ms_idle']} ms idle)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
