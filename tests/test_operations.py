"""What operators rely on: Prometheus metrics that move with the traffic, readiness that names what is broken,
one JSON log line per request with secrets scrubbed, and the container entry points."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse_config
from gateway.core.keypool import key_label
from gateway.observability.logs import (
    JSONFormatter,
    RedactingFilter,
    TextFormatter,
    config_secrets,
    configure_logging,
)
from tests.support import (
    ADMIN_KEY,
    ALPHA_KEY,
    BETA_KEY,
    base_config,
    free_port,
    hash_key,
    to_toml,
    wait_until,
)
from tests.test_chat import PROMPT

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
Samples = dict[tuple[str, frozenset], float]


def sdk(gateway, key: str = ALPHA_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def upstream(sim, keys: list[str]) -> dict:
    return {"name": "sim", "kind": "videos", "base_url": sim.url + "/v1", "keys": keys, "max_concurrent_per_key": 50,
            "poll_interval_s": 0.05, "timeout_s": 2, "job_timeout_s": 60, "max_retry_s": 10}


def scrape(gateway, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(gateway.url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def scrape_until(gateway, condition: Callable[[Samples], bool]) -> Samples:
    """Scrape until `condition` holds: a request is counted just after its last byte goes out."""

    def settled() -> Samples | None:
        samples = scrape(gateway)
        return samples if condition(samples) else None

    return wait_until(settled)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


# -- metrics ------------------------------------------------------------------------------------------------


def test_metrics_move_with_generations_hits_rejections_and_upstream_429s(start_simulator, start_gateway,
                                                                         no_secrets_in_logs):
    sim = start_simulator(retry_after_s=60)
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-429-a", "sk-good-b"])], teams=[
        {"name": "alpha", "keys": [hash_key(ALPHA_KEY)]},
        {"name": "beta", "keys": [hash_key(BETA_KEY)], "quotas": {"budget_usd_per_month": 0.01}},
    ])
    before = scrape(gateway)

    def grew(samples: Samples, name: str, **labels: str) -> float:
        return total(samples, name, **labels) - total(before, name, **labels)

    sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)  # a new job: the 429 key is tried first
    sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)  # the same request: a cache hit
    stream = sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "a heron taking off over a lake"}])
    assert any(chunk.choices and chunk.choices[0].finish_reason == "stop" for chunk in stream)
    with pytest.raises(openai.RateLimitError):
        sdk(gateway, BETA_KEY).chat.completions.create(model="sora-2", messages=PROMPT)

    chat = "/v1/chat/completions"
    after = scrape_until(gateway, lambda s: grew(s, "sora_gateway_requests_total", route=chat) == 4)
    assert grew(after, "sora_gateway_requests_total", route=chat, method="POST", status="200", team="alpha") == 3
    assert grew(after, "sora_gateway_requests_total", route=chat, status="429", team="beta") == 1
    assert grew(after, "sora_gateway_overhead_seconds_count", route=chat) == 4
    assert grew(after, "sora_gateway_cache_lookups_total", result="miss") == 3  # beta's too, before its rejection
    assert grew(after, "sora_gateway_cache_lookups_total", result="hit") == 1
    assert grew(after, "sora_gateway_quota_rejections_total", limit="budget_usd_per_month") == 1

    limited, good = key_label("sim", "sk-429-a"), key_label("sim", "sk-good-b")
    assert grew(after, "sora_gateway_upstream_calls_total", key=limited, operation="submit", status="429") == 1
    assert grew(after, "sora_gateway_upstream_calls_total", key=good, operation="submit", status="200") == 2
    assert grew(after, "sora_gateway_upstream_calls_total", key=good, operation="poll", status="200") >= 2
    assert grew(after, "sora_gateway_upstream_calls_total", key=good, operation="download", status="200") >= 2
    assert total(after, "sora_gateway_upstream_keys", key=limited, state="cooling") == 1
    assert total(after, "sora_gateway_upstream_keys", key=good, state="healthy") == 1

    assert grew(after, "sora_gateway_job_duration_seconds_count", upstream="sim", outcome="completed") == 2
    assert grew(after, "sora_gateway_stream_first_chunk_seconds_count", route=chat) == 1
    assert total(after, "sora_gateway_open_streams") == 0
    assert total(after, "sora_gateway_jobs", state="in_progress") == 0
    # two jobs written with their ledger rows and closed with them, one hit and one rejection recorded
    assert grew(after, "sora_gateway_ledger_write_seconds_count", operation="insert") == 4
    assert grew(after, "sora_gateway_ledger_write_seconds_count", operation="close") == 2

    text = httpx.get(gateway.url + "/metrics").text
    leaks = [secret for secret in no_secrets_in_logs if secret in text]
    assert not leaks, f"/metrics shows a key: {leaks}"
    assert "/v1/videos/video_" not in text  # routes are templates, never paths with ids


def test_metrics_routes_are_templates(gateway):
    video = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT).model_extra["video"]
    assert httpx.get(f"{gateway.url}/v1/videos/{video['id']}",
                     headers={"authorization": f"Bearer {ALPHA_KEY}"}).status_code == 200
    assert httpx.get(gateway.url + "/no/such/path").status_code == 404
    samples = scrape_until(gateway, lambda s: total(s, "sora_gateway_requests_total", route="unmatched") == 1)
    assert total(samples, "sora_gateway_requests_total", route="/v1/videos/{video_id}", status="200") == 1
    assert not [labels for name, labels in samples if video["id"] in str(labels)]


def test_the_event_loop_lag_is_measured_all_the_time(gateway):
    """Operators see how late the loop runs its work, with or without traffic: a round every half second."""
    samples = scrape_until(gateway, lambda s: total(s, "sora_gateway_event_loop_lag_seconds_count") >= 2)
    buckets = {dict(labels)["le"] for name, labels in samples if name == "sora_gateway_event_loop_lag_seconds_bucket"}
    assert {"0.001", "0.1", "+Inf"} <= buckets
    assert total(samples, "sora_gateway_event_loop_lag_seconds_bucket", le="+Inf") == total(
        samples, "sora_gateway_event_loop_lag_seconds_count")


def test_private_metrics_need_the_admin_key(simulator, start_gateway):
    gateway = start_gateway(simulator, server={"metrics_public": False})
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    assert httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {ALPHA_KEY}"}).status_code == 401
    response = httpx.get(gateway.url + "/metrics", headers=ADMIN)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "sora_gateway_requests_total" in response.text


def test_metrics_are_private_unless_the_config_opens_them(tmp_path):
    raw = base_config(tmp_path, "http://127.0.0.1:1/v1")
    del raw["server"]["metrics_public"]
    assert parse_config(raw, env={}).server.metrics_public is False  # they name teams and key fingerprints


# -- health -------------------------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_when_all_is_well(gateway):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    response = httpx.get(gateway.url + "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "store": True, "upstream_keys": True}}


def test_readyz_names_the_database_when_it_is_gone(gateway):
    gateway.app.state.gateway.db.conn.close()
    response = httpx.get(gateway.url + "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and list(body["failing"]) == ["database"]
    assert body["checks"] == {"database": False, "store": True, "upstream_keys": True}
    assert httpx.get(gateway.url + "/healthz").status_code == 200  # alive, just not ready


def test_readyz_names_upstream_keys_when_every_key_is_disabled(start_simulator, start_gateway):
    sim = start_simulator()
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-401-a", "sk-403-b"])])
    with pytest.raises(openai.InternalServerError):
        sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    response = httpx.get(gateway.url + "/readyz")
    assert response.status_code == 503
    assert list(response.json()["failing"]) == ["upstream_keys"]
    [label, _] = [k["label"] for k in httpx.get(gateway.url + "/admin/upstreams", headers=ADMIN).json()
                  ["data"][0]["keys"]]
    httpx.post(f"{gateway.url}/admin/upstreams/sim/keys/{label}/enable", headers=ADMIN).raise_for_status()
    assert httpx.get(gateway.url + "/readyz").status_code == 200


def test_cooling_keys_leave_the_gateway_ready(start_simulator, start_gateway):
    """A rate-limited key comes back by itself: taking instances out of rotation would only hurt cache hits."""
    sim = start_simulator(retry_after_s=60)
    gateway = start_gateway(sim, upstreams=[upstream(sim, ["sk-429-a"])])
    with pytest.raises(openai.InternalServerError):
        sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    assert httpx.get(gateway.url + "/readyz").status_code == 200


# -- logs ---------------------------------------------------------------------------------------------------


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """What the gateway's access logger writes, as the JSON lines `sora-gateway serve` prints."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("gateway.access")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def logged(stream: io.StringIO, request_id: str) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if request_id in line]


