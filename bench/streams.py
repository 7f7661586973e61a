"""N concurrent streaming generations through the gateway, against the simulated upstream, in one run.

The simulator and the gateway each run in their own process; this process is the load generator. In order:
warm both up, send N concurrent `POST /v1/videos` straight to the simulator (the same-run reference for
time to first byte), reset the simulator's call log, then open N concurrent streaming chat completions on the
gateway and follow each to its end. Prints one JSON object with every figure, then one readable line.

    .venv/bin/python bench/streams.py --n 1000
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    LOOPBACK,
    Child,
    Exchange,
    build_request,
    cli_command,
    exchange,
    free_port,
    ms,
    percentile,
    proc_cpu_s,
    proc_cpu_split_s,
    proc_fds,
    proc_status,
    raise_fd_limit,
    self_cpu_s,
)
from gateway.core.auth import hash_key

TEAM_KEY = "sk-bench-team-" + "0" * 24
UPSTREAM_KEY = "sk-bench-upstream-1"  # no fault prefix: the simulator treats it as healthy
SLOW_CREATE_KEY = "sk-slowcreate-bench-1"  # with --create-delay: every create takes that long
DIRECT_KEY = "sk-bench-direct-1"
ADMIN_KEY = "sk-bench-admin-" + secrets.token_hex(8)
HISTOGRAM_BUCKET = re.compile(rb'^(sora_gateway_[a-z_]+)_bucket\{[^}]*le="([^"]+)"[^}]*\} ([\d.e+]+)$', re.M)
# the gateway's own histograms read before and after the run: name in the report -> metric
GATEWAY_HISTOGRAMS = {"gateway_side_first_chunk_s": b"sora_gateway_stream_first_chunk_seconds",
                      "event_loop_lag_s": b"sora_gateway_event_loop_lag_seconds"}
POLL_PATH = re.compile(r"^/v1/videos/[^/]+$")
CONTENT_PATH = re.compile(r"^/v1/videos/[^/]+/content$")


class Aborted(Exception):
    pass


def gateway_config(data: Path, port: int, upstream_port: int, args: argparse.Namespace) -> str:
    return f"""
[server]
public_url = "http://{LOOPBACK}:{port}"
signing_secret = "bench-signing-secret-{secrets.token_hex(8)}"
admin_keys = ["{ADMIN_KEY}"]
ping_interval_s = {args.ping_interval}

[storage]
database = "sqlite:///{data}/gateway.db"
videos_dir = "{data}/videos"

[[upstreams]]
name = "sim"
kind = "videos"
base_url = "http://{LOOPBACK}:{upstream_port}/v1"
keys = ["{SLOW_CREATE_KEY if args.create_delay else UPSTREAM_KEY}"]
max_concurrent_per_key = 100000
poll_interval_s = {args.poll_interval}
timeout_s = 30
job_timeout_s = 3600

[models."sora-2"]
upstreams = ["sim"]
upstream_model = "sora-2"

