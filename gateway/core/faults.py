"""The fault table: what an upstream failure means for the key that saw it and for the work at hand.

Every upstream operation (submit, poll, list, download, a relay's stream, making a character) is decided here,
by operation and HTTP status (None for a timeout, reset or refused connection), instead of in scattered ifs. A
dialect that behaves differently contributes rows of its own (`Upstream.faults`), which take precedence over the
common ones.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Operation(Enum):
    SUBMIT = "submit"  # create the upstream job
    POLL = "poll"  # read one job's status
    LIST = "list"  # read a page of a key's jobs
    DOWNLOAD = "download"  # fetch a finished job's content
    STREAM = "stream"  # a relay's event stream, which is the job
    CHARACTER = "character"  # make a job's character on the key that will run it


class KeyEffect(Enum):
    NONE = "none"  # the key is fine; the request was at fault
    COOL = "cool"  # rate limited: rest the key until retry-after
    DISABLE = "disable"  # credentials refused: out until an admin re-enables it or the config reloads
    STRIKE = "strike"  # transient failure: counts against the key; STRIKES_TO_REST in a row rest it


class Action(Enum):
    CLIENT = "client"  # hand the error to the client; never retried
    OTHER_KEY = "other_key"  # retry at once on another key (only a create can move)
    BACKOFF = "backoff"  # retry after a jittered backoff (a create on another key where one is free)
    GONE = "gone"  # the upstream job or its content is gone: the job fails
    UNSUPPORTED = "unsupported"  # the upstream lacks this endpoint: use the fallback (list → one poll per job)
    # A create that may have reached the upstream (a timeout or reset once the body was sent, a 502/504):
    # look for the job it may have made before sending another, which could be paid twice (none of the
    # providers takes an idempotency key). What happens when it cannot be found is the upstream's
    # `on_ambiguous_create`.
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class Decision:
    key: KeyEffect
    action: Action


FaultRows = Mapping[tuple[Operation, int | None], Decision]

STRIKES_TO_REST = 3  # consecutive transient failures after which a key rests like a rate-limited one
# Upstream error codes that mean a content policy refused the prompt or the image: terminal, never a key switch.
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "people-in-user-uploads"})

_CLIENT = Decision(KeyEffect.NONE, Action.CLIENT)
_GONE = Decision(KeyEffect.NONE, Action.GONE)
_TRANSIENT = Decision(KeyEffect.STRIKE, Action.BACKOFF)
_RATE_LIMITED_READ = Decision(KeyEffect.COOL, Action.BACKOFF)
_AMBIGUOUS = Decision(KeyEffect.STRIKE, Action.RECONCILE)

# Statuses that mean the same for every operation.
_COMMON: dict[int | None, Decision] = {
    408: _TRANSIENT,
    None: _TRANSIENT,
}
# Per operation: the rows for specific statuses, then what any other 4xx means (5xx is always transient).
_BY_OPERATION: dict[Operation, tuple[dict[int, Decision], Decision]] = {
    Operation.SUBMIT: ({
        401: Decision(KeyEffect.DISABLE, Action.OTHER_KEY),
        402: Decision(KeyEffect.DISABLE, Action.OTHER_KEY),
        403: Decision(KeyEffect.DISABLE, Action.OTHER_KEY),
        429: Decision(KeyEffect.COOL, Action.OTHER_KEY),
        None: _AMBIGUOUS,  # a timeout or a reset after the body went out (never connected: see `decide`)
        502: _AMBIGUOUS,  # a proxy that lost the upstream's answer
        504: _AMBIGUOUS,  # a proxy that stopped waiting for it
    }, _CLIENT),
    Operation.POLL: ({
        401: Decision(KeyEffect.DISABLE, Action.BACKOFF),  # the job lives on this key's account: wait for it
        403: Decision(KeyEffect.DISABLE, Action.BACKOFF),
        429: _RATE_LIMITED_READ,
    }, _GONE),
    Operation.LIST: ({
        400: Decision(KeyEffect.NONE, Action.UNSUPPORTED),
        404: Decision(KeyEffect.NONE, Action.UNSUPPORTED),
        405: Decision(KeyEffect.NONE, Action.UNSUPPORTED),
        501: Decision(KeyEffect.NONE, Action.UNSUPPORTED),
        401: Decision(KeyEffect.DISABLE, Action.BACKOFF),
        403: Decision(KeyEffect.DISABLE, Action.BACKOFF),
        429: _RATE_LIMITED_READ,
    }, _TRANSIENT),
    Operation.DOWNLOAD: ({
        401: Decision(KeyEffect.DISABLE, Action.GONE),
        403: Decision(KeyEffect.DISABLE, Action.GONE),
        429: _RATE_LIMITED_READ,
    }, _GONE),
    Operation.STREAM: ({}, _GONE),
    # Like a create: a character is made before the job, on the key the job will use, and may move with it.
    Operation.CHARACTER: ({
        401: Decision(KeyEffect.DISABLE, Action.OTHER_KEY),
        402: Decision(KeyEffect.DISABLE, Action.OTHER_KEY),
        403: Decision(KeyEffect.DISABLE, Action.OTHER_KEY),
        429: Decision(KeyEffect.COOL, Action.OTHER_KEY),
    }, _CLIENT),
}
_STREAM_BROKEN = Decision(KeyEffect.STRIKE, Action.GONE)  # a relay job does not outlive its stream


def decide(operation: Operation, status: int | None, rows: FaultRows | None = None, *,
           sent: bool = True) -> Decision:
    """What a failure means. `sent=False` (the connection was never made) makes a failed create plainly
    transient: nothing can have been created."""
    if operation is Operation.SUBMIT and status is None and not sent:
        return _TRANSIENT
    if rows and (operation, status) in rows:
        return rows[(operation, status)]
    specific, other_client_error = _BY_OPERATION[operation]
    if status in specific:
        return specific[status]
    if operation is Operation.STREAM and (status is None or status >= 500):
        return _STREAM_BROKEN
    if status in _COMMON:
        return _COMMON[status]
    if status is not None and status >= 500:
        return _TRANSIENT
    return other_client_error


def is_refusal(code: str | None) -> bool:
    return code in REFUSAL_CODES


def backoff_s(attempt: int, base: float = 0.25, cap: float = 8.0) -> float:
    """Full-jitter exponential backoff."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


def cooldown_s(retry_after: float | None, strikes: int) -> float:
    """How long a resting key rests: the upstream's word, else an exponential backoff."""
    if retry_after is not None and retry_after > 0:
        return min(retry_after, 3600.0)
    return min(60.0, 1.0 * (2 ** min(strikes, 6))) * random.uniform(0.8, 1.2)
