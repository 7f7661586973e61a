"""The gateway's own progress figure for jobs whose upstream reports none (Gemini, OpenRouter, fal or Replicate
without a percentage in their logs).

It is the time since the job was recorded against how long jobs of the same upstream model took, from being
recorded to the upstream's "done", in this process lately (per second of video, so an 8-second clip is expected
to take twice a 4-second one). It stays below ESTIMATE_CAP until the upstream says the job is done, and the
lifecycle never lets a job's progress go down, so a job slower than usual waits at the cap rather than going
back. Clients see the figure marked `progress_estimated`.
"""
from __future__ import annotations

from collections import deque

ESTIMATE_CAP = 95.0  # an estimate never claims more: only the upstream's "done" makes a job complete
DEFAULT_S_PER_VIDEO_SECOND = 15.0  # before any job of the model has finished here (Veo: ~40 s for a 4 s clip)
SAMPLES = 20  # recent finished jobs per upstream model the expectation is the mean of
_MODELS = 1000  # upstream models remembered at most (each a handful of numbers)


class JobDurations:
    """How long recent jobs took, per (upstream, upstream model), in this process's memory."""

    def __init__(self) -> None:
        self._rates: dict[tuple[str, str], deque[float]] = {}

    def finished(self, upstream: str, model: str, seconds: int, took_s: float) -> None:
        """A job of `seconds` of video that took `took_s` from being recorded to the upstream's "done"."""
        if took_s <= 0 or seconds <= 0:
            return
        key = (upstream, model)
        if key not in self._rates and len(self._rates) >= _MODELS:
            self._rates.pop(next(iter(self._rates)))
        self._rates.setdefault(key, deque(maxlen=SAMPLES)).append(took_s / seconds)

    def expected_s(self, upstream: str, model: str, seconds: int) -> float:
        rates = self._rates.get((upstream, model))
        rate = sum(rates) / len(rates) if rates else DEFAULT_S_PER_VIDEO_SECOND
        return rate * max(seconds, 1)

    def estimate(self, upstream: str, model: str, seconds: int, elapsed_s: float) -> float:
        """Percent done by the clock, capped below 100, in whole points: clients see whole points anyway, and a
        job's state is published only when it changes."""
        expected = self.expected_s(upstream, model, seconds)
        return float(int(min(ESTIMATE_CAP, max(0.0, 100.0 * elapsed_s / expected))))