def test_each_request_logs_one_json_line(gateway, access_log, no_secrets_in_logs):
    first = sdk(gateway).chat.completions.with_raw_response.create(model="sora-2", messages=PROMPT)
    second = sdk(gateway).chat.completions.with_raw_response.create(model="sora-2", messages=PROMPT)
    [miss] = wait_until(lambda: logged(access_log, first.headers["x-request-id"]))
    [hit] = wait_until(lambda: logged(access_log, second.headers["x-request-id"]))
    assert miss["message"] == "POST /v1/chat/completions 200"
    assert {k: miss[k] for k in ("level", "logger", "request_id", "team", "model", "status", "cache", "route")} == {
        "level": "info", "logger": "gateway.access", "request_id": first.headers["x-request-id"], "team": "alpha",
        "model": "sora-2", "status": 200, "cache": "miss", "route": "/v1/chat/completions"}
    assert miss["upstream_key"] == key_label("sim", "sk-good-1")
    assert miss["latency_ms"] > 0 and 0 <= miss["overhead_ms"] <= miss["latency_ms"]
    assert miss["time"].endswith("Z")
    assert hit["cache"] == "hit" and hit["upstream_key"] == miss["upstream_key"]
    text = access_log.getvalue()
    assert not [secret for secret in no_secrets_in_logs if secret in text]


