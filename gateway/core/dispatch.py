"""Dispatch: hand a new upstream job to the best key of a model's upstreams, as the fault table says."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.config import UpstreamConfig
from gateway.core.characters import JobCharacters
from gateway.core.errors import ContentRefused, GatewayError, UpstreamRejected, UpstreamUnavailable
from gateway.core.faults import Action, Operation, backoff_s, decide, is_refusal
from gateway.core.keypool import KeyPool, KeySlot
from gateway.core.upstream import GenerationSpec, Upstream, UpstreamError

log = logging.getLogger("gateway.jobs")


@dataclass(frozen=True, slots=True)
class Submitted:
    upstream: str
    adapter: Upstream
    slot: KeySlot
    upstream_id: str


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
                try:
                    job_spec = await characters.on_key(spec, upstream, slot.key) if characters else spec
                    operation = Operation.SUBMIT
                    upstream_id = await upstream.submit(job_spec, slot.key)
                except UpstreamError as exc:
                    await pool.release(slot)
                    decision = decide(operation, exc.status, getattr(upstream, "faults", None))
                    await pool.failed(slot.state, decision.key, _reason(exc), exc.retry_after)
                    log.warning(f"upstream {operation.value} failed",
                                extra={"upstream": name, "upstream_key": slot.key.label, "status": exc.status,
                                       "error": exc.message})
                    if decision.action is Action.CLIENT:
                        raise _client_error(exc) from None
                    last_error = exc
                    if decision.action is Action.BACKOFF:
                        attempt += 1
                        await asyncio.sleep(min(backoff_s(attempt), max(0.0, deadline - time.monotonic())))
                    continue
                except BaseException:
                    await pool.release(slot)
                    raise
                pool.succeeded(slot.state)
                return Submitted(name, upstream, slot, upstream_id)
        raise self._unavailable(names, last_error)

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


def _client_error(exc: UpstreamError) -> GatewayError:
    if is_refusal(exc.code):
        return ContentRefused(f"Your request was refused by the video provider's content policy: {exc.message}",
                              param="prompt")
    return UpstreamRejected(f"The upstream rejected the request: {exc.message}", code=exc.code or "invalid_request",
                            param=exc.param)
