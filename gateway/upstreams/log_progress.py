"""Progress read from a provider's logs (fal's `logs[].message`, Replicate's `logs` text).

Neither gives a number for a running job, but the model's own output often says how far it is: a percentage
("42%", tqdm's " 42%|████▏     | 21/50 [00:08<00:11]") or a step count ("step 21/50"). The newest such figure is
the job's real progress; a log without one leaves the dialect to ask for an estimate.
"""
from __future__ import annotations

import re

_FIGURE = re.compile(
    r"(?<![\d.])(?P<pct>\d{1,3}(?:\.\d+)?)\s?%"  # 42% / 42.5 %
    r"|\b(?:step|steps|frame|frames|iteration|iter|it)\b\s*[:#]?\s*(?P<n>\d+)\s*/\s*(?P<of>\d+)"  # step 21/50
    r"|\|\s*(?P<bn>\d+)\s*/\s*(?P<bof>\d+)\s*\[",  # tqdm's bar: "| 21/50 ["
    re.IGNORECASE,
)


def percent_in(text: str) -> float | None:
    """The last progress figure in `text` (0-100), or None when it holds none."""
    found = None
    for match in _FIGURE.finditer(text):
        if match["pct"] is not None:
            value = float(match["pct"])
        else:
            done, total = int(match["n"] or match["bn"]), int(match["of"] or match["bof"])
            if total <= 0 or done > total:
                continue
            value = 100.0 * done / total
        if value <= 100.0:
            found = value
    return found


def newest_percent(lines: list[str]) -> float | None:
    """The figure in the newest line that has one."""
    for line in reversed(lines):
        value = percent_in(line)
        if value is not None:
            return value
    return None
