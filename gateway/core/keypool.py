"""A pool of upstream keys: rotation to the healthiest, least-busy key, cooldowns and disabling.

With a shared coordinator, cooldowns and disabled keys are published to every instance, and a key's
concurrency slots are leased in Redis so they add up across instances and free themselves when an
instance dies.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from gateway.core.coordination import Coordinator, KeyHealth, wall_to_monotonic
from gateway.core.faults import STRIKES_TO_REST, KeyEffect, cooldown_s
from gateway.core.upstream import UpstreamKey

SLOT_LEASE_S = 60.0  # renewed while the job runs; a dead instance's slots expire after this
SHARED_SLOT_RECHECK_S = 0.5  # a slot freed by another instance sends no wake-up here: look again this often


def key_label(upstream: str, secret: str) -> str:
    """A stable, safe name for a key: its upstream and a short fingerprint, never the key itself."""
    return f"{upstream}:{hashlib.sha256(secret.encode()).hexdigest()[:8]}"


@dataclass(slots=True)
class KeyState:
    key: UpstreamKey
    in_flight: int = 0
    cooling_until: float = 0.0  # monotonic
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


@dataclass(slots=True)
class KeySlot:
    """One job's hold on a key: released when the job ends."""

    state: KeyState
    token: str
    released: bool = False

    @property
    def key(self) -> UpstreamKey:
        return self.state.key


@dataclass
class KeyPool:
    upstream: str
    max_concurrent: int
    coordinator: Coordinator
    states: list[KeyState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._freed = asyncio.Event()

    @classmethod
    def from_secrets(cls, upstream: str, secrets: tuple[str, ...], max_concurrent: int,
                     coordinator: Coordinator) -> KeyPool:
        pool = cls(upstream, max_concurrent, coordinator)
        for secret in secrets:
            pool.states.append(KeyState(UpstreamKey(upstream, key_label(upstream, secret), secret)))
        return pool

    def get(self, label: str) -> KeyState | None:
        return next((s for s in self.states if s.key.label == label), None)

    async def acquire(self, avoid: set[str] = frozenset(), prefer: frozenset[str] = frozenset()) -> KeySlot | None:
        """Take a slot on the best usable key, preferring keys not in `avoid`, then keys in `prefer` (those that
        already hold what the job needs, e.g. its characters); None when none is free."""
        now = time.monotonic()
        usable = [s for s in self.states if s.state(now) == "healthy" and s.in_flight < self.max_concurrent]
        fresh = [s for s in usable if s.key.label not in avoid] or usable
        for state in sorted(fresh, key=lambda s: (s.key.label not in prefer, s.strikes, s.in_flight, s.last_used)):
            token = await self.coordinator.key_acquire(state.key.label, self.max_concurrent, SLOT_LEASE_S)
            if token is None:
                continue
            state.in_flight += 1
            state.last_used = now
            return KeySlot(state, token)
        return None

    async def hold(self, label: str) -> KeySlot | None:
        """Take a slot on a given key whatever its load: a resumed job, or a remix that must use its key."""
        state = self.get(label)
        if state is None:
            return None
        token = await self.coordinator.key_acquire(label, 1 << 30, SLOT_LEASE_S)
        state.in_flight += 1
        return KeySlot(state, token or "local")

    async def release(self, slot: KeySlot) -> None:
        """Give a slot back; releasing the same slot twice is harmless."""
        if slot.released:
            return
        slot.released = True
        slot.state.in_flight = max(0, slot.state.in_flight - 1)
        self._freed.set()
        self._freed = asyncio.Event()
        await self.coordinator.key_release(slot.key.label, slot.token)

    async def renew(self, slot: KeySlot) -> None:
        await self.coordinator.key_renew(slot.key.label, slot.token, SLOT_LEASE_S)

    async def wait_for_slot(self, timeout: float) -> None:
        """Wait until a slot may be free: one released here, or (shared) a short while for other instances'."""
        if self.coordinator.shared:
            timeout = min(timeout, SHARED_SLOT_RECHECK_S)
        try:
            await asyncio.wait_for(self._freed.wait(), max(timeout, 0.0))
        except TimeoutError:
            pass

    def exhausted(self) -> bool:
        """Every key is disabled or cooling (busy keys are not exhausted: they free up)."""
        now = time.monotonic()
        return all(s.state(now) != "healthy" for s in self.states)

    def earliest_recovery(self) -> float | None:
        """Seconds until the first cooling key is usable again, None if every key is disabled."""
        now = time.monotonic()
        ends = [s.cooling_until - now for s in self.states if not s.disabled and s.cooling_until > now]
        return max(0.0, min(ends)) if ends else None

    def succeeded(self, state: KeyState) -> None:
        state.successes += 1
        state.strikes = 0

    async def failed(self, state: KeyState, effect: KeyEffect, reason: str, retry_after: float | None = None) -> None:
        state.failures += 1
        state.last_error = reason
        if effect is KeyEffect.COOL:
            state.strikes += 1
            rest = cooldown_s(retry_after, state.strikes)
            state.cooling_until = time.monotonic() + rest
            await self.coordinator.set_key_health(state.key.label, KeyHealth(cooling_until=time.time() + rest))
        elif effect is KeyEffect.DISABLE:
            state.disabled = True
            state.disabled_reason = reason
            await self.coordinator.set_key_health(state.key.label, KeyHealth(disabled_reason=reason))
        elif effect is KeyEffect.STRIKE:
            state.strikes += 1
            if state.strikes >= STRIKES_TO_REST:  # timing out again and again: rest it like a rate-limited key
                rest = cooldown_s(None, state.strikes - STRIKES_TO_REST)
                state.cooling_until = time.monotonic() + rest
                await self.coordinator.set_key_health(state.key.label, KeyHealth(cooling_until=time.time() + rest))

    async def enable(self, label: str) -> bool:
        state = self.get(label)
        if state is None:
            return False
        state.disabled = False
        state.disabled_reason = None
        state.cooling_until = 0.0
        state.strikes = 0
        await self.coordinator.set_key_health(label, KeyHealth())
        return True

    async def sync(self, labels: list[str] | None = None) -> None:
        """Adopt the shared health of keys (all of them, or the labels another instance just changed)."""
        wanted = labels or [s.key.label for s in self.states]
        health = await self.coordinator.key_health(wanted)
        for label in wanted:
            state = self.get(label)
            if state is None:
                continue
            shared = health.get(label, KeyHealth())
            state.disabled = shared.disabled_reason is not None
            state.disabled_reason = shared.disabled_reason
            state.cooling_until = wall_to_monotonic(shared.cooling_until) if shared.cooling_until else 0.0

    def reconfigure(self, secrets: tuple[str, ...], max_concurrent: int) -> list[str]:
        """Adopt a reloaded key list: kept keys keep their state (disabled ones are enabled again), new keys
        join, dropped keys leave (jobs still on them keep their slot). Returns what changed, by label."""
        states = {s.key.label: s for s in self.states}
        fresh: list[KeyState] = []
        changes = []
        for secret in secrets:
            label = key_label(self.upstream, secret)
            state = states.pop(label, None)
            if state is None:
                state = KeyState(UpstreamKey(self.upstream, label, secret))
                changes.append(f"{label} added")
            elif state.disabled:
                state.disabled, state.disabled_reason, state.strikes = False, None, 0
                changes.append(f"{label} re-enabled")
            fresh.append(state)
        changes += [f"{label} removed" for label in states]
        self.states = fresh
        self.max_concurrent = max_concurrent
        return changes

    def snapshot(self) -> list[dict]:
        now = time.monotonic()
        return [s.public(now) for s in self.states]
