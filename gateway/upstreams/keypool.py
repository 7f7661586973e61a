"""A pool of upstream keys: rotation to the healthiest, least-busy key, cooldowns and disabling."""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from gateway.upstreams.base import UpstreamKey
from gateway.upstreams.faults import KeyEffect, cooldown_s


def key_label(upstream: str, secret: str) -> str:
    """A stable, safe name for a key: its upstream and a short fingerprint, never the key itself."""
    return f"{upstream}:{hashlib.sha256(secret.encode()).hexdigest()[:8]}"


@dataclass(slots=True)
class KeyState:
    key: UpstreamKey
    in_flight: int = 0
    cooling_until: float = 0.0
    disabled: bool = False
    disabled_reason: str | None = None
    successes: int = 0
    failures: int = 0
    strikes: int = 0  # consecutive failures; reset by a success
    last_error: str | None = None
    last_used: float = 0.0

    def state(self, now: float) -> str:
        if self.disabled:
            return "disabled"
        if self.cooling_until > now:
            return "cooling"
        return "healthy"

    def public(self, now: float) -> dict:
        return {
            "label": self.key.label,
            "state": self.state(now),
            "cooling_for_s": round(self.cooling_until - now, 3) if self.cooling_until > now else None,
            "disabled_reason": self.disabled_reason,
            "in_flight": self.in_flight,
            "successes": self.successes,
            "failures": self.failures,
            "last_error": self.last_error,
        }


@dataclass
class KeyPool:
    upstream: str
    max_concurrent: int
    states: list[KeyState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._freed = asyncio.Event()

    @classmethod
    def from_secrets(cls, upstream: str, secrets: tuple[str, ...], max_concurrent: int) -> KeyPool:
        pool = cls(upstream, max_concurrent)
        for secret in secrets:
            pool.states.append(KeyState(UpstreamKey(upstream, key_label(upstream, secret), secret)))
        return pool

    def get(self, label: str) -> KeyState | None:
        return next((s for s in self.states if s.key.label == label), None)

    def acquire(self, avoid: set[str] = frozenset(), now: float | None = None) -> KeyState | None:
        """Take a slot on the best usable key, preferring keys not in `avoid`; None when none is free."""
        now = time.monotonic() if now is None else now
        usable = [s for s in self.states if s.state(now) == "healthy" and s.in_flight < self.max_concurrent]
        if not usable:
            return None
        fresh = [s for s in usable if s.key.label not in avoid] or usable
        best = min(fresh, key=lambda s: (s.strikes, s.in_flight, s.last_used))
        best.in_flight += 1
        best.last_used = now
        return best

    def hold(self, state: KeyState) -> None:
        """Count a job resumed after a restart against its key's concurrency."""
        state.in_flight += 1

    def release(self, state: KeyState) -> None:
        state.in_flight = max(0, state.in_flight - 1)
        self._freed.set()
        self._freed = asyncio.Event()

    async def wait_for_slot(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._freed.wait(), timeout)
        except TimeoutError:
            pass

    def exhausted(self, now: float | None = None) -> bool:
        """Every key is disabled or cooling (busy keys are not exhausted: they free up)."""
        now = time.monotonic() if now is None else now
        return all(s.state(now) != "healthy" for s in self.states)

    def earliest_recovery(self, now: float | None = None) -> float | None:
        """Seconds until the first cooling key is usable again, None if every key is disabled."""
        now = time.monotonic() if now is None else now
        ends = [s.cooling_until - now for s in self.states if not s.disabled and s.cooling_until > now]
        return max(0.0, min(ends)) if ends else None

    def succeeded(self, state: KeyState) -> None:
        state.successes += 1
        state.strikes = 0

    def failed(self, state: KeyState, effect: KeyEffect, reason: str, retry_after: float | None = None) -> None:
        state.failures += 1
        state.last_error = reason
        if effect is KeyEffect.COOL:
            state.strikes += 1
            state.cooling_until = time.monotonic() + cooldown_s(retry_after, state.strikes)
        elif effect is KeyEffect.DISABLE:
            state.disabled = True
            state.disabled_reason = reason
        elif effect is KeyEffect.STRIKE:
            state.strikes += 1

    def enable(self, label: str) -> bool:
        state = self.get(label)
        if state is None:
            return False
        state.disabled = False
        state.disabled_reason = None
        state.cooling_until = 0.0
        state.strikes = 0
        return True

    def snapshot(self) -> list[dict]:
        now = time.monotonic()
        return [s.public(now) for s in self.states]
