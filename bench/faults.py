"""Waste ratio under faults: 200 requests through a pool of four keys where one key is failing.

For each fault type in turn, the gateway and the simulator run in this process (threads, real sockets);
the figure is upstream calls per successful job, beside the same run with four healthy keys.

    .venv/bin/python bench/faults.py [--requests 200] [--concurrency 20] [--kind videos|gemini|…]

`--kind` runs the same faults against a provider kind's fake (its own paths, key header and error shapes).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.simulator.app import SimulatorSettings, create_simulator_app
from tests.support import ALPHA_KEY, ServerThread, base_config, running_gateway

FAULTS = ["none", "429", "401", "500", "flaky", "hang"]
# kind → (the fake's API root, the upstream model a job asks for)
KINDS = {"videos": ("/v1", "sora-2"), "gemini": ("/v1beta", "veo-3.1-generate-preview"),
         "openrouter": ("/api/v1", "google/veo-3.1"), "fal": ("", "fal-ai/veo3.1/fast"),
         "replicate": ("/v1", "google/veo-3.1"), "runway": ("/v1", "veo3.1_fast")}


def run(fault: str, requests: int, concurrency: int, kind: str = "videos") -> dict:
    sim_settings = SimulatorSettings(kind=kind, duration_s=0.2, retry_after_s=5.0)
    root, upstream_model = KINDS[kind]
    with ServerThread(create_simulator_app(sim_settings)) as sim, tempfile.TemporaryDirectory() as tmp:
        bad = [] if fault == "none" else [f"sk-{fault}-bad"]
        keys = bad + [f"sk-good-{i}" for i in range(4 - len(bad))]
        raw = base_config(Path(tmp), sim.url + root, kind=kind)
        raw["upstreams"][0].update(keys=keys, timeout_s=1.0, poll_interval_s=0.1, max_concurrent_per_key=100)
        raw["models"]["sora-2"].update(upstream_model=upstream_model, sizes=["1280x720"], seconds_allowed=[8])
        with running_gateway(raw) as gateway:
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0, timeout=60)

            def one(i: int) -> bool:
                try:
                    c = client.chat.completions.create(model="sora-2",
                                                       messages=[{"role": "user", "content": f"scene {i}"}])
                    return c.model_extra["video"]["status"] == "completed"
                except openai.APIError:
                    return False

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                ok = sum(pool.map(one, range(requests)))
            elapsed = time.perf_counter() - start
        state = sim.app.state.sim
        calls = len(state.calls)
        creates = state.count(method="POST")
        bad_calls = sum(1 for c in state.calls if c.key in bad)
    return {"kind": kind, "fault": fault, "requests": requests, "succeeded": ok, "upstream_calls": calls,
            "create_calls": creates, "calls_to_bad_key": bad_calls,
            "waste_ratio": round(calls / ok, 3) if ok else None,
            "create_ratio": round(creates / ok, 3) if ok else None, "seconds": round(elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--kind", choices=sorted(KINDS), default="videos")
    args = parser.parse_args()
    results = [run(f, args.requests, args.concurrency, args.kind) for f in FAULTS]
    print(json.dumps({"benchmark": "faults", "results": results}))
    for r in results:
        print(f"fault={r['fault']:<6} served {r['succeeded']}/{r['requests']}  upstream calls/job "
              f"{r['waste_ratio']}  creates/job {r['create_ratio']}  calls to the bad key {r['calls_to_bad_key']}")


if __name__ == "__main__":
    main()
