"""Completion webhooks: every finished job is announced, at least once, signed the Standard Webhooks way.

An event is written to the outbox in the same transaction that ends its job, so no end goes unannounced and
none is announced twice by two instances: a sender leases due events from the outbox, posts each one, and
records the answer. A failed attempt (a non-2xx, a timeout) is retried with a doubling delay until
`webhook_retry_for_s` after the event, always with the same `webhook-id`.

Where an event goes: the team's `webhook_url` (set by the operator, so it may be any address, loopback
included) and the request's own `webhook_url` (set by a client, so public https only, through the outbound
fetch guard). Both are signed with the team's `webhook_secret`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

from gateway.config import Config, TeamConfig
from gateway.core.database import Database
from gateway.core.errors import bad_request
from gateway.core.records import JobRecord, WebhookEvent
from gateway.net import (
    FetchError,
    FetchPolicy,
    Resolver,
    checked_addresses,
    host_of,
    open_url,
    origin_of,
    resolve_host,
)
from gateway.observability.metrics import MetricsSink

log = logging.getLogger("gateway.webhooks")
EVENT_TYPES = {"completed": "video.completed", "failed": "video.failed"}
LEASE_MARGIN_S = 5.0  # an event is leased for one attempt's time limit plus this, so a crash mid-attempt delays it
# by no more than that before another sender (or the restarted one) takes it
BATCH = 32
IDLE_S = 1.0  # how often the outbox is looked at when nothing woke the sender
_MAX_RESPONSE = 64 * 1024
_RETRY_CAP_S = 3600.0

Render = Callable[[JobRecord], dict[str, Any]]


async def check_request_url(url: Any, team: TeamConfig, resolver: Resolver | None = None) -> str:
    """A client's `webhook_url`: public https, and a team that can sign deliveries. Raises InvalidRequest."""
    if not isinstance(url, str) or not url:
        raise bad_request("'webhook_url' must be an https URL.", param="webhook_url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise bad_request("'webhook_url' is not a valid URL.", param="webhook_url") from None
    if parsed.scheme != "https" or not host_of(parsed):
        raise bad_request("'webhook_url' must be an https URL with a public host.", param="webhook_url")
    if not team.webhook_secret:
        raise bad_request("Your team has no webhook_secret to sign deliveries with; ask your platform team to set"
                          " one, or leave out 'webhook_url'.", param="webhook_url")
    try:
        await checked_addresses(host_of(parsed), resolver or resolve_host, "webhook_url")
    except FetchError as exc:
        raise bad_request(f"{exc}.", param="webhook_url") from None
    return url


class Webhooks:
    def __init__(self, db: Database, config: Callable[[], Config], render: Render, metrics: MetricsSink,
                 resolver: Resolver | None = None) -> None:
        self.db = db
        self.config = config
        self.render = render
        self.metrics = metrics
        self.resolver = resolver
        self._due = asyncio.Event()
        self._sending: set[asyncio.Task] = set()

    # -- events -----------------------------------------------------------------------------------------------

    def for_job(self, record: JobRecord) -> tuple[WebhookEvent, ...]:
        """The events a job's end makes: to its team's URL and to the URL its request named."""
        team = self.config().team(record.team)
        urls = [team.webhook_url] if team is not None and team.webhook_url else []
        if record.webhook_url and record.webhook_url not in urls:
            urls.append(record.webhook_url)
        return tuple(self._event(record, url) for url in urls)

    def for_request(self, record: JobRecord, team: str, url: str) -> WebhookEvent:
        """An event for a request served by a job that is already final (a cache hit) or by another's job."""
        return self._event(record, url, team)

    def _event(self, record: JobRecord, url: str, team: str | None = None) -> WebhookEvent:
        now = time.time()
        event_id = "evt_" + secrets.token_hex(16)
        kind = EVENT_TYPES["completed" if record.status == "completed" else "failed"]
        body = orjson.dumps({"id": event_id, "object": "event", "type": kind, "created_at": int(now),
                             "data": self.render(record)}).decode()
        return WebhookEvent(id=event_id, team=team or record.team, url=url, type=kind, body=body, created_at=now,
                            job_id=record.id, next_attempt_at=now)

    async def enqueue(self, events: tuple[WebhookEvent, ...]) -> None:
        await self.db.enqueue_webhooks(events)
        self.wake()

    def wake(self) -> None:
        self._due.set()

    # -- delivery ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver due events until cancelled; one failing round is logged and the next one runs."""
        while True:
            try:
                await asyncio.wait_for(self._due.wait(), IDLE_S)
            except TimeoutError:
                pass
            self._due.clear()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the outbox keeps every event; the next round tries again
                log.exception("webhook round failed; trying again")

    async def round(self) -> int:
        lease_s = self.config().server.webhook_timeout_s + LEASE_MARGIN_S
        events = await self.db.claim_webhooks(time.time(), lease_s, BATCH)
        await asyncio.gather(*(self.deliver(event) for event in events))
        if len(events) == BATCH:
            self.wake()  # there may be more due
        return len(events)

    async def deliver(self, event: WebhookEvent) -> bool:
        config = self.config()
        team = config.team(event.team)
        status: int | None = None
        error: str | None = None
        if team is None or not team.webhook_secret:
            error = "the team has no webhook_secret any more"
        else:
            try:
                status = await self._post(event, team, config)
                if not 200 <= status < 300:
                    error = f"the receiver answered HTTP {status}"
            except FetchError as exc:
                error = str(exc)
        now = time.time()
        if error is None:
            await self.db.webhook_attempted(event.id, status=status, error=None, delivered_at=now,
                                            next_attempt_at=None, failed_at=None)
            self.metrics.webhook_delivery("delivered")
            log.info("webhook delivered", extra={"event_id": event.id, "job_id": event.job_id, "status": status})
            return True
        give_up = (team is None or not team.webhook_secret
                   or now - event.created_at >= config.server.webhook_retry_for_s)
        delay = min(_RETRY_CAP_S, config.server.webhook_retry_s * 2 ** event.attempts) * random.uniform(0.8, 1.2)
        await self.db.webhook_attempted(event.id, status=status, error=error, delivered_at=None,
                                        next_attempt_at=None if give_up else now + delay,
                                        failed_at=now if give_up else None)
        self.metrics.webhook_delivery("failed" if give_up else "retry")
        log.warning("webhook not delivered", extra={"event_id": event.id, "job_id": event.job_id,
                                                    "status": status, "error": error, "given_up": give_up})
        return False

    async def _post(self, event: WebhookEvent, team: TeamConfig, config: Config) -> int:
        stamp = datetime.fromtimestamp(time.time(), tz=UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "sora-gateway-webhooks",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": Webhook(team.webhook_secret).sign(event.id, stamp, event.body),
        }
        # The team's own URL is the operator's word; a URL a client sent must be public, every time.
        trusted = origin_of(team.webhook_url) if team.webhook_url and event.url == team.webhook_url else None
        policy = FetchPolicy(max_bytes=_MAX_RESPONSE, timeout_s=config.server.webhook_timeout_s, max_redirects=0,
                             what="the webhook URL", allowed_origins=frozenset({trusted} if trusted else ()))
        fetched = await open_url(event.url, policy, resolver=self.resolver, headers=headers, method="POST",
                                 content=event.body.encode())
        try:
            return fetched.status_code
        finally:
            await fetched.aclose()

    async def pending(self, limit: int = 100) -> dict[str, Any]:
        """What `/admin/webhooks` shows: counts, and the undelivered events with their last error."""
        events = await self.db.webhook_events(limit)
        return {
            "object": "list",
            "counts": await self.db.webhook_counts(),
            "data": [{"id": e.id, "type": e.type, "team": e.team, "job_id": e.job_id, "url": e.url,
                      "state": "failed" if e.failed_at else "pending", "attempts": e.attempts,
                      "created_at": int(e.created_at), "next_attempt_at": None if e.failed_at else
                      int(e.next_attempt_at), "last_status": e.last_status, "last_error": e.last_error}
                     for e in events],
        }