[[teams]]
name = "bench"
keys = ["{hash_key(TEAM_KEY)}"]
"""


def chat_request(port: int, i: int, run: str) -> bytes:
    body = orjson.dumps({
        "model": "sora-2", "stream": True,
        # a distinct prompt per stream: every stream is its own job, never a cache hit or a joined job
        "messages": [{"role": "user", "content": f"benchmark stream {run}-{i}: a paper boat on a river"}],
    })
    headers = {"Authorization": f"Bearer {TEAM_KEY}", "Content-Type": "application/json",
               "Accept": "text/event-stream"}
    return build_request("POST", port, "/v1/chat/completions", headers, body)


def direct_request(port: int, i: int, run: str) -> bytes:
    body = orjson.dumps({"model": "sora-2", "prompt": f"benchmark direct {run}-{i}: a paper boat on a river",
                         "size": "720x1280", "seconds": "4"})
    headers = {"Authorization": f"Bearer {DIRECT_KEY}", "Content-Type": "application/json"}
    return build_request("POST", port, "/v1/videos", headers, body)


async def httpx_stream(client: httpx.AsyncClient, port: int, i: int, run: str, result: Exchange) -> Exchange:
    """The same stream through httpx, to check that the lean client measures what a common client sees."""
    body = orjson.dumps({"model": "sora-2", "stream": True, "messages": [
        {"role": "user", "content": f"benchmark stream {run}-{i}: a paper boat on a river"}]})
    result.t_start = time.perf_counter()
    try:
        async with client.stream("POST", f"http://{LOOPBACK}:{port}/v1/chat/completions", content=body,
                                 headers={"Authorization": f"Bearer {TEAM_KEY}",
                                          "Content-Type": "application/json"}) as response:
            result.t_first_byte = result.t_connected = time.perf_counter()
            result.status = response.status_code
            if response.status_code != 200:
                result.body = (await response.aread())[:2000]
                result.outcome = f"http_{response.status_code}"
                return result
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    result.pings += 1
                elif line.startswith("data:"):
                    result.events += 1
                    if result.t_first_event is None:
                        result.t_first_event = time.perf_counter()
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        result.saw_done = True
                        continue
                    document = orjson.loads(payload)
                    if "error" in document:
                        result.outcome = f"error_event:{(document['error'] or {}).get('code')}"
                    for choice in document.get("choices") or ():
                        if choice.get("finish_reason"):
                            result.finish_reason = choice["finish_reason"]
                            result.video_url = (document.get("video") or {}).get("url")
        if result.outcome == "pending":
            ok = result.finish_reason == "stop" and result.video_url and result.saw_done
            result.outcome = "ok" if ok else (f"finish:{result.finish_reason}" if result.finish_reason
                                             else "no_final_chunk")
    except httpx.HTTPError as exc:
        result.outcome = f"client_error:{type(exc).__name__}"
    finally:
        result.t_end = time.perf_counter()
    return result


class Monitor:
    """Samples CPU and memory of the children and of this process once a second during a burst."""

    def __init__(self, pids: dict[str, int], results: list[Exchange], label: str, quiet: bool) -> None:
        self.pids = pids
        self.results = results
        self.label = label
        self.quiet = quiet
        self.samples: list[dict[str, float]] = []
        self.max_fds = 0
        self.max_hwm_kb = 0  # kept in case the gateway dies before the final reading

    async def run(self) -> None:
        last = cpu_snapshot(self.pids)
        last_t = time.perf_counter()
        t0 = last_t
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            cpu = cpu_snapshot(self.pids)
            sample = {name: (cpu[name] - last[name]) / (now - last_t) for name in cpu}
            last, last_t = cpu, now
            self.samples.append(sample)
            if "gateway" in self.pids:
                self.max_fds = max(self.max_fds, proc_fds(self.pids["gateway"]))
                self.max_hwm_kb = max(self.max_hwm_kb, proc_status(self.pids["gateway"]).get("VmHWM", 0))
            if not self.quiet:
                self._print(now - t0, sample)

    def _print(self, elapsed: float, sample: dict[str, float]) -> None:
        connected = sum(r.t_connected is not None for r in self.results)
        first = sum(r.t_first_event is not None or r.t_first_byte is not None for r in self.results)
        ended = sum(r.t_end is not None for r in self.results)
        ok = sum(r.outcome == "ok" for r in self.results)
        rss = proc_status(self.pids["gateway"]).get("VmRSS", 0) // 1024 if "gateway" in self.pids else 0
        cpu = " ".join(f"{name} {share * 100:.0f}%" for name, share in sample.items())
        print(f"  [{self.label} {elapsed:5.1f}s] connected {connected} first {first} ended {ended} ok {ok} | "
              f"cpu {cpu} | gateway rss {rss} MB", file=sys.stderr, flush=True)

    def cpu_summary(self) -> dict[str, dict[str, float]]:
        summary = {}
        for name in self.samples[0] if self.samples else ():
            shares = [s[name] for s in self.samples]
            summary[name] = {"mean": round(sum(shares) / len(shares), 3), "max": round(max(shares), 3)}
        return summary


async def burst(n: int, make: Callable[[int, Exchange], Awaitable[Exchange]], deadline: float,
                monitor: Monitor | None, ramp_s: float) -> float:
    """Start n exchanges at once (or spread over ramp_s) and wait for all of them or the deadline."""
    results = monitor.results if monitor else [Exchange() for _ in range(n)]

    async def one(i: int) -> None:
        if ramp_s:
            await asyncio.sleep(ramp_s * i / n)
        await make(i, results[i])

    watcher = asyncio.create_task(monitor.run()) if monitor else None
    started = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    try:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        if watcher:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    for result in results:
        if result.outcome == "pending":
            result.outcome = "timeout"
    return time.perf_counter() - started


async def wait_ready(child: Child, port: int, path: str, deadline: float) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if not child.alive():
                raise Aborted(f"{child.name} exited during start:\n{child.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://{LOOPBACK}:{port}{path}")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise Aborted(f"{child.name} not ready in time:\n{child.log_tail()}")
            await asyncio.sleep(0.05)


def summarize_streams(results: list[Exchange]) -> dict:
    outcomes = Counter(r.outcome for r in results)
    first = [r.t_first_event - r.t_start for r in results if r.t_first_event is not None]
    connect = [r.t_connected - r.t_start for r in results if r.t_connected is not None]
    whole = [r.t_end - r.t_start for r in results if r.outcome == "ok"]
    examples = {}
    for r in results:
        if r.outcome != "ok" and r.outcome not in examples:
            examples[r.outcome] = (r.detail or r.body.decode(errors="replace"))[:300]
    return {
        "outcomes": dict(outcomes.most_common()),
        "failure_examples": examples,
        "first_chunk_ms": {"p50": ms(percentile(first, 50)), "p99": ms(percentile(first, 99)),
                           "max": ms(max(first, default=None)), "count": len(first)},
        "connect_ms": {"p50": ms(percentile(connect, 50)), "p99": ms(percentile(connect, 99)),
                       "max": ms(max(connect, default=None))},
        "stream_s": {"p50": _round(percentile(whole, 50), 3), "p99": _round(percentile(whole, 99), 3),
                     "max": _round(max(whole, default=None), 3)},
        "events_per_stream": round(sum(r.events for r in results) / max(len(results), 1), 2),
        "pings_per_stream": round(sum(r.pings for r in results) / max(len(results), 1), 2),
    }


def summarize_direct(results: list[Exchange]) -> dict:
    ttfb = [r.t_first_byte - r.t_start for r in results if r.t_first_byte is not None and r.outcome == "ok"]
    connect = [r.t_connected - r.t_start for r in results if r.t_connected is not None]
    return {
        "outcomes": dict(Counter(r.outcome for r in results).most_common()),
        "ttfb_ms": {"p50": ms(percentile(ttfb, 50)), "p99": ms(percentile(ttfb, 99)),
                    "max": ms(max(ttfb, default=None)), "count": len(ttfb)},
        "connect_ms": {"p50": ms(percentile(connect, 50)), "p99": ms(percentile(connect, 99))},
    }


def upstream_calls(calls: list[dict], n: int) -> dict:
    creates = sum(c["method"] == "POST" and c["path"] == "/v1/videos" for c in calls)
    polls = sum(c["method"] == "GET" and bool(POLL_PATH.match(c["path"])) for c in calls)
    list_polls = sum(c["method"] == "GET" and c["path"] == "/v1/videos" for c in calls)
    downloads = sum(c["method"] == "GET" and bool(CONTENT_PATH.match(c["path"])) for c in calls)
    statuses = Counter(str(c["status"]) for c in calls)
    return {
        "total": len(calls), "creates": creates, "polls": polls, "list_polls": list_polls,
        "content_downloads": downloads,
        "creates_per_job": round(creates / n, 3),
        "polls_per_job": round(polls / n, 3),  # GET /v1/videos/{id}
        "list_polls_per_job": round(list_polls / n, 3),  # GET /v1/videos (one list call covers many jobs)
        "content_downloads_per_job": round(downloads / n, 3),  # one per stored variant
        "statuses": dict(statuses.most_common()),
    }


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: proc_cpu_s(pid) for name, pid in pids.items()} | {"bench": self_cpu_s()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in after}


async def gateway_histograms(port: int) -> dict[bytes, dict[str, float]]:
    """The gateway's own histograms (metric: `le` bound: cumulative count)."""
    async with httpx.AsyncClient(timeout=30) as client:
        page = await client.get(f"http://{LOOPBACK}:{port}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    found: dict[bytes, dict[str, float]] = {}
    for name, bound, count in HISTOGRAM_BUCKET.findall(page.content):
        found.setdefault(name, {})[bound.decode()] = float(count)
    return found


def bucket_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, str | None]:
    """p50 and p99 of what a histogram counted between two readings, as the bucket bound they fall under."""
    counts = [(bound, after[bound] - before.get(bound, 0.0)) for bound in after]
    total = counts[-1][1] if counts else 0.0
    return {name: next((bound for bound, count in counts if total and count >= share * total), None)
            for name, share in (("p50_le", 0.5), ("p99_le", 0.99))}


