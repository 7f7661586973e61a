"""Which status changes of a job get a line of their own in a chat stream.

Every line a stream writes stays in the chat for good (and UIs send it back with every later message), so a
line is written when the job is queued, when it starts, and when its progress passes a multiple of
`[chat] progress_step`: about a dozen lines however long the job runs. The machine-readable `video` object of
each chunk still carries every step.

An estimated figure reads as one (`about 42%` in markdown). The place in the upstream's queue gets one line of its
own, the first time it is known, in the presets that have room for it; the `video` object follows every change.
"""
from __future__ import annotations

from gateway.core.formats import StreamFormat

_WAITING = ("submitting", "queued")


class ProgressLines:
    __slots__ = ("fmt", "step", "_last", "_placed")

    def __init__(self, fmt: StreamFormat, step: int) -> None:
        self.fmt = fmt
        self.step = step
        self._last: int | None = None  # -1 once the queued line is written, then the last step written
        self._placed = False  # a queued line with the queue position is written

    def line(self, status: str, progress: float, estimated: bool = False,
             queue_position: int | None = None) -> str | None:
        """The status line to write for this state, or None when it is no news worth a line."""
        if status in _WAITING:
            placed = queue_position is not None and self.fmt.queued_at is not None
            if self._last is not None and (self._last >= 0 or self._placed or not placed):
                return None
            self._last, self._placed = -1, placed
            return self.fmt.queued_at(queue_position) if placed else self.fmt.queued  # type: ignore[misc]
        reached = int(progress // self.step)
        if self._last is not None and self._last >= 0 and reached <= self._last:
            return None
        self._last = reached
        return self.fmt.estimate(progress) if estimated else self.fmt.progress(progress)
