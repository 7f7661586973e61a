"""Content downloads from the object store against the local disk, in one run.

Three child processes on loopback: the simulator, a gateway keeping videos in a folder, and a gateway keeping
them in S3 (moto's S3 server, a fourth process, stands in for the store). One video is made through each, then
replaced in its store by the same random file of `--size-mb`; the script downloads it `--rounds` times from
each, in turn, and also straight from the store by a signed URL (what `storage.serve = "redirect"` hands
clients), measuring time to first byte and throughput of the whole file and the time to first byte of a
1 KiB range request. It prints one JSON object, then one readable line.

    .venv/bin/python bench/store.py [--size-mb 64] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Child, cli_command, free_port, proc_status  # noqa: E402
from tests.support import ALPHA_KEY, base_config, to_toml  # noqa: E402

AUTH = {"authorization": f"Bearer {ALPHA_KEY}"}
REGION = "us-east-1"


def wait_ready(url: str, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not come up:\n{child.log_tail()}")


def gateway(work: Path, name: str, sim_url: str, storage: dict) -> tuple[Child, str]:
    port = free_port()
    raw = base_config(work / name, sim_url + "/v1")
    raw["server"]["public_url"] = f"http://127.0.0.1:{port}"
    raw["storage"] = {"database": f"sqlite:///{work}/{name}.db", **storage}
    (work / f"{name}.toml").write_text(to_toml(raw))
    child = Child(name, [*cli_command(), "serve", "--config", str(work / f"{name}.toml"), "--port", str(port)],
                  work / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/healthz", child)
    return child, url


def finished_video(url: str) -> str:
    video = httpx.post(url + "/v1/videos", json={"model": "sora-2", "prompt": f"bench {secrets.token_hex(4)}"},
                       headers=AUTH, timeout=30).json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/v1/videos/{video['id']}", headers=AUTH).json()["status"]
        if status == "completed":
            return video["id"]
        if status == "failed":
            raise RuntimeError("the bench video failed")
        time.sleep(0.1)
    raise RuntimeError("the bench video did not finish")


def download(client: httpx.Client, url: str, headers: dict[str, str]) -> dict:
    start = time.perf_counter()
    first = None
    size = 0
    with client.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            if first is None:
                first = time.perf_counter()
            size += len(chunk)
    end = time.perf_counter()
    return {"ttfb_ms": (first - start) * 1000, "seconds": end - start, "bytes": size,
            "mb_per_s": size / (end - start) / 1e6}


def summary(samples: list[dict], ranges: list[float]) -> dict:
    return {"ttfb_ms_p50": round(statistics.median(s["ttfb_ms"] for s in samples), 2),
            "mb_per_s_p50": round(statistics.median(s["mb_per_s"] for s in samples), 1),
            "range_ttfb_ms_p50": round(statistics.median(ranges), 2),
            "bytes": samples[0]["bytes"]}


def run(size_mb: int, rounds: int) -> dict:
    import boto3

    work = Path(tempfile.mkdtemp(prefix="sgw-bench-store-"))
    bucket, secret = f"bench-{secrets.token_hex(4)}", "bench-secret-" + secrets.token_hex(8)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY=secret, AWS_REGION=REGION,
                      SORA_GATEWAY_LOG_LEVEL="warning")
    s3_port, sim_port = free_port(), free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    children = [Child("s3", [moto, "-H", "127.0.0.1", "-p", str(s3_port)], work / "s3.log"),
                Child("simulator", [*cli_command(), "simulator", "--port", str(sim_port), "--duration", "0.2"],
                      work / "simulator.log")]
    endpoint, sim_url = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{sim_port}"
    try:
        wait_ready(endpoint, children[0])
        wait_ready(sim_url + "/_sim/calls", children[1])
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        s3.create_bucket(Bucket=bucket)
        local, local_url = gateway(work, "local", sim_url, {"videos": f"file://{work}/videos"})
        remote, remote_url = gateway(work, "object", sim_url, {"videos": f"s3://{bucket}/videos",
                                                                "videos_endpoint": endpoint})
        children += [local, remote]
        payload = work / "payload.mp4"
        payload.write_bytes(os.urandom(size_mb * 1024 * 1024))
        local_id, remote_id = finished_video(local_url), finished_video(remote_url)
        target = work / "videos" / local_id[-2:] / f"{local_id}.mp4"
        shutil.copyfile(payload, target.with_suffix(".part"))
        os.replace(target.with_suffix(".part"), target)
        s3.upload_file(str(payload), bucket, f"videos/{remote_id}.mp4")
        signed = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": f"videos/{remote_id}.mp4"},
                                           ExpiresIn=3600)
        targets = {"local_disk": (f"{local_url}/v1/videos/{local_id}/content", AUTH),
                   "object_store_proxy": (f"{remote_url}/v1/videos/{remote_id}/content", AUTH),
                   "object_store_direct": (signed, {})}
        samples: dict[str, list[dict]] = {name: [] for name in targets}
        ranges: dict[str, list[float]] = {name: [] for name in targets}
        with httpx.Client(timeout=120) as client:
            for name, (url, headers) in targets.items():  # warm-up, not measured
                download(client, url, headers)
            for _ in range(rounds):
                for name, (url, headers) in targets.items():
                    samples[name].append(download(client, url, headers))
                    ranges[name].append(download(client, url, {**headers, "range": "bytes=0-1023"})["ttfb_ms"])
        result = {name: summary(samples[name], ranges[name]) for name in targets}
        for name in targets:
            assert result[name]["bytes"] == size_mb * 1024 * 1024, name
        result["gateway_peak_rss_mb"] = {"local_disk": proc_status(local.pid).get("VmHWM", 0) / 1024,
                                         "object_store": proc_status(remote.pid).get("VmHWM", 0) / 1024}
        proxy, disk = result["object_store_proxy"], result["local_disk"]
        result["ratio_object_store_to_disk"] = {"ttfb": round(proxy["ttfb_ms_p50"] / disk["ttfb_ms_p50"], 2),
                                                "throughput": round(proxy["mb_per_s_p50"] / disk["mb_per_s_p50"], 3)}
        result.update(size_mb=size_mb, rounds=rounds)
        return result
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.size_mb, args.rounds)
    print(json.dumps(result))
    disk, proxy, direct = result["local_disk"], result["object_store_proxy"], result["object_store_direct"]
    print(f"{args.size_mb} MiB video, p50 of {args.rounds}: local disk TTFB {disk['ttfb_ms_p50']} ms,"
          f" {disk['mb_per_s_p50']} MB/s; object store through the gateway TTFB {proxy['ttfb_ms_p50']} ms,"
          f" {proxy['mb_per_s_p50']} MB/s; store direct (redirect) TTFB {direct['ttfb_ms_p50']} ms,"
          f" {direct['mb_per_s_p50']} MB/s; range TTFB disk {disk['range_ttfb_ms_p50']} ms / store"
          f" {proxy['range_ttfb_ms_p50']} ms; gateway peak RSS {result['gateway_peak_rss_mb']['object_store']:.0f}"
          " MB on the store")


if __name__ == "__main__":
    main()