async def gateway_side(port: int, baseline: dict[bytes, dict[str, float]]) -> dict[str, dict[str, str | None]]:
    """Beside the client's figures: the time from a request reaching the gateway's app to its first chunk, which
    tells time in the gateway from time spent waiting to be accepted and read, and how late the event loop ran
    its timer while the streams ran."""
    now = await gateway_histograms(port)
    return {key: bucket_quantiles(baseline.get(metric, {}), now.get(metric, {}))
            for key, metric in GATEWAY_HISTOGRAMS.items()}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


async def run(args: argparse.Namespace, data: Path, children: list[Child], report: dict) -> None:
    """Fill `report` as the run goes, so that an aborted run still reports what it measured."""
    t_begin = time.monotonic()
    deadline = t_begin + args.timeout
    run_id = secrets.token_hex(4)
    sim_port, gw_port = free_port(), free_port()

    sim = Child("simulator", [*cli_command(), "simulator", "--host", LOOPBACK, "--port", str(sim_port),
                              "--kind", "videos", "--duration", str(args.duration),
                              "--slow", str(args.create_delay)], data / "simulator.log")
    children.append(sim)
    config_path = data / "gateway.toml"
    config_path.write_text(gateway_config(data, gw_port, sim_port, args))
    gateway = Child("gateway", [*cli_command(), "serve", "--config", str(config_path), "--host", LOOPBACK,
                                "--port", str(gw_port)], data / "gateway.log")
    children.append(gateway)
    await wait_ready(sim, sim_port, "/_sim/calls", min(deadline, time.monotonic() + 30))
    await wait_ready(gateway, gw_port, "/healthz", min(deadline, time.monotonic() + 30))
    pids = {"gateway": gateway.pid, "simulator": sim.pid}
    if not args.quiet:
        print(f"  gateway pid {gateway.pid} on :{gw_port}, simulator pid {sim.pid} on :{sim_port}, "
              f"data {data}", file=sys.stderr, flush=True)
    control = httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{sim_port}", timeout=60)

    client: httpx.AsyncClient | None = None
    if args.client == "httpx":
        limits = httpx.Limits(max_connections=args.n + 10, max_keepalive_connections=args.n + 10)
        client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(args.timeout, connect=args.timeout))

    try:
        def stream(i: int, result: Exchange) -> Awaitable[Exchange]:
            if client is not None:
                return httpx_stream(client, gw_port, i, run_id, result)
            return exchange(gw_port, chat_request(gw_port, i, run_id), result, sse=True)

        def direct(i: int, result: Exchange) -> Awaitable[Exchange]:
            return exchange(sim_port, direct_request(sim_port, i, run_id), result, sse=False)

        # warm-up: imports, first connections and the first database writes, out of the measured runs
        warm = max(1, min(args.warmup, args.n))
        warm_stream = Monitor(pids, [Exchange() for _ in range(warm)], "warm-up", True)
        await burst(warm, lambda i, r: stream(-1 - i, r), deadline, warm_stream, 0.0)
        await burst(warm, lambda i, r: direct(-1 - i, r), deadline, None, 0.0)
        bad = [r.outcome for r in warm_stream.results if r.outcome != "ok"]
        if bad:
            raise Aborted(f"warm-up streams failed: {Counter(bad)}\n{gateway.log_tail()}")

        # reference: the same concurrency straight to the simulator
        await control.post("/_sim/reset")
        direct_monitor = Monitor(pids, [Exchange() for _ in range(args.n)], "direct", args.quiet)
        cpu_before = cpu_snapshot(pids)
        direct_total = await burst(args.n, direct, deadline, direct_monitor, args.ramp)
        report["direct"] = summarize_direct(direct_monitor.results) | {
            "total_s": round(direct_total, 3), "cpu_s": cpu_delta(cpu_before, cpu_snapshot(pids))}
        await control.post("/_sim/reset")
        if time.monotonic() > deadline:
            raise Aborted(f"--timeout {args.timeout:g} s reached before the gateway run")

        # the run: N concurrent streams through the gateway
        baseline = await gateway_histograms(gw_port)
        before = proc_status(gateway.pid)
        cpu_before = cpu_snapshot(pids)
        split_before = proc_cpu_split_s(gateway.pid)
        stream_monitor = Monitor(pids, [Exchange() for _ in range(args.n)], "gateway", args.quiet)
        total = await burst(args.n, stream, deadline, stream_monitor, args.ramp)
        after = proc_status(gateway.pid)
        cpu_after = cpu_snapshot(pids)
        split_after = proc_cpu_split_s(gateway.pid)
        gateway_cpu_s = sum(split_after) - sum(split_before)  # one reading: user + system add up to it
        peak_kb = max(after.get("VmHWM", 0), stream_monitor.max_hwm_kb)
        streams = summarize_streams(stream_monitor.results)
        ok = streams["outcomes"].get("ok", 0)
        if not gateway.alive():
            streams["gateway_exit"] = {"code": gateway.process.returncode, "log_tail": gateway.log_tail()}
            report["aborted"] = f"the gateway exited with code {gateway.process.returncode} during the run"
        calls = orjson.loads((await control.get("/_sim/calls")).content)["calls"]
        inside = await gateway_side(gw_port, baseline)
        report["gateway"] = streams | {
            "completion_rate": round(ok / args.n, 4),
            "total_s": round(total, 3),
            "rss_before_mb": round(before.get("VmRSS", 0) / 1024, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "peak_rss_growth_kb_per_stream": round((peak_kb - before.get("VmRSS", 0)) / args.n, 1),
            "max_open_fds": stream_monitor.max_fds,
            "cpu_s": cpu_delta(cpu_before, cpu_after),
            "gateway_cpu_ms_per_stream": round(gateway_cpu_s * 1000 / args.n, 2),
            # of which the kernel's work for the gateway (sockets, files, fsync) and the gateway's own code
            "gateway_system_ms_per_stream": round((split_after[1] - split_before[1]) * 1000 / args.n, 2),
            "gateway_user_ms_per_stream": round((split_after[0] - split_before[0]) * 1000 / args.n, 2),
            "cpu": stream_monitor.cpu_summary(),
            **inside,
        }
        report["upstream_calls"] = upstream_calls(calls, args.n)
        first_p50 = report["gateway"]["first_chunk_ms"]["p50"]
        first_p99 = report["gateway"]["first_chunk_ms"]["p99"]
        report["ratios"] = {
            "first_chunk_vs_direct_ttfb_p50": _ratio(first_p50, report["direct"]["ttfb_ms"]["p50"]),
            "first_chunk_vs_direct_ttfb_p99": _ratio(first_p99, report["direct"]["ttfb_ms"]["p99"]),
        }
        open_streams = streams["outcomes"].get("timeout", 0)
        if open_streams:
            report["aborted"] = f"--timeout {args.timeout:g} s reached with {open_streams} streams still open"
    finally:
        await control.aclose()
        if client is not None:
            await client.aclose()
        report["wall_s"] = round(time.monotonic() - t_begin, 1)


def readable(report: dict) -> str:
    if "gateway" not in report:
        return f"streams n={report['n']}: aborted ({report.get('aborted')})"
    g, d, u, r = report["gateway"], report["direct"], report["upstream_calls"], report["ratios"]
    return (
        f"streams n={report['n']} ({report['duration_s']:g} s jobs): "
        f"{g['completion_rate'] * 100:.1f}% completed, "
        f"first chunk p50 {g['first_chunk_ms']['p50']} ms p99 {g['first_chunk_ms']['p99']} ms "
        f"(inside the gateway p50 <= {g['gateway_side_first_chunk_s']['p50_le']} s, "
        f"p99 <= {g['gateway_side_first_chunk_s']['p99_le']} s; event loop lag p99 <= "
        f"{g['event_loop_lag_s']['p99_le']} s) "
        f"(direct simulator TTFB p50 {d['ttfb_ms']['p50']} ms p99 {d['ttfb_ms']['p99']} ms: "
        f"x{r['first_chunk_vs_direct_ttfb_p50']} / x{r['first_chunk_vs_direct_ttfb_p99']}), "
        f"total {g['total_s']} s, gateway CPU {g['gateway_cpu_ms_per_stream']} ms/stream "
        f"({g['gateway_user_ms_per_stream']} user + {g['gateway_system_ms_per_stream']} system), "
        f"gateway peak RSS {g['peak_rss_mb']} MB "
        f"(+{g['peak_rss_growth_kb_per_stream']} kB/stream), "
        f"upstream per job: {u['creates_per_job']} create, "
        f"{u['polls_per_job']} polls, {u['list_polls_per_job']} list polls, "
        f"{u['content_downloads_per_job']} downloads"
        + (f" [aborted: {report['aborted']}]" if report.get("aborted") else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="concurrent streams (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds a simulated job lasts (default 5)")
    parser.add_argument("--timeout", type=float, default=300.0, help="abort the run after this (default 300)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="upstream poll_interval_s (default 1)")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="server.ping_interval_s (default 5)")
    parser.add_argument("--ramp", type=float, default=0.0, help="spread the starts over this many seconds")
    parser.add_argument("--create-delay", type=float, default=0.0,
                        help="seconds each upstream create takes (a slow provider; default 0)")
    parser.add_argument("--warmup", type=int, default=10, help="streams and direct calls before measuring")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: lean asyncio HTTP/1.1 client (default); httpx: one httpx.AsyncClient")
    parser.add_argument("--data-dir", default=None,
                        help="make the run's data directory (database, videos) in this folder (default: the system's"
                             " temporary folder); the file system under it is part of what is measured")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    fd_limit = raise_fd_limit()
    if fd_limit < 2 * args.n + 200:
        print(f"warning: RLIMIT_NOFILE is {fd_limit}; {args.n} streams need about {args.n + 100} "
              f"descriptors in this process and as many in the gateway", file=sys.stderr)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    data = Path(tempfile.mkdtemp(prefix="bench-streams-", dir=args.data_dir))
    children: list[Child] = []
    report: dict = {"benchmark": "streams", "n": args.n, "duration_s": args.duration,
                    "poll_interval_s": args.poll_interval, "ping_interval_s": args.ping_interval,
                    "client": args.client, "aborted": None}
    code = 0
    try:
        asyncio.run(run(args, data, children, report))
    except Aborted as exc:
        report["aborted"] = str(exc)
        code = 1
    except KeyboardInterrupt:
        report["aborted"] = "interrupted"
        code = 130
    finally:
        for child in reversed(children):
            child.stop()
        if report.get("aborted") and not code:
            code = 1
        if args.keep or code:
            print(f"data and logs kept in {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)
    report["fd_limit"] = fd_limit
    report["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(orjson.dumps(report).decode())
    print(readable(report))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
