"""Which status changes of a job get a line of their own in a chat stream.

Every line a stream writes stays in the chat for good (and UIs send it back with every later message), so a
line is written when the job is queued, when it starts, and when its progress passes a multiple of
`[chat] progress_step`: about a dozen lines however long the job runs. The machine-readable `video` object of
each chunk still carries every step.
"""
from __future__ import annotations

from gateway.core.formats import StreamFormat

_WAITING = ("submitting", "queued")


class ProgressLines:
    __slots__ = ("fmt", "step", "_last")

    def __init__(self, fmt: StreamFormat, step: int) -> None:
        self.fmt = fmt
        self.step = step
        self._last: int | None = None  # -1 once the queued line is written, then the last step written

    def line(self, status: str, progress: float) -> str | None:
        """The status line to write for this state, or None when it is no news worth a line."""
        if status in _WAITING:
            if self._last is not None:
                return None
            self._last = -1
            return self.fmt.queued
        reached = int(progress // self.step)
        if self._last is not None and self._last >= 0 and reached <= self._last:
            return None
        self._last = reached
        return self.fmt.progress(progress)
