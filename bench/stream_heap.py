"""Where the gateway's memory per open streaming chat completion goes: tracemalloc snapshots of the gateway
with `--n` streams held open, against the same gateway with only the warm-up streams open.

The simulator's jobs last `--duration` seconds (long, so that no stream ends while it is measured). The gateway
runs with tracemalloc on; on SIGUSR1 it writes one snapshot as it is, then one after a full collection (what
is garbage waiting for the cycle collector, and what is live). Prints the difference per stream, grouped by
the allocating line and by the allocating line with its callers, then one JSON line.

    .venv/bin/python bench/stream_heap.py --n 1000
"""
from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import LOOPBACK, Child, Exchange, cli_command, exchange, free_port, proc_status, raise_fd_limit
from bench.streams import chat_request, gateway_config, wait_ready

# Run as the gateway: tracemalloc from the first import on, and a snapshot pair on SIGUSR1.
_GATEWAY = """
import gc, os, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["HEAP_FRAMES"]))
out = os.environ["HEAP_OUT"]
count = [0]

def dump(signum, frame):
    count[0] += 1
    base = f"{out}/snap{count[0]}"
    tracemalloc.take_snapshot().dump(base + "-raw")
    gc.collect()
    tracemalloc.take_snapshot().dump(base + "-live")
    types = {}
    for o in gc.get_objects():
        name = f"{type(o).__module__}.{type(o).__qualname__}"
        n, size = types.get(name, (0, 0))
        types[name] = (n + 1, size + sys.getsizeof(o))
    with open(base + "-types", "w") as f:
        f.write(repr(types))
    os.rename(base + "-live", base + "-live.done")

signal.signal(signal.SIGUSR1, dump)
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""
_FILTERS = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<unknown>")]


async def snapshot(gateway: Child, out: Path, number: int) -> tuple[tracemalloc.Snapshot, tracemalloc.Snapshot]:
    os.kill(gateway.pid, signal.SIGUSR1)
    done = out / f"snap{number}-live.done"
    while not done.exists():
        if not gateway.alive():
            raise SystemExit(f"the gateway exited:\n{gateway.log_tail()}")
        await asyncio.sleep(0.2)
    raw = tracemalloc.Snapshot.load(str(out / f"snap{number}-raw")).filter_traces(_FILTERS)
    live = tracemalloc.Snapshot.load(str(done)).filter_traces(_FILTERS)
    return raw, live


def short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3", "/wt-rss/", "/gateway/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def by_line(snap: tracemalloc.Snapshot) -> Counter:
    sizes: Counter = Counter()
    for trace in snap.traces:
        frame = trace.traceback[-1]  # the most recent frame
        sizes[f"{short(frame.filename)}:{frame.lineno}"] += trace.size
    return sizes


def by_callers(snap: tracemalloc.Snapshot, depth: int) -> Counter:
    """Each allocation under its line and the `depth - 1` calls that led to it, innermost first."""
    sizes: Counter = Counter()
    for trace in snap.traces:
        frames = list(reversed(trace.traceback))[:depth]
        sizes[" <- ".join(f"{short(f.filename)}:{f.lineno}" for f in frames)] += trace.size
    return sizes


def table(title: str, before: Counter, after: Counter, n: int, top: int) -> list[tuple[str, float]]:
    diff = Counter({key: after[key] - before.get(key, 0) for key in after})
    for key in before:
        if key not in after:
            diff[key] = -before[key]
    rows = [(key, size / n) for key, size in diff.most_common(top)]
    print(f"\n{title}: {sum(diff.values()) / n:,.0f} B per stream", file=sys.stderr)
    for key, size in rows:
        print(f"  {size:9,.0f}  {key}", file=sys.stderr)
    return rows


async def run(args: argparse.Namespace, data: Path, children: list[Child]) -> dict:
    run_id = secrets.token_hex(4)
    sim_port, gw_port = free_port(), free_port()
    sim = Child("simulator", [*cli_command(), "simulator", "--host", LOOPBACK, "--port", str(sim_port),
                              "--kind", "videos", "--duration", str(args.duration), "--slow", "0"],
                data / "simulator.log")
    children.append(sim)
    config_path = data / "gateway.toml"
    config_path.write_text(gateway_config(data, gw_port, sim_port, argparse.Namespace(
        ping_interval=args.ping_interval, create_delay=0.0, poll_interval=args.poll_interval)))
    out = data / "heap"
    out.mkdir()
    os.environ.update(HEAP_OUT=str(out), HEAP_FRAMES=str(args.frames))
    gateway = Child("gateway", [sys.executable, "-c", _GATEWAY, "serve", "--config", str(config_path),
                                "--host", LOOPBACK, "--port", str(gw_port)], data / "gateway.log")
    children.append(gateway)
    await wait_ready(sim, sim_port, "/_sim/calls", time.monotonic() + 60)
    await wait_ready(gateway, gw_port, "/healthz", time.monotonic() + 60)

    results: list[Exchange] = []
    tasks: list[asyncio.Task] = []

    async def open_streams(count: int) -> None:
        start = len(results)
        for i in range(start, start + count):
            results.append(Exchange())
            tasks.append(asyncio.create_task(exchange(gw_port, chat_request(gw_port, i, run_id), results[i],
                                                      sse=True)))
        deadline = time.monotonic() + args.timeout
        while sum(r.t_first_event is not None for r in results) < len(results):
            ended = [r.outcome for r in results if r.t_end is not None]
            if ended:
                raise SystemExit(f"streams ended while open: {Counter(ended)}\n{gateway.log_tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"streams not open in time\n{gateway.log_tail()}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.settle)  # creates answered, every job followed and polled at least once

    try:
        await open_streams(args.warmup)
        rss0 = proc_status(gateway.pid).get("VmRSS", 0)
        raw0, live0 = await snapshot(gateway, out, 1)
        await open_streams(args.n)
        rss1 = proc_status(gateway.pid).get("VmRSS", 0)
        raw1, live1 = await snapshot(gateway, out, 2)
        ended = [r.outcome for r in results if r.t_end is not None]
        if ended:
            raise SystemExit(f"streams ended while measured: {Counter(ended)}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return analyse(args, raw0, live0, raw1, live1, out) | {
        "rss_growth_kb_per_stream_with_tracemalloc": round((rss1 - rss0) / args.n, 1)}


def load(directory: Path) -> list[tracemalloc.Snapshot]:
    return [tracemalloc.Snapshot.load(str(directory / name)).filter_traces(_FILTERS)
            for name in ("snap1-raw", "snap1-live.done", "snap2-raw", "snap2-live.done")]


def object_types(directory: Path, n: int, top: int) -> None:
    """Objects the cycle collector tracks (not strings, bytes or ints), by type: count and getsizeof per stream."""
    if not (directory / "snap1-types").exists():
        return
    before, after = (ast.literal_eval((directory / f"snap{i}-types").read_text()) for i in (1, 2))
    diff = {name: (count - before.get(name, (0, 0))[0], size - before.get(name, (0, 0))[1])
            for name, (count, size) in after.items()}
    rows = sorted(diff.items(), key=lambda item: -item[1][1])[:top]
    print(f"\ngc-tracked objects by type (getsizeof, without what they own): "
          f"{sum(size for _, size in diff.values()) / n:,.0f} B per stream", file=sys.stderr)
    for name, (count, size) in rows:
        print(f"  {size / n:9,.0f}  {count / n:6.2f}  {name}", file=sys.stderr)


def analyse(args: argparse.Namespace, raw0: tracemalloc.Snapshot, live0: tracemalloc.Snapshot,
            raw1: tracemalloc.Snapshot, live1: tracemalloc.Snapshot, directory: Path) -> dict:
    n = args.n
    raw_growth = (sum(t.size for t in raw1.traces) - sum(t.size for t in raw0.traces)) / n
    live_growth = (sum(t.size for t in live1.traces) - sum(t.size for t in live0.traces)) / n
    live_lines = table("live heap, by allocating line", by_line(live0), by_line(live1), n, args.top)
    table(f"live heap, by allocating line and {args.depth - 1} callers", by_callers(live0, args.depth),
          by_callers(live1, args.depth), n, args.top)
    table("before a collection (live and cyclic garbage), by allocating line", by_line(raw0), by_line(raw1), n,
          args.top // 2)
    object_types(directory, n, args.top)
    return {"benchmark": "stream_heap", "n": n, "warmup": args.warmup, "frames": args.frames,
            "heap_bytes_per_stream": round(live_growth), "heap_before_collection_bytes_per_stream": round(raw_growth),
            "top_lines": [[key, round(size)] for key, size in live_lines[:15]],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="streams held open while measured (default 1000)")
    parser.add_argument("--warmup", type=int, default=20, help="streams open in the baseline snapshot")
    parser.add_argument("--duration", type=float, default=900.0, help="seconds a simulated job lasts")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="upstream poll_interval_s (default 1)")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="server.ping_interval_s (default 5)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait once every stream is open")
    parser.add_argument("--frames", type=int, default=12, help="traceback depth tracemalloc keeps")
    parser.add_argument("--depth", type=int, default=4, help="frames per row of the second table (default 4)")
    parser.add_argument("--top", type=int, default=40, help="rows per table")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds the streams may take to open")
    parser.add_argument("--keep", action="store_true", help="keep the data directory, logs and snapshots")
    parser.add_argument("--load", type=Path, metavar="DIR",
                        help="analyse the snapshots of a run kept with --keep (its heap/ directory; pass its --n)")
    args = parser.parse_args(argv)
    if args.load:
        print(orjson.dumps(analyse(args, *load(args.load), args.load)).decode())
        return 0
    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    data = Path(tempfile.mkdtemp(prefix="bench-heap-"))
    children: list[Child] = []
    try:
        report = asyncio.run(run(args, data, children))
    finally:
        for child in reversed(children):
            child.stop()
        if args.keep:
            print(f"data, logs and snapshots kept in {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)
    print(orjson.dumps(report).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
