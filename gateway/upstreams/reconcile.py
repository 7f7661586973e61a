"""Finding the job a lost create made, for the dialects whose provider lists a key's recent jobs.

A candidate is a job of the same key with the input that was sent, created around the time it was sent, that no
job of this gateway follows yet (`Claims`: the ids this process handed out, newest last).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

WINDOW_S = 120.0  # how far a job's creation time may be from the create's send time (clock skew included)
_CLAIMS = 10_000


class Claims:
    """The upstream job ids an adapter handed to jobs, bounded: a found job is never given to two."""

    def __init__(self, limit: int = _CLAIMS) -> None:
        self._ids: dict[str, None] = {}
        self._limit = limit

    def add(self, upstream_id: str) -> str:
        self._ids[upstream_id] = None
        while len(self._ids) > self._limit:
            self._ids.pop(next(iter(self._ids)))
        return upstream_id

    def __contains__(self, upstream_id: object) -> bool:
        return upstream_id in self._ids

    def claim_made(self, listing: Any, sent_at: float, made_by: Callable[[dict[str, Any]], bool],
                   valid_id: Callable[[str], object] = lambda _: True) -> str | None:
        """The first job of a provider's listing that a lost create made, claimed: one with a valid id that no
        job follows yet, created around `sent_at`, whose input `made_by` recognises. None when there is none."""
        for job in listing if isinstance(listing, list) else ():
            job_id = job.get("id") if isinstance(job, dict) else None
            if isinstance(job_id, str) and valid_id(job_id) and job_id not in self \
                    and created_near(job.get("created_at"), sent_at) and made_by(job):
                return self.add(job_id)
        return None


def created_near(value: Any, sent_at: float) -> bool:
    """A creation time (epoch seconds, or an ISO 8601 text) within WINDOW_S of `sent_at`."""
    created = _timestamp(value)
    return created is not None and abs(created - sent_at) <= WINDOW_S


def _timestamp(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
