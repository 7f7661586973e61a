"""Completion webhooks: signed, retried with one webhook-id, durable across a restart, once across instances."""
from __future__ import annotations

import base64
import signal
import threading

import httpx
import openai
import orjson
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import (
    ADMIN_KEY,
    ALPHA_KEY,
    ServerThread,
    finished_video,
    free_port,
    hash_key,
    to_toml,
    wait_until,
)
from tests.test_durability import start_gateway_process
from tests.test_instances import cluster, sdk, services_up, shared_storage  # noqa: F401 - fixtures

SECRET = "whsec_" + base64.b64encode(b"webhook-secret-for-the-tests-0123").decode()
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


class Receiver:
    """A webhook endpoint on loopback that records every delivery and answers with the statuses it is given."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.answers: list[int] = []  # answered in order; 200 once they run out
        self.lock = threading.Lock()
        self.server = ServerThread(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])]))

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.deliveries.append((dict(request.headers), body))
            status = self.answers.pop(0) if self.answers else 200
            self.statuses.append(status)
        return Response(status_code=status)

    @property
    def url(self) -> str:
        return self.server.url + "/hook"

    def events(self) -> list[dict]:
        return [orjson.loads(body) for _, body in self.deliveries]


@pytest.fixture
def receiver():
    r = Receiver()
    r.server.__enter__()
    yield r
    r.server.__exit__(None, None, None)


def teams(receiver: Receiver) -> list[dict]:
    return [{"name": "alpha", "keys": [hash_key(ALPHA_KEY)], "webhook_url": receiver.url, "webhook_secret": SECRET}]


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)


def test_finished_and_failed_videos_are_announced_signed(start_gateway, simulator, receiver, no_secrets_in_logs):
    no_secrets_in_logs.append(SECRET)
    gateway = start_gateway(simulator, teams=teams(receiver), server={**_server(), "webhook_retry_s": 0.05})
    done = client(gateway).videos.create_and_poll(model="sora-2", prompt="a webhook for a fox")
    failed = client(gateway).videos.create_and_poll(model="sora-2", prompt="[fail] a webhook for a failure")
    wait_until(lambda: len(receiver.deliveries) == 2)
    by_type = {event["type"]: event for event in receiver.events()}
    assert by_type["video.completed"]["data"]["id"] == done.id
    assert by_type["video.completed"]["data"]["status"] == "completed"
    assert by_type["video.failed"]["data"]["id"] == failed.id and by_type["video.failed"]["data"]["error"]
    for headers, body in receiver.deliveries:
        assert headers["webhook-id"].startswith("evt_")
        Webhook(SECRET).verify(body, headers)  # the Standard Webhooks reference verifier
        openai.OpenAI(api_key="unused", webhook_secret=SECRET).webhooks.verify_signature(body, headers)
        event = orjson.loads(body)
        assert event["object"] == "event" and event["id"] == headers["webhook-id"]
    forged = {**receiver.deliveries[0][0], "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(receiver.deliveries[0][1], forged)


def test_a_failing_receiver_gets_the_same_event_again_until_it_answers(start_gateway, simulator, receiver):
    receiver.answers = [500, 500]
    gateway = start_gateway(simulator, teams=teams(receiver), server={**_server(), "webhook_retry_s": 0.05})
    client(gateway).videos.create_and_poll(model="sora-2", prompt="a receiver that fails twice")
    wait_until(lambda: len(receiver.deliveries) == 3)
    assert len({headers["webhook-id"] for headers, _ in receiver.deliveries}) == 1
    admin = wait_until(lambda: (b := httpx.get(gateway.url + "/admin/webhooks", headers=ADMIN).json())
                       ["counts"]["delivered"] == 1 and b)
    assert admin["counts"]["pending"] == 0 and admin["data"] == []


def test_an_event_not_delivered_before_a_crash_is_delivered_after_the_restart(tmp_path, start_simulator, receiver):
    simulator = start_simulator(duration_s=0.4)
    receiver.answers = [503] * 10_000  # the receiver is down while the job finishes
    port = free_port()
    raw = {
        "server": {**_server(), "public_url": f"http://127.0.0.1:{port}", "webhook_retry_s": 0.05},
        "storage": {"database": f"sqlite:///{tmp_path}/gateway.db", "videos_dir": f"{tmp_path}/videos"},
        "upstreams": [{"name": "sim", "kind": "videos", "base_url": simulator.url + "/v1", "keys": ["sk-good-1"],
                       "poll_interval_s": 0.05}],
        "models": {"sora-2": {"upstreams": ["sim"], "upstream_model": "sora-2"}},
        "teams": teams(receiver),
    }
    config = tmp_path / "gateway.toml"
    config.write_text(to_toml(raw))
    url = f"http://127.0.0.1:{port}"
    first = start_gateway_process(config, port, tmp_path / "gateway.log")
    try:
        video = openai.OpenAI(base_url=url + "/v1", api_key=ALPHA_KEY, max_retries=0).videos.create_and_poll(
            model="sora-2", prompt="announced after a crash")
        # tried, refused, and the refusal written down: the event waits in the outbox for its next attempt
        wait_until(lambda: httpx.get(url + "/admin/webhooks", headers=ADMIN).json()["data"][0]["attempts"] >= 1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    receiver.answers = []  # the receiver is back
    second = start_gateway_process(config, port, tmp_path / "gateway.log")
    try:
        wait_until(lambda: 200 in receiver.statuses)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert len({headers["webhook-id"] for headers, _ in receiver.deliveries}) == 1
    assert receiver.events()[-1]["data"]["id"] == video.id


def test_two_instances_deliver_each_event_once(start_simulator, cluster, receiver):  # noqa: F811
    simulator = start_simulator(duration_s=0.5)
    c = cluster(simulator, teams=teams(receiver), server={**_server(), "webhook_retry_s": 0.05})
    a, b = c.start(), c.start()
    ids = [sdk(url).videos.create(model="sora-2", prompt=f"announced once, {i}").id
           for i, url in enumerate([a, b, a, b])]
    for video_id in ids:
        finished_video(sdk(a), video_id)
    wait_until(lambda: sorted(e["data"]["id"] for e in receiver.events()) == sorted(ids))
    counts = [httpx.get(url + "/admin/webhooks", headers=ADMIN).json()["counts"] for url in (a, b)]
    assert counts[0] == counts[1] == {"delivered": 4, "failed": 0, "pending": 0}
    assert len(receiver.deliveries) == 4


@pytest.mark.parametrize("url", ["https://127.0.0.1/hook", "https://10.0.0.8/hook", "http://example.com/hook",
                                 "https://localhost/hook", "not a url"])
def test_a_per_request_webhook_url_must_be_public_https(start_gateway, simulator, receiver, url):
    gateway = start_gateway(simulator, teams=teams(receiver))
    with pytest.raises(openai.BadRequestError) as chat:
        client(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a hook"}],
                                                extra_body={"webhook_url": url})
    assert chat.value.body["param"] == "webhook_url"
    with pytest.raises(openai.BadRequestError) as create:
        client(gateway).videos.create(model="sora-2", prompt="a hook", extra_body={"webhook_url": url})
    assert create.value.body["param"] == "webhook_url"
    assert simulator.app.state.sim.count(method="POST") == 0


def _server() -> dict:
    from tests.support import SIGNING_SECRET

    return {"public_url": "http://127.0.0.1:1", "signing_secret": SIGNING_SECRET, "admin_keys": [ADMIN_KEY],
            "ping_interval_s": 0.2, "metrics_public": True}