def test_rejected_and_unauthenticated_requests_are_logged_too(gateway, access_log):
    response = httpx.get(gateway.url + "/v1/models", headers={"authorization": "Bearer sk-wrong-key-123456"})
    assert response.status_code == 401
    [entry] = wait_until(lambda: logged(access_log, response.headers["x-request-id"]))
    assert entry["status"] == 401 and entry["team"] is None and entry["route"] == "/v1/models"
    assert "sk-wrong-key" not in access_log.getvalue()


def test_the_redaction_filter_scrubs_message_args_extras_and_tracebacks():
    relay_key = "relay-a-secret-7f3k29dk"
    record = logging.LogRecord("gateway.upstream", logging.WARNING, __file__, 1,
                               "submit with %s failed: %s", (relay_key, "401 for Bearer sk-live-0a1b2c3d4e5f"), None)
    record.headers = {"authorization": "Bearer sk-live-0a1b2c3d4e5f", "x-key": relay_key}
    record.attempts = [relay_key, 3]
    record.dsn = "postgresql://gateway:hunter2hunter2@db:5432/gateway"
    record.status = 401
    try:
        raise RuntimeError(f"upstream said no to {relay_key}")
    except RuntimeError:
        record.exc_info = sys.exc_info()

    assert RedactingFilter([relay_key]).filter(record)

    assert record.getMessage() == "submit with [redacted] failed: 401 for Bearer [redacted]"
    assert record.headers == {"authorization": "Bearer [redacted]", "x-key": "[redacted]"}
    assert record.attempts == ["[redacted]", 3]
    assert record.dsn == "postgresql://gateway:[redacted]@db:5432/gateway"
    assert record.status == 401
    for formatter in (JSONFormatter(), TextFormatter()):
        text = formatter.format(record)
        assert "upstream said no to [redacted]" in text
        assert relay_key not in text and "sk-live" not in text and "hunter2" not in text


