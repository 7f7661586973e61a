"""The dashboard page in headless Chromium: an admin sees every team, a team only its own, with the numbers of a
known ledger, and a running job's progress moves while the page is open."""
from __future__ import annotations

import httpx
import openai
import pytest

from gateway.simulator.app import SimulatorSettings, create_simulator_app
from tests.support import (
    ADMIN_KEY,
    ALPHA_KEY,
    BETA_KEY,
    ServerThread,
    base_config,
    finished_video,
    running_gateway,
    wait_until,
)
from tests.test_browser import browser  # noqa: F401 - the Chromium fixture


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    """Alpha: a 4 s and an 8 s video and a failure; beta: one 4 s video; then one alpha job left running.
    Built once for the module: the tests only read it."""
    simulator = ServerThread(create_simulator_app(SimulatorSettings(duration_s=6.0)))  # a job long enough to watch
    with simulator:
        raw = base_config(tmp_path_factory.mktemp("dashboard"), simulator.url + "/v1", teams=[
            {"name": "alpha", "keys": [_hash(ALPHA_KEY)], "quotas": {"videos_per_day": 10}},
            {"name": "beta", "keys": [_hash(BETA_KEY)]},
        ])
        with running_gateway(raw) as gateway:
            made = [sdk(gateway, key).videos.create(model="sora-2", prompt=prompt, seconds=seconds)
                    for key, prompt, seconds in [(ALPHA_KEY, "dash one", "4"), (ALPHA_KEY, "dash two", "8"),
                                                 (BETA_KEY, "dash three", "4"), (ALPHA_KEY, "[fail] dash four", "4")]]
            for video, key in zip(made, [ALPHA_KEY, ALPHA_KEY, BETA_KEY, ALPHA_KEY]):
                finished_video(sdk(gateway, key), video.id)
            gateway.running = sdk(gateway, ALPHA_KEY).videos.create(
                model="sora-2", prompt="dash running " + "x" * 10, seconds="12")
            gateway.failed_id = made[3].id
            yield gateway


def _hash(key: str) -> str:
    from gateway.core.auth import hash_key

    return hash_key(key)


def sign_in(browser, gateway, key: str):  # noqa: F811
    page = browser.new_page()
    page.goto(gateway.url + "/dashboard")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("#board:not([hidden]) figure")
    return page


def totals(page, breakdown: str, measure: str) -> dict[str, str]:
    return page.eval_on_selector_all(
        f'.charts[data-breakdown="{breakdown}"] figure[data-measure="{measure}"] .legend li[data-series]',
        "items => Object.fromEntries(items.map(i => [i.dataset.series, i.dataset.total]))")


def drawn(page, breakdown: str, measure: str, series: str) -> float:
    return page.eval_on_selector_all(
        f'.charts[data-breakdown="{breakdown}"] figure[data-measure="{measure}"] rect[data-series="{series}"]',
        "bars => bars.reduce((sum, bar) => sum + Number(bar.dataset.value), 0)")


def test_an_admin_sees_every_team_and_a_running_job_move(browser, ledger):  # noqa: F811
    page = sign_in(browser, ledger, ADMIN_KEY)
    assert page.text_content("#scope") == "admin · all teams"
    assert totals(page, "by_team", "videos") == {"alpha": "2", "beta": "1"}
    assert totals(page, "by_team", "video_seconds") == {"alpha": "12", "beta": "4"}
    assert totals(page, "by_team", "cost_usd") == {"alpha": "1.2", "beta": "0.4"}
    assert totals(page, "by_model", "videos") == {"sora-2": "3"}
    assert drawn(page, "by_team", "video_seconds", "alpha") == 12  # the bars add up to the same numbers
    running = f'#running tr[data-id="{ledger.running.id}"]'
    page.wait_for_selector(running)
    first = int(page.get_attribute(running, "data-progress"))
    wait_until(lambda: int(page.get_attribute(running, "data-progress") or -1) > first, timeout=30)
    assert page.locator(f'#failures tr[data-id="{ledger.failed_id}"]').count() == 1
    assert page.locator("#keys tr[data-label]").count() == 1
    assert page.locator('#quotas tr[data-team="alpha"][data-limit="videos_per_day"]').count() == 1
    page.close()


def test_a_team_sees_only_its_own_team(browser, ledger):  # noqa: F811
    page = sign_in(browser, ledger, BETA_KEY)
    assert page.text_content("#scope") == "team beta"
    assert totals(page, "by_team", "videos") == {"beta": "1"}
    assert totals(page, "by_model", "cost_usd") == {"sora-2": "0.4"}
    assert page.locator("#running tr[data-id]").count() == 0  # alpha's running job is not beta's business
    assert page.locator("#failures tr[data-id]").count() == 0
    assert not page.is_visible("#keys") and not page.is_visible("#quotas")
    assert "alpha" not in page.inner_text("#board")
    page.close()


def test_a_wrong_key_is_refused_and_the_key_never_reaches_a_url(browser, ledger):  # noqa: F811
    page = browser.new_page()
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.goto(ledger.url + "/dashboard")
    page.fill("#key", "sk-not-a-key-0000000000")
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-in:not([hidden]) #sign-in-error:not(:empty)")
    assert page.text_content("#sign-in-error") == "That key was not accepted."
    page.fill("#key", ALPHA_KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("#board:not([hidden]) figure")
    assert not any(ALPHA_KEY in url for url in seen)
    page.close()
    summary = httpx.get(ledger.url + "/dashboard/api/summary", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert summary.json()["scope"] == "team" and set(summary.json()["by_team"]) == {"alpha"}
    assert httpx.get(ledger.url + "/dashboard/api/summary").status_code == 401


def test_every_metric_the_grafana_dashboard_charts_is_exported(gateway):
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    wanted = {name for panel in dashboard["panels"] for target in panel["targets"]
              for name in re.findall(r"\bsora_gateway_[a-z_]+", target["expr"])}
    exposed = httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    families = set(re.findall(r"^# TYPE (sora_gateway_[a-z_]+) ", exposed, re.MULTILINE))
    missing = {name for name in wanted
               if name not in families and re.sub(r"_(total|bucket|count|sum)$", "", name) not in families}
    assert wanted and not missing, sorted(missing)
