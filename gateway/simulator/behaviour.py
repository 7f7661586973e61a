"""What a request asks the simulator to do, read from its key and its prompt.

Keys: a fault prefix (`sk-429-…`, `sk-401-…`, `sk-403-…`, `sk-500-…`, `sk-flaky-…`, `sk-flakyread-…` (every
other read fails, creates never), `sk-slow-…`,
`sk-slowcreate-…`, `sk-hang-…`) and,
anywhere in the key, `fam-a|fam-b|fam-c` and `-en-|-zh-` markers choosing the chat family and language
(`sk-slow-fam-b-en-1`). Prompts: `[refuse]`, `[fail]` and (chat only) `[error]` choose how the job ends;
`[lost]` makes a key's first such create happen but answer 502, as a proxy that lost the answer would (every kind
but chat).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .settings import FAULTS, SimulatorSettings

Outcome = Literal["complete", "refuse", "fail", "error"]

_FAULT = re.compile(r"^sk-(" + "|".join(FAULTS) + r")(?:-|$)")
_FAMILY = re.compile(r"(?:^|-)fam-([abc])(?:-|$)")
_LANGUAGE = re.compile(r"-(en|zh)(?=-|$)")
_TRIGGERS: tuple[tuple[str, Outcome], ...] = (
    ("[refuse]", "refuse"),
    ("[fail]", "fail"),
    ("[error]", "error"),
)


@dataclass(frozen=True, slots=True)
class KeyProfile:
    fault: str  # "" when the key is healthy
    family: str
    language: str


def profile_for(key: str, settings: SimulatorSettings) -> KeyProfile:
    fault = _FAULT.match(key)
    family = _FAMILY.search(key)
    language = _LANGUAGE.search(key)
    return KeyProfile(
        fault=fault.group(1) if fault else settings.faults,
        family=family.group(1) if family else settings.family,
        language=language.group(1) if language else settings.language,
    )


def outcome_for(prompt: str) -> Outcome:
    for marker, outcome in _TRIGGERS:
        if marker in prompt:
            return outcome
    return "complete"
