"""Plain records that cross the storage interface, whichever backend holds them."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

JobStatus = Literal["submitting", "queued", "in_progress", "completed", "failed"]
ACTIVE_STATES: tuple[JobStatus, ...] = ("submitting", "queued", "in_progress")
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed"})
_RANK = {"submitting": 0, "queued": 1, "in_progress": 2, "completed": 3, "failed": 3}


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATES


def public_status(status: str) -> str:
    """What a client sees: a job the upstream has not accepted yet is simply queued."""
    return "queued" if status == "submitting" else status


def status_rank(status: str) -> int:
    """Jobs only move forward: submitting < queued < in_progress < completed | failed."""
    return _RANK.get(status, 0)


class _Row:
    """A record stored as one row: its column names and values, in field order."""

    __slots__ = ()

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.columns())


@dataclass(slots=True)
class JobRecord(_Row):
    id: str
    team: str
    key_id: str
    model: str
    upstream_model: str
    prompt: str
    size: str
    seconds: int
    created_at: float
    status: JobStatus = "submitting"
    progress: float = 0.0
    upstream: str = ""
    upstream_key: str = ""  # the key's label, never its value
    upstream_job_id: str = ""
    error_code: str | None = None
    error_message: str | None = None
    refused: bool = False
    completed_at: float | None = None
    cache_key: str | None = None
    remixed_from: str | None = None
    request_id: str = ""
    user: str | None = None
    price: float = 0.0
    has_thumbnail: bool = False
    deleted: bool = False
    reservation_id: str | None = None  # the quota reservation this job holds until it ends
    webhook_url: str | None = None  # where this request asked to hear of the job's end (besides its team's URL)
    edited_from: str | None = None  # the gateway id of the video this job edits
    extended_from: str | None = None  # the gateway id of the video this job extends
    base_seconds: int = 0  # an extension's source length: the video is base_seconds + seconds long
    resubmitted: bool = False  # sent to the upstream again after a create whose answer was lost
    progress_estimated: bool = False  # `progress` is the gateway's estimate: the upstream reports none
    queue_position: int | None = None  # the job's place in the upstream's queue while queued, where it says

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATES


@dataclass(slots=True)
class KeyRecord:
    id: str
    team: str
    name: str
    hash: str = field(repr=False)
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


@dataclass(slots=True)
class LedgerRow:
    request_id: str
    time: float
    team: str
    key_id: str
    model: str
    size: str
    seconds: int
    outcome: str  # pending | completed | failed | refused | rejected | cache_hit
    cost_usd: float = 0.0
    user: str | None = None
    job_id: str | None = None
    upstream: str | None = None
    upstream_key: str | None = None
    latency_ms: float | None = None
    resubmitted: bool = False  # the job was sent again after a create whose answer was lost: maybe paid twice


@dataclass(slots=True)
class WebhookEvent(_Row):
    """One event in the webhook outbox: delivered at least once to `url`, with `id` as its `webhook-id`."""

    id: str  # evt_…
    team: str
    url: str
    type: str  # video.completed | video.failed
    body: str  # the JSON body, exactly as signed and sent
    created_at: float
    job_id: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    delivered_at: float | None = None
    failed_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None


@dataclass(slots=True)
class CharacterRecord:
    """A team's character: a person, pet or object kept the same across videos. `media` is the clip it was
    made from, kept so the character can be made again on any upstream account that runs a job using it."""

    id: str
    team: str
    name: str
    created_at: float
    media: bytes = field(repr=False)
    source: str = "upload"  # upload | video (one of the team's videos) | url
    source_video_id: str | None = None
    deleted: bool = False