def test_a_json_line_keeps_its_own_fields_and_redacts_a_repeated_text_every_time():
    relay_key = "relay-secret-0000"
    redacting = RedactingFilter([relay_key])
    lines = []
    for _ in range(2):  # the second time the text comes from the redactor's memory
        record = logging.LogRecord("gateway.jobs", logging.INFO, __file__, 1, "job finished", None, None)
        record.level, record.reason, record.job_id = "debug", f"upstream said no to {relay_key}", "video_" + "0" * 32
        assert redacting.filter(record)
        lines.append(json.loads(JSONFormatter().format(record)))
    for line in lines:
        assert line["level"] == "info" and line["message"] == "job finished"  # a field does not replace them
        assert line["reason"] == "upstream said no to [redacted]" and line["job_id"] == "video_" + "0" * 32


def test_config_secrets_cover_every_key_the_config_holds(tmp_path):
    raw = base_config(tmp_path, "http://127.0.0.1:1/v1", keys=["sk-relay-one-1", "relay-two-0000"])
    raw["server"]["admin_keys"] = [ADMIN_KEY, hash_key("sk-hashed-admin")]
    raw["storage"]["database"] = "postgresql://gateway:pg-pass-1234@db:5432/gateway"
    raw["storage"]["redis"] = "redis://:redis-pass-5678@redis:6379/0"
    config = parse_config(raw, env={})
    assert set(config_secrets(config)) == {config.server.signing_secret, ADMIN_KEY, "sk-relay-one-1",
                                          "relay-two-0000", "pg-pass-1234", "redis-pass-5678"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = {name: (logging.getLogger(name).handlers, logging.getLogger(name).propagate)
               for name in ("uvicorn", "uvicorn.error")}
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for name, old_level in levels.items():
        logging.getLogger(name).setLevel(old_level)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, (old_handlers, propagate) in uvicorn.items():
        logging.getLogger(name).handlers, logging.getLogger(name).propagate = old_handlers, propagate


def test_configure_logging_takes_level_and_format_from_config_and_environment(tmp_path, restore_logging):
    raw = base_config(tmp_path, "http://127.0.0.1:1/v1", keys=["relay-key-abcdef"])
    raw["server"].update(log_level="warning", log_format="text")
    config = parse_config(raw, env={})

    out = io.StringIO()
    configure_logging(config, stream=out, environ={})
    logging.getLogger("gateway.test").info("not shown")
    logging.getLogger("gateway.test").warning("relay %s refused", "relay-key-abcdef", extra={"team": "alpha"})
    assert "not shown" not in out.getvalue()
    assert "WARNING gateway.test: relay [redacted] refused team=alpha" in out.getvalue()

    out = io.StringIO()
    configure_logging(config, stream=out, environ={"SORA_GATEWAY_LOG_LEVEL": "debug",
                                                   "SORA_GATEWAY_LOG_FORMAT": "json"})
    assert [h.get_name() for h in logging.getLogger().handlers].count("sora-gateway") == 1
    logging.getLogger("gateway.test").debug("now shown", extra={"job_id": "video_1"})
    entry = json.loads(out.getvalue())
    assert entry["message"] == "now shown" and entry["level"] == "debug" and entry["job_id"] == "video_1"

    out = io.StringIO()  # not a terminal: auto means JSON
    raw["server"]["log_format"] = "auto"
    configure_logging(parse_config(raw, env={}), stream=out, environ={})
    logging.getLogger("gateway.test").warning("auto")
    assert json.loads(out.getvalue())["message"] == "auto"


# -- container entry points ---------------------------------------------------------------------------------


def test_serve_runs_the_gateway_and_logs_json_lines(tmp_path, simulator, no_secrets_in_logs):
    """What the image runs: `sora-gateway serve --config …`, logging JSON to stderr when no terminal is attached."""
    port = free_port()
    raw = base_config(tmp_path, simulator.url + "/v1")
    raw["server"]["public_url"] = f"http://127.0.0.1:{port}"
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(raw))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30, interval=0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ALPHA_KEY, max_retries=0)
        completion = client.chat.completions.create(model="sora-2", messages=PROMPT)
        assert completion.model_extra["video"]["status"] == "completed"
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    [request] = [e for e in lines if e.get("logger") == "gateway.access" and e.get("route") == "/v1/chat/completions"]
    assert request["team"] == "alpha" and request["status"] == 200 and request["cache"] == "miss"
    assert {"job submitted", "job finished"} <= {e["message"] for e in lines if e["logger"] == "gateway.jobs"}
    text = log_path.read_text()
    assert not [secret for secret in no_secrets_in_logs + ["sk-good-1"] if secret in text]


