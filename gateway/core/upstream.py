"""The small interface every upstream dialect implements, and the values that cross it.

Dialects live in `gateway.upstreams` and import this module; the core never imports a dialect.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.core.records import TERMINAL_STATES

JobState = Literal["queued", "in_progress", "completed", "failed"]  # what an upstream reports


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    """One credential of an upstream. `label` is safe to show; `secret` never leaves this process."""

    upstream: str
    label: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ImageInput:
    data: bytes = field(repr=False)
    mime: str  # image/jpeg | image/png | image/webp

    @property
    def filename(self) -> str:
        return "reference." + self.mime.split("/", 1)[1]


@dataclass(frozen=True, slots=True)
class VideoInput:
    """An uploaded MP4: the source of an edit or an extension, or the clip a character is made from."""

    data: bytes = field(repr=False)
    mime: str = "video/mp4"
    filename: str = "source.mp4"


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """What one upstream job must produce, in upstream terms."""

    upstream_model: str
    prompt: str
    size: str
    seconds: int
    image: ImageInput | None = None
    remix_of: str | None = None  # upstream id of the video to remix (videos dialect only)
    edit_of: str | None = None  # upstream id of the video to edit, on the key that made it
    extend_of: str | None = None  # upstream id of the video to extend by `seconds`, on the key that made it
    video: VideoInput | None = None  # an uploaded source: edited, or extended by `seconds`
    operation: str = "create"  # create | edit | extension
    characters: tuple[str, ...] = ()  # upstream character ids, on the key the job runs on
    image_model: str | None = None  # the provider model for a request with an image, when it is another one
    params: Mapping[str, Any] = field(default_factory=dict)  # the model's `upstream_params`, for the provider input


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """A snapshot of an upstream job, whatever the dialect.

    A provider that says how far a running job is gives `progress` (0-100). One that does not (or not in this
    snapshot) sets `progress_estimated`: the lifecycle then fills in its own estimate from the job's elapsed time,
    and clients see that it is one. `queue_position` is the provider's place in its queue (0: next), while queued.
    """

    status: JobState
    progress: float = 0.0
    progress_estimated: bool = False
    queue_position: int | None = None
    video_url: str | None = None  # where the finished MP4 can be downloaded (chat relays)
    thumbnail_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    refused: bool = False  # the prompt or image was refused by a content policy

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATES


class UpstreamError(Exception):
    """An upstream HTTP call failed. `status` is None for timeouts and connection errors; `sent` is False when
    the request cannot have reached the upstream (the connection was never made), which makes a failed create
    safe to send again."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sent = sent
        self.status = status
        self.retry_after = retry_after
        self.code = code
        self.param = param


class JobLost(Exception):
    """The upstream job can no longer be followed (e.g. a relay stream that ended with the process)."""


class Upstream(Protocol):
    """A dialect may also declare `features` (a frozenset of "edits", "extensions", "characters"; none when
    absent) and, with "characters", `async create_character(name, video: VideoInput, key) -> upstream id`."""

    name: str
    kind: str

    async def submit(self, spec: GenerationSpec, key: UpstreamKey) -> str:
        """Start a job; return the upstream's job id. Raises UpstreamError."""

    def track(self, upstream_id: str, key: UpstreamKey) -> AsyncIterator[UpstreamStatus]:
        """Yield status snapshots until a terminal one. Raises UpstreamError, JobLost."""

    async def download(
        self, upstream_id: str, key: UpstreamKey, final: UpstreamStatus, variant: str
    ) -> AsyncIterator[bytes] | None:
        """Stream the finished content of `variant` (video | thumbnail | spritesheet); None when the upstream
        has none."""

    async def aclose(self) -> None: ...
