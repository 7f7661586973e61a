"""Cache-hit throughput on one core, as a ratio to a bare Starlette route returning the same bytes.

The gateway (embedded backends, or `--shared` for PostgreSQL + Redis) and a bare Starlette app run in turn
on core 0 under uvicorn, one worker each; wrk drives them from core 1 with the same requests. A cache hit
is the full request path: auth, validation, cache lookup, rate-limit admission, ledger row, response. A
retrieve (`GET /v1/videos/{id}` of a finished video) is auth, the lookup and the Video object.

`--workers N` measures scaling instead: the shared backends with one worker and then with N, neither
pinned, wrk on the same machine (so the load generator takes its share of the same cores).

    apt-get install wrk
    .venv/bin/python bench/cache_hits.py [--seconds 5] [--connections 32] [--shared] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import proc_cpu_s
from tests.support import ALPHA_KEY, base_config, free_port, to_toml

BODY = {"model": "sora-2", "messages": [{"role": "user", "content": "a cached lighthouse at dusk"}]}
BARE_APP = '''
import sys
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
json_body, sse_body = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
video_body = open(sys.argv[3], "rb").read()

async def chat(request):
    body = await request.json()
    if body.get("stream"):
        async def gen():
            for part in sse_body.split(b"\\n\\n")[:-1]:
                yield part + b"\\n\\n"
        return StreamingResponse(gen(), media_type="text/event-stream")
    return Response(json_body, media_type="application/json")

async def video(request):
    return Response(video_body, media_type="application/json")

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/videos/{video_id}", video, methods=["GET"])])
'''
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""
WRK_GET_SCRIPT = """
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer {key}"
"""
KINDS = ("json", "stream", "video")


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def serve(argv: list[str], log: Path, pin: bool = True) -> subprocess.Popen:
    taskset = ["taskset", "-c", "0"] if pin and shutil.which("taskset") else []
    return subprocess.Popen(taskset + argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "SORA_GATEWAY_LOG_LEVEL": "warning"})


def wrk(url: str, body: dict | None, seconds: int, connections: int, workdir: Path, pin: bool = True) -> dict:
    """`body` None is a GET."""
    script = workdir / "request.lua"
    script.write_text(WRK_GET_SCRIPT.format(key=ALPHA_KEY) if body is None
                      else WRK_SCRIPT.format(body=json.dumps(body), key=ALPHA_KEY))
    taskset = ["taskset", "-c", "1"] if pin and shutil.which("taskset") else []
    threads = "-t1" if pin else "-t2"
    out = subprocess.run(taskset + ["wrk", threads, f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                                    str(script), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": requests, "p50_ms": _ms(p50), "p99_ms": _ms(p99),
            "non_2xx": int(errors.group(1)) if errors else 0}


def _ms(match: re.Match | None) -> float | None:
    if match is None:
        return None
    value, unit = float(match.group(1)), match.group(2)
    return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)


def run(shared: bool, seconds: int, connections: int, workers: int = 1, pin: bool = True,
        bare: bool = True, rounds: int = 1) -> dict:
    """The gateway and, with `bare`, the bare Starlette app up side by side; each figure measured on one and then
    the other in turn, `rounds` times, so that both see the machine as it was in the same few seconds."""
    python = sys.executable
    cli = str(Path(python).parent / "sora-gateway")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sim_port, gw_port, bare_port = free_port(), free_port(), free_port()
        servers = [serve([cli, "simulator", "--port", str(sim_port), "--duration", "0.2"], work / "sim.log", pin)]
        raw = base_config(work, f"http://127.0.0.1:{sim_port}/v1")
        raw["server"]["public_url"] = f"http://127.0.0.1:{gw_port}"
        raw["teams"][0]["quotas"] = {"requests_per_minute": 10_000_000}  # admission runs on every hit
        if shared:
            raw["storage"]["database"] = os.environ.get("GATEWAY_BENCH_POSTGRES",
                                                        "postgresql://postgres@127.0.0.1:5432/test")
            raw["storage"]["redis"] = "redis://127.0.0.1:6379/0"
            raw["storage"]["redis_prefix"] = f"sgwbench:{os.getpid()}:{time.time_ns()}:"
        (work / "gateway.toml").write_text(to_toml(raw))
        servers.append(serve([cli, "serve", "--config", str(work / "gateway.toml"), "--port", str(gw_port),
                              "--workers", str(workers)], work / "gateway.log", pin))
        try:
            wait_ready(f"http://127.0.0.1:{sim_port}/_sim/calls")
            wait_ready(f"http://127.0.0.1:{gw_port}/healthz")
            headers = {"authorization": f"Bearer {ALPHA_KEY}"}
            url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            json_body = httpx.post(url, json=BODY, headers=headers, timeout=60).content  # the miss
            hit = httpx.post(url, json=BODY, headers=headers)
            assert hit.headers.get("x-cache") == "hit", (hit.status_code, hit.text)
            sse_body = httpx.post(url, json={**BODY, "stream": True}, headers=headers).content
            video_url = f"http://127.0.0.1:{gw_port}/v1/videos/{json.loads(json_body)['video']['id']}"
            video_body = httpx.get(video_url, headers=headers).raise_for_status().content
            (work / "body.json").write_bytes(json_body)
            (work / "body.sse").write_bytes(sse_body)
            (work / "body.video").write_bytes(video_body)
            targets = {"gateway": (url, video_url, headers, servers[1].pid)}
            if bare:
                (work / "bare.py").write_text(BARE_APP)
                servers.append(serve([python, "-c", f"import sys; sys.argv[1:] = ['{work}/body.json',"
                                      f" '{work}/body.sse', '{work}/body.video']; exec(open('{work}/bare.py').read());"
                                      f" import uvicorn; uvicorn.run(app, port={bare_port}, log_level='warning')"],
                                     work / "bare.log"))
                wait_ready(f"http://127.0.0.1:{bare_port}/")
                targets["bare_starlette"] = (f"http://127.0.0.1:{bare_port}/v1/chat/completions",
                                             f"http://127.0.0.1:{bare_port}/v1/videos/video_bare", {},
                                             servers[-1].pid)
            results = _measure(targets, seconds, connections, work, pin, rounds)
        finally:
            for server in reversed(servers):
                server.terminate()
                server.wait(15)
    if bare:
        results["ratio_to_bare"] = {kind: _median(results["ratio_rounds"][kind]) for kind in KINDS}
        # CPU per request, bare over gateway: what the throughput ratio is on a core nobody else takes time from
        results["cpu_ratio_to_bare"] = {kind: _median(results["cpu_ratio_rounds"][kind]) for kind in KINDS}
    return results


def _measure(targets: dict[str, tuple[str, str, dict, int]], seconds: int, connections: int, work: Path,
             pin: bool, rounds: int) -> dict:
    """Each kind on every target in turn, `rounds` times; a target's figures are those of its median round.
    Each run also reads the server process's CPU, as µs per request (one worker: the process wrk talks to)."""
    runs: dict[str, dict[str, list[dict]]] = {name: {kind: [] for kind in KINDS} for name in targets}
    for _ in range(rounds):
        for kind in KINDS:
            for name, (url, video_url, _, pid) in targets.items():
                body = {"json": BODY, "stream": {**BODY, "stream": True}, "video": None}[kind]
                before = proc_cpu_s(pid)
                result = wrk(video_url if kind == "video" else url, body, seconds, connections, work, pin)
                result["cpu_us_per_request"] = round((proc_cpu_s(pid) - before) / max(result["requests"], 1) * 1e6, 1)
                runs[name][kind].append(result)
    results: dict = {}
    for name, (url, video_url, headers, _) in targets.items():
        results[name] = {kind: sorted(runs[name][kind], key=lambda r: r["rps"])[rounds // 2] for kind in KINDS}
        if rounds > 1:
            results[name]["rps_rounds"] = {kind: [r["rps"] for r in runs[name][kind]] for kind in KINDS}
        results[name]["sequential_p50_ms"] = _sequential_p50(url, headers)
        results[name]["video_sequential_p50_ms"] = _sequential_p50(video_url, headers, method="GET")
    if "bare_starlette" in targets:
        pairs = {kind: list(zip(runs["gateway"][kind], runs["bare_starlette"][kind])) for kind in KINDS}
        results["ratio_rounds"] = {kind: [round(g["rps"] / b["rps"], 3) for g, b in pairs[kind]] for kind in KINDS}
        results["cpu_ratio_rounds"] = {kind: [round(b["cpu_us_per_request"] / g["cpu_us_per_request"], 3)
                                              for g, b in pairs[kind]] for kind in KINDS}
    return results


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _sequential_p50(url: str, headers: dict, count: int = 300, method: str = "POST") -> float:
    """Median latency of one request at a time over a kept-alive connection."""
    timings = []
    with httpx.Client(headers=headers) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.request(method, url, json=BODY if method == "POST" else None).raise_for_status()
            timings.append((time.perf_counter() - start) * 1000)
    return round(sorted(timings)[count // 2], 3)


def scaling(workers: int, seconds: int, connections: int) -> dict:
    """Hit throughput (`stream: false`) of the shared backends with one worker and with `workers`, unpinned."""
    one = run(True, seconds, connections, 1, pin=False, bare=False)["gateway"]
    many = run(True, seconds, connections, workers, pin=False, bare=False)["gateway"]
    return {"workers": workers, "one_worker": one, "n_workers": many,
            "ratio": {kind: round(many[kind]["rps"] / one[kind]["rps"], 3) for kind in KINDS}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the gateway and the bare app in turn this many times; report the median")
    parser.add_argument("--shared", action="store_true", help="PostgreSQL + Redis backends (local servers)")
    parser.add_argument("--compare", action="store_true", help="embedded and shared backends, same run")
    parser.add_argument("--workers", type=int, default=0,
                        help="shared backends, this many workers against one, on every core (no bare run)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    report: dict = {"benchmark": "cache_hits", "seconds": args.seconds, "connections": args.connections,
                    "rounds": args.rounds}
    if args.workers:
        report["scaling"] = s = scaling(args.workers, args.seconds, args.connections)
        print(json.dumps(report))
        for kind in KINDS:
            print(f"{kind}: 1 worker {s['one_worker'][kind]['rps']:.0f} req/s, {args.workers} workers "
                  f"{s['n_workers'][kind]['rps']:.0f} req/s: x{s['ratio'][kind]} (shared backends, wrk on the"
                  f" same {os.cpu_count()} cores)")
        return
    backends = ["embedded", "shared"] if args.compare else ["shared" if args.shared else "embedded"]
    for backend in backends:
        report[backend] = run(backend == "shared", args.seconds, args.connections, rounds=args.rounds)
    if args.compare:
        e, s = report["embedded"]["gateway"], report["shared"]["gateway"]
        report["shared_vs_embedded"] = {
            "rps_ratio": round(s["json"]["rps"] / e["json"]["rps"], 3),
            "added_latency_ms_sequential_p50": round(s["sequential_p50_ms"] - e["sequential_p50_ms"], 3),
        }
    print(json.dumps(report))
    for backend in backends:
        g, b, ratio = report[backend]["gateway"], report[backend]["bare_starlette"], report[backend]["ratio_to_bare"]
        print(f"cache hits ({backend}): stream=false {g['json']['rps']:.0f} req/s (bare Starlette "
              f"{b['json']['rps']:.0f}, ratio {ratio['json']}), single-request p50 {g['sequential_p50_ms']} ms "
              f"(bare {b['sequential_p50_ms']} ms); stream=true {g['stream']['rps']:.0f} req/s "
              f"(bare {b['stream']['rps']:.0f}, ratio {ratio['stream']}); GET /v1/videos/{{id}} "
              f"{g['video']['rps']:.0f} req/s (bare {b['video']['rps']:.0f}, ratio {ratio['video']}), "
              f"single-request p50 {g['video_sequential_p50_ms']} ms (bare {b['video_sequential_p50_ms']} ms)"
              + (f"; ratios are medians of {args.rounds} rounds, each the gateway then the bare app" if args.rounds > 1
                 else ""))
        cpu = report[backend]["cpu_ratio_to_bare"]
        print(f"  by CPU per request (bare / gateway): stream=false {cpu['json']} ({g['json']['cpu_us_per_request']}"
              f" against {b['json']['cpu_us_per_request']} µs), stream=true {cpu['stream']}"
              f" ({g['stream']['cpu_us_per_request']} against {b['stream']['cpu_us_per_request']} µs), GET"
              f" /v1/videos/{{id}} {cpu['video']} ({g['video']['cpu_us_per_request']} against"
              f" {b['video']['cpu_us_per_request']} µs)")
    if args.compare:
        c = report["shared_vs_embedded"]
        print(f"shared backends (PostgreSQL + Redis) vs embedded: {c['rps_ratio']}x the hit throughput, "
              f"+{c['added_latency_ms_sequential_p50']} ms per request (p50, one at a time)")


if __name__ == "__main__":
    main()
