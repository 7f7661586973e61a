"""Shared benchmark plumbing: child server processes, /proc readings, percentiles, and a lean HTTP/1.1 client.

The client speaks HTTP/1.1 over asyncio protocols (one connection per exchange, no pooling) so that thousands
of concurrent streams cost the load generator little CPU: a stream is a protocol object and a buffer, and an
SSE event is a `find` in that buffer, not a trip through a general-purpose HTTP stack.
"""
from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (children inherit it); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cli_command() -> list[str]:
    """The `sora-gateway` entry point of the running interpreter's environment."""
    script = Path(sys.executable).parent / "sora-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


# Run in the child before exec: lift the descriptor limit and die with the benchmark even if it is SIGKILLed.
_CHILD_PRELUDE = f"""
import ctypes, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
try:
    ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}, 0, 0, 0)
except (OSError, AttributeError):
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


class Child:
    """A server in its own process and session, its output in a log file, always stopped by `stop()`."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_PRELUDE, *argv], cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and friends from /proc/<pid>/status, in kB."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.startswith("Vm") and rest.strip().endswith("kB"):
                    values[name] = int(rest.split()[0])
    except OSError:  # the process is gone
        pass
    return values


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds a process has used."""
    user, system = proc_cpu_split_s(pid)
    return user + system


def proc_cpu_split_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used, apart: the system part is the kernel's work for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:  # the process is gone
        return float("nan"), float("nan")
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def proc_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def build_request(method: str, port: int, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(slots=True)
class Exchange:
    """What one request saw; times are `time.perf_counter()` readings."""

    t_start: float = 0.0
    t_connected: float | None = None
    t_first_byte: float | None = None
    t_first_event: float | None = None  # first `data:` event of an SSE body
    t_end: float | None = None
    status: int | None = None
    outcome: str = "pending"  # ok | http_<status> | error_event:<code> | finish:<reason> | closed_early | ...
    events: int = 0
    pings: int = 0
    finish_reason: str | None = None
    video_url: str | None = None
    saw_done: bool = False
    body: bytes = b""  # kept for non-SSE answers and error answers only
    detail: str | None = field(default=None, repr=False)


class _HTTPProtocol(asyncio.Protocol):
    """Sends one request and reads one response: fixed-length, chunked, or an SSE stream inside chunks."""

    def __init__(self, request: bytes, result: Exchange, done: asyncio.Future, sse: bool) -> None:
        self.request = request
        self.result = result
        self.done = done
        self.sse = sse
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.headers_done = False
        self.chunked = False
        self.length: int | None = None
        self.raw = bytearray()  # undecoded chunked framing
        self.body = bytearray()  # decoded body (SSE: not yet split into events)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.result.t_connected = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        result = self.result
        if result.t_first_byte is None:
            result.t_first_byte = time.perf_counter()
        if self.headers_done:
            self._feed(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = bytes(self.head[:end]), bytes(self.head[end + 4:])
        self.head = bytearray()
        self.headers_done = True
        lines = head.split(b"\r\n")
        try:
            result.status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self._finish("bad_status_line")
            return
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
            elif name == b"content-length":
                self.length = int(value.strip())
        if result.status != 200:
            self.sse = False
        self._feed(rest)

    def _feed(self, data: bytes) -> None:
        if not self.chunked:
            self._on_body(data)
            if self.length is not None and len(self.body) >= self.length:
                self._finish(None)
            return
        raw = self.raw
        raw += data
        while True:
            line_end = raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(raw[:line_end].split(b";")[0], 16)
            if size == 0:
                self._finish(None)
                return
            if len(raw) < line_end + 2 + size + 2:
                return
            self._on_body(bytes(raw[line_end + 2:line_end + 2 + size]))
            del raw[:line_end + 2 + size + 2]
            if self.done.done():
                return

    def _on_body(self, data: bytes) -> None:
        self.body += data
        if not self.sse:
            return
        body = self.body
        while (end := body.find(b"\n\n")) >= 0:
            event = bytes(body[:end])
            del body[:end + 2]
            self._on_event(event)

    def _on_event(self, event: bytes) -> None:
        result = self.result
        if event.startswith(b":"):
            result.pings += 1
            return
        if not event.startswith(b"data:"):
            return
        payload = event[5:].strip()
        result.events += 1
        if result.t_first_event is None:
            result.t_first_event = time.perf_counter()
        if payload == b"[DONE]":
            result.saw_done = True
            return
        if b'"finish_reason":null' in payload and not payload.startswith(b'{"error"'):
            return
        document = orjson.loads(payload)
        if "error" in document:
            error = document["error"] or {}
            result.outcome = f"error_event:{error.get('code')}"
            result.detail = str(error.get("message"))[:300]
            return
        for choice in document.get("choices") or ():
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
                result.video_url = (document.get("video") or {}).get("url")

    def _finish(self, problem: str | None) -> None:
        if self.done.done():
            return
        result = self.result
        result.t_end = time.perf_counter()
        if problem is not None:
            result.outcome = problem
        elif result.status != 200:
            result.outcome = f"http_{result.status}"
            result.body = bytes(self.body[:2000])
        elif not self.sse:
            result.outcome = "ok"
            result.body = bytes(self.body)
        elif result.outcome == "pending":
            if result.finish_reason == "stop" and result.video_url and result.saw_done:
                result.outcome = "ok"
            elif result.finish_reason:
                result.outcome = f"finish:{result.finish_reason}"
            else:
                result.outcome = "no_final_chunk"
        self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.headers_done and not self.chunked and self.length is None:
                self._finish(None)  # close-delimited body
            else:
                self._finish("closed_early" if exc is None else f"connection_lost:{type(exc).__name__}")

    def abort(self, reason: str) -> None:
        self._finish(reason)


async def exchange(port: int, request: bytes, result: Exchange, *, sse: bool) -> Exchange:
    """Run one request on a fresh loopback connection; `result` is filled in as it goes (and on cancel)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    protocol = _HTTPProtocol(request, result, done, sse)
    result.t_start = time.perf_counter()
    try:
        await loop.create_connection(lambda: protocol, LOOPBACK, port)
    except OSError as exc:
        result.outcome = f"connect_error:{type(exc).__name__}:{exc.errno}"
        result.t_end = time.perf_counter()
        return result
    try:
        await done
    except asyncio.CancelledError:
        protocol.abort("timeout")
        raise
    return result


def wait_http(child: Child, url: str, timeout: float = 30.0) -> None:
    """Wait until `child` answers `url` with anything but a 5xx; raise with its log if it dies or is too slow."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not start within {timeout:g} s")
