"""Quotas that never overshoot, runtime keys, and a ledger whose numbers add up."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.support import ADMIN_KEY, ALPHA_KEY, BETA_KEY, failing, hash_key, to_toml, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def sdk(gateway, key: str = ALPHA_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def teams(**alpha_quotas) -> list[dict]:
    return [{"name": "alpha", "keys": [hash_key(ALPHA_KEY)], "quotas": alpha_quotas},
            {"name": "beta", "keys": [hash_key(BETA_KEY)]}]


def open_stream(gateway, i: int, key: str = ALPHA_KEY, seconds: int = 4):
    """Start a generation and return once it is admitted (or raise the rejection)."""
    stream = sdk(gateway, key).chat.completions.create(
        model="sora-2", stream=True, extra_body={"seconds": seconds},
        messages=[{"role": "user", "content": f"scene number {i}"}])
    next(iter(stream))
    stream.close()
    return stream


def admitted(gateway, count: int, start: int = 0, **kwargs) -> tuple[int, list[Exception]]:
    def attempt(i: int):
        try:
            open_stream(gateway, i, **kwargs)
            return None
        except openai.APIStatusError as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(attempt, range(start, start + count)))
    errors = [r for r in results if r is not None]
    return count - len(errors), errors


@pytest.fixture
def slow_simulator(start_simulator):
    return start_simulator(duration_s=30)  # jobs outlive the test: admissions are decided on submission


def test_twelve_concurrent_requests_against_two_concurrent_jobs_admit_exactly_two(slow_simulator, start_gateway):
    gateway = start_gateway(slow_simulator, teams=teams(concurrent_jobs=2))
    count, errors = admitted(gateway, 12)
    assert count == 2
    assert all(isinstance(e, openai.RateLimitError) for e in errors)
    assert {e.code for e in errors} == {"rate_limit_exceeded"}
    assert all("concurrent_jobs" in e.message for e in errors)
    assert all(int(e.response.headers["retry-after"]) >= 1 for e in errors)
    assert slow_simulator.app.state.sim.count(method="POST") == 2
    assert admitted(gateway, 1, key=BETA_KEY)[0] == 1  # another team is not affected


def test_videos_per_day_admits_exactly_five_across_bursts_and_sequences(slow_simulator, start_gateway):
    gateway = start_gateway(slow_simulator, teams=teams(videos_per_day=5))
    burst, _ = admitted(gateway, 3)
    sequence = 0
    for i in range(3, 6):
        sequence += admitted(gateway, 1, start=i)[0]
    second_burst, errors = admitted(gateway, 4, start=10)
    assert burst + sequence + second_burst == 5
    assert errors and errors[0].code == "quota_exceeded" and "videos_per_day = 5" in errors[0].message
    assert "00:00 UTC" in errors[0].message


def test_budget_stops_at_the_cent(slow_simulator, start_gateway):
    gateway = start_gateway(slow_simulator, teams=teams(budget_usd_per_month=1.2))
    assert admitted(gateway, 3)[0] == 3  # 3 × 4 s × $0.10 = $1.20: fits exactly
    count, errors = admitted(gateway, 1, start=3)
    assert count == 0 and errors[0].code == "quota_exceeded"
    assert "budget_usd_per_month" in errors[0].message


def test_failed_and_refused_jobs_are_refunded(simulator, start_gateway):
    gateway = start_gateway(simulator, teams=teams(budget_usd_per_month=0.4))
    client = sdk(gateway)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "[fail] one"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "[refuse] two"}])
    completion = client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "three"}])
    assert completion.model_extra["video"]["status"] == "completed"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "four"}])
    usage = client.get("/usage", cast_to=httpx.Response).json()
    assert usage["total"] == {"requests": 4, "videos": 1, "video_seconds": 4, "cost_usd": 0.4, "resubmitted": 0}


def test_rate_limit_headers_and_requests_per_minute(simulator, start_gateway):
    gateway = start_gateway(simulator, teams=teams(requests_per_minute=2))
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="sora-2", messages=[{"role": "user", "content": "one"}])
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "one"}])  # a hit
    with pytest.raises(openai.RateLimitError) as err:
        sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "three"}])
    assert err.value.code == "rate_limit_exceeded" and "requests_per_minute" in err.value.message
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def test_cli_keys_work_at_once_and_stop_when_revoked(simulator, start_gateway, tmp_path, no_secrets_in_logs):
    gateway = start_gateway(simulator)
    config = tmp_path / "gateway.toml"
    config.write_text(to_toml(gateway.raw))
    created = run_cli("keys", "create", "--config", str(config), "--team", "beta", "--name", "ci", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    no_secrets_in_logs.append(key)
    assert key.startswith("sk-gw-") and "not shown again" in created.stderr
    assert sorted(m.id for m in sdk(gateway, key).models.list()) == ["org/sora-2-pro", "sora-2"]
    listed = run_cli("keys", "list", "--config", str(config), "--format", "json")
    [view] = json.loads(listed.stdout)
    assert view["team"] == "beta" and view["name"] == "ci" and view["status"] == "active"
    assert key not in listed.stdout
    assert run_cli("keys", "revoke", "--config", str(config), view["id"]).returncode == 0

    def refused() -> bool:
        try:
            sdk(gateway, key).models.list()
            return False
        except openai.AuthenticationError as exc:
            return "revoked" in exc.message

    wait_until(refused, timeout=5)  # the auth cache holds a key for at most a second
    assert "no team named 'gamma'" in run_cli("keys", "create", "--config", str(config), "--team", "gamma").stderr
    assert "30x" in run_cli("keys", "create", "--config", str(config), "--team", "beta", "--expires", "30x").stderr


def test_admin_keys_api_create_list_revoke(simulator, start_gateway, no_secrets_in_logs):
    gateway = start_gateway(simulator)
    response = httpx.post(gateway.url + "/admin/teams/beta/keys", json={"name": "notebook", "expires": "1h"},
                          headers=ADMIN)
    assert response.status_code == 201
    created = response.json()
    no_secrets_in_logs.append(created["key"])
    assert sdk(gateway, created["key"]).models.list()
    listing = httpx.get(gateway.url + "/admin/keys", headers=ADMIN)
    assert created["key"] not in listing.text and created["id"] in listing.text
    assert httpx.delete(f"{gateway.url}/admin/keys/{created['id']}", headers=ADMIN).status_code == 200
    with pytest.raises(openai.AuthenticationError):  # revoked through the API: no cache delay at all
        sdk(gateway, created["key"]).models.list()
    assert httpx.delete(f"{gateway.url}/admin/keys/{created['id']}", headers=ADMIN).status_code == 404
    assert httpx.post(gateway.url + "/admin/teams/nobody/keys", json={}, headers=ADMIN).status_code == 404
    assert httpx.get(gateway.url + "/admin/keys", headers={"authorization": f"Bearer {ALPHA_KEY}"}
                     ).status_code == 401


def test_usage_endpoint_csv_and_cli_agree_with_the_requests_made(simulator, start_gateway, tmp_path):
    gateway = start_gateway(simulator, teams=teams(videos_per_day=2))
    client = sdk(gateway)
    for prompt, seconds in [("alpha one", 4), ("alpha two", 8)]:
        client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": prompt}],
                                       extra_body={"seconds": seconds})
    client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "alpha one"}])  # hit
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "alpha three"}])
    sdk(gateway, BETA_KEY).chat.completions.create(model="org/sora-2-pro",
                                                   messages=[{"role": "user", "content": "beta"}])
    usage = client.get("/usage?group_by=model", cast_to=httpx.Response).json()
    assert usage["team"] == "alpha"
    assert usage["total"] == {"requests": 4, "videos": 2, "video_seconds": 12, "cost_usd": 1.2, "resubmitted": 0}
    assert usage["data"] == [{"model": "sora-2", "requests": 4, "videos": 2, "video_seconds": 12, "cost_usd": 1.2,
                              "resubmitted": 0}]
    by_team = httpx.get(gateway.url + "/admin/usage?group_by=team&format=csv", headers=ADMIN)
    rows = list(csv.DictReader(io.StringIO(by_team.text)))
    assert [(r["team"], r["requests"], r["videos"], r["cost_usd"]) for r in rows] == [
        ("alpha", "4", "2", "1.200000"), ("beta", "1", "1", "1.200000")]
    total = httpx.get(gateway.url + "/admin/usage?group_by=key", headers=ADMIN).json()
    assert total["total"]["requests"] == sum(r["requests"] for r in total["data"]) == 5
    assert total["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in total["data"])) == 2.4
    config = tmp_path / "gateway.toml"
    config.write_text(to_toml(gateway.raw))
    report = run_cli("usage", "--config", str(config), "--team", "alpha", "--format", "json")
    assert json.loads(report.stdout)["total"] == usage["total"]
    table = run_cli("usage", "--config", str(config), "--group-by", "team")
    assert "TOTAL" in table.stdout and "2.40" in table.stdout
    default = list(csv.DictReader(io.StringIO(httpx.get(gateway.url + "/admin/usage?format=csv",
                                                        headers=ADMIN).text)))
    assert [(r["team"], r["requests"]) for r in default] == [("alpha", "4"), ("beta", "1")]
    by_model = httpx.get(gateway.url + "/admin/usage?group_by=model", headers=ADMIN).json()["data"]
    assert [(r["team"], r["model"], r["requests"]) for r in by_model] == [
        ("alpha", "sora-2", 4), ("beta", "org/sora-2-pro", 1)]
    by_day = list(csv.DictReader(io.StringIO(httpx.get(gateway.url + "/admin/usage?team=beta&format=csv",
                                                       headers=ADMIN).text)))
    assert [(r["team"], bool(r["day"]), r["requests"]) for r in by_day] == [("beta", True, "1")]
    cli_default = run_cli("usage", "--config", str(config), "--format", "csv")
    assert [(r["team"], r["requests"]) for r in csv.DictReader(io.StringIO(cli_default.stdout))] == [
        ("alpha", "4"), ("beta", "1")]
    cli_by_day = json.loads(run_cli("usage", "--config", str(config), "--group-by", "day", "--format", "json").stdout)
    assert {r["team"] for r in cli_by_day["data"]} == {"alpha", "beta"} and all(r["day"] for r in cli_by_day["data"])
    assert "alpha" in run_cli("usage", "--config", str(config), "--group-by", "model").stdout
    bad = httpx.get(gateway.url + "/v1/usage?group_by=team", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


def test_a_job_the_database_refuses_gives_its_reservation_back(simulator, start_gateway):
    import sqlite3

    gateway = start_gateway(simulator, teams=teams(concurrent_jobs=1, videos_per_day=1))
    db = gateway.app.state.gateway.db
    with failing(db, "insert_job", sqlite3.OperationalError("disk I/O error")), \
            pytest.raises(openai.InternalServerError) as err:
        sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "one"}])
    assert err.value.code == "backend_unavailable"
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "two"}])
    assert completion.model_extra["video"]["status"] == "completed"  # neither quota kept the failed attempt
