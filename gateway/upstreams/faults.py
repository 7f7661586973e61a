"""The fault table: what an upstream failure means for the key that saw it and for the request.

All retry decisions live here, in one table, instead of in scattered ifs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum


class KeyEffect(Enum):
    NONE = "none"  # the key is fine; the request was at fault
    COOL = "cool"  # rate limited: rest the key until retry-after
    DISABLE = "disable"  # credentials refused: out until an admin re-enables it or the config reloads
    STRIKE = "strike"  # transient failure: count it against the key's health


class Retry(Enum):
    NO = "no"  # hand the error back to the client
    OTHER_KEY = "other_key"  # retry at once on another key
    BACKOFF = "backoff"  # retry after a jittered backoff, on another key where one is free


@dataclass(frozen=True, slots=True)
class Decision:
    key: KeyEffect
    retry: Retry


FAULT_TABLE: dict[int | None, Decision] = {
    400: Decision(KeyEffect.NONE, Retry.NO),
    404: Decision(KeyEffect.NONE, Retry.NO),
    409: Decision(KeyEffect.NONE, Retry.NO),
    413: Decision(KeyEffect.NONE, Retry.NO),
    415: Decision(KeyEffect.NONE, Retry.NO),
    422: Decision(KeyEffect.NONE, Retry.NO),
    401: Decision(KeyEffect.DISABLE, Retry.OTHER_KEY),
    402: Decision(KeyEffect.DISABLE, Retry.OTHER_KEY),
    403: Decision(KeyEffect.DISABLE, Retry.OTHER_KEY),
    408: Decision(KeyEffect.STRIKE, Retry.BACKOFF),
    429: Decision(KeyEffect.COOL, Retry.OTHER_KEY),
    None: Decision(KeyEffect.STRIKE, Retry.BACKOFF),  # timeout, reset, refused connection
}
_SERVER_ERROR = Decision(KeyEffect.STRIKE, Retry.BACKOFF)
_OTHER_CLIENT_ERROR = Decision(KeyEffect.NONE, Retry.NO)


def decide(status: int | None) -> Decision:
    if status in FAULT_TABLE:
        return FAULT_TABLE[status]
    if status is not None and status >= 500:
        return _SERVER_ERROR
    return _OTHER_CLIENT_ERROR


def backoff_s(attempt: int, base: float = 0.25, cap: float = 8.0) -> float:
    """Full-jitter exponential backoff."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


def cooldown_s(retry_after: float | None, strikes: int) -> float:
    """How long a rate-limited key rests: the upstream's word, else an exponential backoff."""
    if retry_after is not None and retry_after > 0:
        return min(retry_after, 3600.0)
    return min(60.0, 1.0 * (2 ** min(strikes, 6))) * random.uniform(0.8, 1.2)
