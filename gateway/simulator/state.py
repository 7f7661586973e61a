"""Everything the simulator remembers: the calls it answered and the jobs it runs."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from .behaviour import Outcome


@dataclass(frozen=True, slots=True)
class Call:
    """One request. `status` is 0 when the simulator never answered (the "hang" fault)."""

    method: str
    path: str
    key: str  # the bearer token, "" when none was sent
    status: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Reference:
    """The input reference of a video job, as received."""

    source: str  # "file" | "image_url" | "file_id" | "video_id" (an edit's or extension's source, by id)
    mime: str | None = None
    size: int = 0  # bytes received; 0 for a plain URL or a file id
    value: str | None = None  # the URL or file id


@dataclass(slots=True)
class VideoJob:
    id: str
    key: str
    model: str
    prompt: str
    seconds: str
    size: str
    outcome: Outcome
    created_at: float  # wall clock, for the API's timestamps
    started: float  # monotonic clock, drives the job's progress
    remixed_from_video_id: str | None = None
    reference: Reference | None = None
    characters: tuple[str, ...] = ()  # the character ids the create named
    source: Reference | None = None  # an edit's or extension's source video: by id or an upload
    operation: str = "create"  # create | remix | edit | extension


@dataclass(slots=True)
class Character:
    id: str
    key: str  # a character belongs to the account (key) that made it
    name: str
    created_at: float
    size: int  # bytes of the clip it was made from


@dataclass(slots=True)
class ChatJob:
    id: str
    key: str
    family: str
    language: str
    model: str
    prompt: str
    images: int  # image parts in the last user message
    outcome: Outcome
    orientation: str = "portrait"
    finished: bool = False  # the stream handed out its links: /files/{id}.* now serve content


class SimulatorState:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.videos: dict[str, VideoJob] = {}  # in creation order
        self.characters: dict[str, Character] = {}
        self.chats: dict[str, ChatJob] = {}
        self.provider_jobs: dict[str, Any] = {}  # the provider fakes' jobs (gemini, fal, …), by id
        self.deliveries: list[Any] = []  # the provider fakes' webhook deliveries (callbacks.Delivery), in order
        self._calls_per_key: Counter[str] = Counter()
        self._lost: set[str] = set()  # keys whose "[lost]" create already lost its answer once
        # Tests hold content downloads here: while the gate is closed, a download waits (and is counted) until
        # it opens. None: downloads answer at once.
        self.content_gate: threading.Event | None = None
        self.content_held = 0
        # Tests make one variant's downloads fail: variant -> the HTTP status its content answers with.
        self.content_errors: dict[str, int] = {}

    def record(self, call: Call) -> None:
        self.calls.append(call)

    def count(self, method: str | None = None, path_prefix: str | None = None, key: str | None = None) -> int:
        return sum(
            1
            for call in list(self.calls)
            if (method is None or call.method == method)
            and (path_prefix is None or call.path.startswith(path_prefix))
            and (key is None or call.key == key)
        )

    def next_call_number(self, key: str) -> int:
        """1 for the first call of `key`, 2 for the second, ... (drives the "flaky" fault)."""
        self._calls_per_key[key] += 1
        return self._calls_per_key[key]

    def answer_lost(self, key: str, prompt: str) -> bool:
        """True for the first create of `key` whose prompt says `[lost]`: the job exists, but its answer is lost on
        the way back (a proxy's 502), which is what a create that may or may not have happened looks like."""
        if "[lost]" not in prompt or key in self._lost:
            return False
        self._lost.add(key)
        return True

    def reset(self) -> None:
        self.calls.clear()
        self.videos.clear()
        self.characters.clear()
        self.chats.clear()
        self.provider_jobs.clear()
        self.deliveries.clear()
        self._calls_per_key.clear()
        self._lost.clear()