DEPLOY_ENV = {
    "GATEWAY_PUBLIC_URL": "http://localhost:8081",
    "GATEWAY_SIGNING_SECRET": "deploy-signing-secret-0123456789",
    "GATEWAY_ADMIN_KEY": "sk-admin-deploy-0123456789",
    "POSTGRES_PASSWORD": "deploy-pg-password",
    "RELAY_A_BASE_URL": "https://relay.example/v1",
    "RELAY_A_KEY_1": "sk-relay-deploy-1",
    "RELAY_A_KEY_2": "sk-relay-deploy-2",
}


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in DEPLOY_ENV}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, env={**clean, **env}, timeout=60, check=False)


def test_the_deploy_config_passes_check_config_with_its_environment():
    result = check_config(ROOT / "deploy" / "gateway.toml", DEPLOY_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    missing = check_config(ROOT / "deploy" / "gateway.toml", {})
    assert missing.returncode == 1
    for name in DEPLOY_ENV:
        assert f"environment variable {name} is not set" in missing.stdout


def test_the_compose_file_runs_two_gateways_on_shared_state():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    gateways = [s for s in services.values() if s.get("image") == "sora-gateway:local"]
    assert len(gateways) == 2 and {"postgres", "redis", "store"} <= set(services)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '"--config", "/etc/sora-gateway/gateway.toml"' in dockerfile and "USER gateway" in dockerfile
    for gateway in gateways:
        assert "./gateway.toml:/etc/sora-gateway/gateway.toml:ro" in gateway["volumes"]
        assert gateway["volumes"] == ["./gateway.toml:/etc/sora-gateway/gateway.toml:ro"]  # no shared disk
        assert set(DEPLOY_ENV) <= set(gateway["environment"])  # every ${VAR} the config uses is passed in
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(gateway["environment"])
        assert set(gateway["depends_on"]) == {"postgres", "redis", "store-bucket"}
    config = parse_config(tomllib.loads((ROOT / "deploy" / "gateway.toml").read_text()), env=DEPLOY_ENV)
    assert config.storage.database.startswith("postgresql://gateway:") and "@postgres:5432/" in config.storage.database
    assert config.storage.redis == "redis://redis:6379/0" and config.storage.local_videos_dir is None
    assert config.storage.videos.startswith("s3://videos/") and config.storage.videos_endpoint == "http://store:8333"
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "gateway"


def test_serve_says_when_the_kernel_caps_its_listen_backlog(tmp_path):
    from gateway.cli import LISTEN_BACKLOG, backlog_note

    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("4096\n")
    note = backlog_note(somaxconn)
    assert note is not None and "4096" in note and f"net.core.somaxconn={LISTEN_BACKLOG}" in note
    somaxconn.write_text(f"{LISTEN_BACKLOG}\n")
    assert backlog_note(somaxconn) is None
    assert backlog_note(tmp_path / "absent") is None  # not Linux: nothing to say
