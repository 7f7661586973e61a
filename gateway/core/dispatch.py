"""Dispatch: hand a new upstream job to the best key of a model's upstreams, as the fault table says.

No provider takes an idempotency key on create, so a create whose answer was lost (a timeout or reset once the
body was sent, a proxy's 502/504) is never simply sent again: the job it may have made is looked for first
where the dialect can list a key's jobs (`find_created`), and followed when it is there; a job the list shows
was not made is sent again. Where it cannot be looked for, the upstream's `on_ambiguous_create` (or its dialect's
default) decides: "fail" the job, or "resubmit" it. A job sent again says so in its ledger row (`resubmitted`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.config import UpstreamConfig
from gateway.core.characters import JobCharacters
from gateway.core.errors import ContentRefused, GatewayError, UpstreamFailed, UpstreamRejected, UpstreamUnavailable
from gateway.core.faults import Action, Operation, backoff_s, decide, is_refusal
from gateway.core.keypool import KeyPool, KeySlot
from gateway.core.upstream import GenerationSpec, Upstream, UpstreamError, UpstreamKey

log = logging.getLogger("gateway.jobs")
LOOKS = 2  # how many times the jobs of a key are read for a create whose answer was lost, before giving up


@dataclass(frozen=True, slots=True)
class Submitted:
    upstream: str
    adapter: Upstream
    slot: KeySlot
    upstream_id: str
    resubmitted: bool = False  # sent again after a create whose answer was lost: it may have been paid twice


class Dispatcher:
    def __init__(self, upstreams: Mapping[str, Upstream], pools: Mapping[str, KeyPool],
                 settings: Callable[[str], UpstreamConfig | None]) -> None:
        self.upstreams = upstreams
        self.pools = pools
        self.settings = settings

    async def submit(self, spec: GenerationSpec, names: tuple[str, ...], pinned_key: str | None = None,
                     characters: JobCharacters | None = None) -> Submitted:
        """Submit on the first upstream of `names` with a usable key; `pinned_key` (a remix, an edit or an
        extension of an upstream video) allows only that key. The job's `characters` are made on the chosen key
        first where it lacks them; keys that hold them all already are preferred.

        Raises UpstreamRejected or ContentRefused when the upstream refuses the request itself, and
        UpstreamUnavailable when no key took it within the upstreams' `max_retry_s`.
        """
        deadline = time.monotonic() + max(self._settings(n).max_retry_s for n in names)
        last_error: UpstreamError | None = None
        resubmitting = False  # an earlier create of this job may have been made: the next one is a resubmission
        prefer = await characters.holders() if characters else frozenset()
        for name in names:
            pool, upstream = self.pools[name], self.upstreams[name]
            tried: set[str] = set()
            attempt = 0
            while time.monotonic() < deadline:
                slot = await self._pinned(pool, pinned_key) if pinned_key else await pool.acquire(tried, prefer)
                if slot is None:
                    if pool.exhausted() or pinned_key:
                        break
                    await pool.wait_for_slot(deadline - time.monotonic())
                    continue
                tried.add(slot.key.label)
                operation = Operation.CHARACTER if characters else Operation.SUBMIT
                job_spec = spec
                try:
                    job_spec = await characters.on_key(spec, upstream, slot.key) if characters else spec
                    operation = Operation.SUBMIT
                    sent_at = time.time()
                    upstream_id = await upstream.submit(job_spec, slot.key)
                except UpstreamError as exc:
                    decision = decide(operation, exc.status, getattr(upstream, "faults", None), sent=exc.sent)
                    if decision.action is Action.RECONCILE:
                        try:
                            found, absent = await self._look_for(upstream, job_spec, slot.key, sent_at, deadline)
                        except BaseException:
                            await pool.release(slot)
                            raise
                        if found is not None:
                            log.warning("a create's answer was lost; the job it made is followed",
                                        extra={"upstream": name, "upstream_key": slot.key.label,
                                               "status": exc.status})
                            pool.succeeded(slot.state)
                            return Submitted(name, upstream, slot, found, resubmitting)
                    await pool.release(slot)
                    await pool.failed(slot.state, decision.key, _reason(exc), exc.retry_after)
                    log.warning(f"upstream {operation.value} failed",
                                extra={"upstream": name, "upstream_key": slot.key.label, "status": exc.status,
                                       "error": exc.message})
                    if decision.action is Action.CLIENT:
                        raise _client_error(exc) from None
                    if decision.action is Action.RECONCILE:
                        if not absent and self._ambiguous_policy(name, upstream) == "fail":
                            raise _unconfirmed(exc) from None
                        resubmitting = True
                    last_error = exc
                    if decision.action in (Action.BACKOFF, Action.RECONCILE):
                        attempt += 1
                        await asyncio.sleep(min(backoff_s(attempt), max(0.0, deadline - time.monotonic())))
                    continue
                except BaseException:
                    await pool.release(slot)
                    raise
                pool.succeeded(slot.state)
                if resubmitting:
                    log.warning("job resubmitted after a create whose answer was lost",
                                extra={"upstream": name, "upstream_key": slot.key.label})
                return Submitted(name, upstream, slot, upstream_id, resubmitting)
        raise self._unavailable(names, last_error)

    def _ambiguous_policy(self, name: str, upstream: Upstream) -> str:
        return self._settings(name).on_ambiguous_create or getattr(upstream, "on_ambiguous_create", "resubmit")

    @staticmethod
    async def _look_for(upstream: Upstream, spec: GenerationSpec, key: UpstreamKey, sent_at: float,
                        deadline: float) -> tuple[str | None, bool]:
        """The upstream id of the job a lost create made, and whether the upstream showed it was not made: a
        dialect that cannot list jobs knows neither. A job can take a moment to show in the list, and a list
        read can fail like the create did, so it is read a few times within the retry budget."""
        find = getattr(upstream, "find_created", None)
        if find is None:
            return None, False
        absent = False
        for look in range(LOOKS):
            if look:
                await asyncio.sleep(min(0.25 * 2 ** look, max(0.0, deadline - time.monotonic())))
            try:
                found = await find(spec, key, sent_at)
            except UpstreamError:
                continue
            if found is not None:
                return found, False
            absent = True
        return None, absent

    def _settings(self, name: str) -> UpstreamConfig:
        settings = self.settings(name)
        if settings is None:
            raise UpstreamUnavailable(f"The upstream '{name}' is no longer configured.")
        return settings

    @staticmethod
    async def _pinned(pool: KeyPool, label: str) -> KeySlot | None:
        state = pool.get(label)
        if state is None or state.state(time.monotonic()) != "healthy":
            return None
        return await pool.hold(label)

    def _unavailable(self, names: tuple[str, ...], last_error: UpstreamError | None) -> UpstreamUnavailable:
        waits = [w for n in names if (w := self.pools[n].earliest_recovery()) is not None]
        retry_after = max(1, int(min(waits) + 0.999)) if waits else 30
        detail = f" (last error: {last_error.message})" if last_error else ""
        return UpstreamUnavailable(
            f"Every upstream key for this model is busy, rate limited or disabled; retry in {retry_after} s.{detail}",
            retry_after=retry_after)


def _reason(exc: UpstreamError) -> str:
    return f"HTTP {exc.status}: {exc.message}" if exc.status else exc.message


def _unconfirmed(exc: UpstreamError) -> UpstreamFailed:
    what = f"HTTP {exc.status}" if exc.status else "no answer"
    return UpstreamFailed(
        f"The video provider's answer to the create was lost ({what}), so it may or may not have started the "
        "video; it was not sent again, so that it cannot be paid twice. Send the request again to retry (the "
        "platform team can set on_ambiguous_create = \"resubmit\" for this upstream to retry at once).",
        code="create_unconfirmed")


def _client_error(exc: UpstreamError) -> GatewayError:
    if is_refusal(exc.code):
        return ContentRefused(f"Your request was refused by the video provider's content policy: {exc.message}",
                              param="prompt")
    return UpstreamRejected(f"The upstream rejected the request: {exc.message}", code=exc.code or "invalid_request",
                            param=exc.param)
