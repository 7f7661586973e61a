"""Reading the progress text of "Sora-2 chat format" relays.

Relays stream a job as `chat.completion.chunk` events whose `delta.content` / `delta.reasoning_content` hold
human-readable progress and, at the end, a link to the MP4. Every relay family words this differently, so each
family is one `RelayFamily` table of regexes, and `RelayStreamParser` turns a stream into `UpstreamStatus`
snapshots whichever family (or mix of families) is speaking.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core.upstream import JobState, UpstreamStatus

# Anything that marks a line as the relay giving up on the job.
FAILURE_MARKERS = re.compile(
    r"❌|🚫|错误|失败|content[ _-]?polic|policy violation|generation failed|failed to generate", re.IGNORECASE
)
# Wording that says the prompt or image itself was refused.
POLICY_WORDS = re.compile(
    r"polic|violat|moderat|guardrail|prohibited|inappropriate|unsafe|not allowed|sensitive"
    r"|违规|违反|敏感|审核|不合规|不当|安全",
    re.IGNORECASE,
)
# Wording that blames the relay's infrastructure rather than the prompt.
INFRA_WORDS = re.compile(
    r"time[ds]?[ -]?out|busy|overload|rate[ _-]?limit|too many requests|quota|insufficient|balance"
    r"|internal|server error|network|unavailable|try again"
    r"|超时|繁忙|限流|频繁|额度|余额|服务器|网络|不可用|重试",
    re.IGNORECASE,
)
POLICY_ERROR_CODES = frozenset({"content_policy_violation", "moderation_blocked", "content_filter"})

_URL = r"(?P<url>https?://[^\s)\"'<>]+)"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class RelayFamily:
    """The patterns one relay family writes.

    `progress` captures one or more complete numbers in group `pct`, URL patterns capture group `url`, `task_id`
    group `id`. `queued` only serves to recognise the family: every job is queued until progress shows.
    """

    name: str
    progress: re.Pattern[str]
    queued: re.Pattern[str]
    video_url: re.Pattern[str]
    running: re.Pattern[str] | None = None
    thumbnail_url: re.Pattern[str] | None = None
    task_id: re.Pattern[str] | None = None
    refusal: re.Pattern[str] = FAILURE_MARKERS
    failure: re.Pattern[str] = INFRA_WORDS

    def recognises(self, text: str) -> bool:
        patterns = (
            self.progress,
            self.queued,
            self.video_url,
            self.running,
            self.thumbnail_url,
            self.task_id,
        )
        return any(pattern is not None and pattern.search(text) for pattern in patterns)


# laozhang, APIYI, qhaigc, wanjiedata: "> 🏃 进度：37.0%", "[点击这里](url)".
FAMILY_A = RelayFamily(
    name="a",
    progress=re.compile(r"(?:进度|Progress)\s*[:：]\s*(?P<pct>\d{1,3}(?:\.\d+)?)\s*%", re.IGNORECASE),
    queued=re.compile(r"⌛|任务正在队列中|\bin (?:the )?queue\b", re.IGNORECASE),
    video_url=re.compile(r"\[\s*(?:点击这里|click here)\s*\]\(\s*" + _URL + r"\s*\)", re.IGNORECASE),
)

# asyncdata.net resellers (Tuzi, Comfly, DMXAPI): "> 🏃 进度 42..54..67..", numbers split across chunks, so a
# number only counts once its terminator ("..", "…", "%" or whitespace) has arrived.
FAMILY_B = RelayFamily(
    name="b",
    progress=re.compile(
        r"(?:进度|Progress)[ \t]*[:：]?[ \t]*(?P<pct>(?:\d{1,3}(?:\.\d+)?(?:\.{2,}|…|%|\s+))+)", re.IGNORECASE
    ),
    queued=re.compile(r"排队中|\bQueuing\b", re.IGNORECASE),
    running=re.compile(r"生成中|\bGenerating\b", re.IGNORECASE),
    video_url=re.compile(r"\[\s*(?:在线播放|Play Online)[^\]]*\]\(\s*" + _URL + r"\s*\)", re.IGNORECASE),
    thumbnail_url=re.compile(r"!\[[^\]]*\]\(\s*" + _URL + r"\s*\)"),
    task_id=re.compile(r"\bID:\s*`?(?P<id>[\w][\w:.-]*)(?=[`\s])"),
)

# sora2api: "**Video Generation Progress**: 45% (running)" as reasoning, then an HTML <video> tag as content.
FAMILY_C = RelayFamily(
    name="c",
    progress=re.compile(
        r"Video Generation Progress\**\s*[:：]\s*(?P<pct>\d{1,3}(?:\.\d+)?)\s*%(?!\s*\((?:queued|pending)\))",
        re.IGNORECASE,
    ),
    queued=re.compile(
        r"Video Generation Progress\**\s*[:：]\s*[\d.]+\s*%\s*\((?:queued|pending)\)", re.IGNORECASE
    ),
    video_url=re.compile(r"<video\b[^>]*?\bsrc\s*=\s*(?P<q>[\"'])" + _URL + r"(?P=q)", re.IGNORECASE),
    thumbnail_url=re.compile(r"<video\b[^>]*?\bposter\s*=\s*(?P<q>[\"'])" + _URL + r"(?P=q)", re.IGNORECASE),
)

FAMILIES: tuple[RelayFamily, ...] = (FAMILY_A, FAMILY_B, FAMILY_C)

# Last-resort rules, for relays that word things in none of the ways above: whatever a relay says, its answer
# ends with the video somewhere, and a job that is running says so. These apply only where no family matched.
_VIDEO_PATH = re.compile(r"\.(?:mp4|webm|mov|m4v)(?:[?#]|$)", re.IGNORECASE)
_ANY_LINK = re.compile(r"(?P<image>!?)\[(?P<label>[^\]]*)\]\(\s*" + _URL + r"\s*\)")
_ANY_URL = re.compile(_URL)
_VIDEO_WORDS = re.compile(r"video|play|watch|download|视频|播放|观看|下载|查看", re.IGNORECASE)
_RUNNING_WORDS = re.compile(r"\b(?:generating|rendering|processing|in progress)\b|生成中|正在生成|处理中|渲染中",
                            re.IGNORECASE)
_URL_KEYS = frozenset({"url", "video_url", "video", "download_url", "src"})
_STANDARD_DELTA = frozenset({"content", "reasoning_content", "role", "tool_calls", "function_call", "refusal"})


def video_link(text: str) -> str | None:
    """A video URL in a line no family recognised: a link labelled or shaped like a video, a URL whose path is
    a video file, or a URL that is the whole line."""
    for match in _ANY_LINK.finditer(text):
        url = match.group("url")
        if not match.group("image") and is_http_url(url) and (_VIDEO_PATH.search(url)
                                                               or _VIDEO_WORDS.search(match.group("label"))):
            return url
    for match in _ANY_URL.finditer(text):
        if _VIDEO_PATH.search(match.group("url")):
            return match.group("url")
    whole = text.strip().strip("<>")
    return whole if _ANY_URL.fullmatch(whole) and is_http_url(whole) else None


def urls_in(value: object, key: str = "") -> Iterator[str]:
    """URLs a relay put in delta fields of its own (`delta.output[].url` and the like)."""
    if isinstance(value, str):
        if is_http_url(value) and (key in _URL_KEYS or _VIDEO_PATH.search(value)):
            yield value
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from urls_in(item, str(name).lower())
    elif isinstance(value, list):
        for item in value:
            yield from urls_in(item, key)


def json_error(text: str) -> object | None:
    """The error of a line that is a JSON object with an `error` (some relays report failures so)."""
    line = text.strip()
    if not (line.startswith("{") and line.endswith("}") and '"error"' in line):
        return None
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return document.get("error") if isinstance(document, dict) and document.get("error") else None

# Relays echo the request (prompt included) in fenced blocks, so text inside a fence is only read when the fence
# is one a family puts its result in. Otherwise a prompt containing "失败" or a link would be taken for the
# relay's own words.
_FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
_RESULT_FENCES = frozenset({"html"})
_MAX_LINE = 64 * 1024
_MAX_FAILURE_LINES = 8

_EMOJI = re.compile(
    r"[\U0001F000-\U0001FAFF\u2190-\u21FF\u2300-\u23FF\u2460-\u27BF\u2B00-\u2BFF\uFE0E\uFE0F\u200D]"
)
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*\*|__|`")


def readable(line: str) -> str:
    """The words of one relay line, without quote markers, emphasis, links or emoji."""
    text = _EMOJI.sub("", line)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    text = re.sub(r"^[\s>#*-]+", "", text)
    return re.sub(r"\s+", " ", text).strip(" ~:：-—")


def is_http_url(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and len(url) > len("https://")


class _TextChannel:
    """Reassembles one delta field into lines, remembering which fenced block (if any) is open."""

    __slots__ = ("_fence", "_tail")

    def __init__(self) -> None:
        self._tail = ""
        self._fence: str | None = None

    def push(self, text: str) -> list[tuple[str, bool]]:
        """Segments to scan, each with whether it is a complete line. The unfinished last line comes too, since
        progress has to be read before its line ends."""
        self._tail += text
        segments: list[tuple[str, bool]] = []
        if "\n" in self._tail:
            *lines, self._tail = self._tail.split("\n")
            segments.extend((line + "\n", True) for line in lines if self._readable_line(line))
        if len(self._tail) > _MAX_LINE:
            segments.extend(self.flush())
        elif self._tail and self._in_readable_block() and not self._tail.lstrip().startswith("`"):
            segments.append((self._tail, False))
        return segments

    def flush(self) -> list[tuple[str, bool]]:
        tail, self._tail = self._tail, ""
        return [(tail + "\n", True)] if tail and self._readable_line(tail) else []

    def _readable_line(self, line: str) -> bool:
        fence = _FENCE.match(line)
        if fence is not None:
            self._fence = fence.group(1).lower() if self._fence is None else None
            return False
        return self._in_readable_block()

    def _in_readable_block(self) -> bool:
        return self._fence is None or self._fence in _RESULT_FENCES


class RelayStreamParser:
    """Turns the decoded chunks of one relay stream into status snapshots.

    `feed()` returns the snapshots a chunk changed (a terminal one when the chunk ends the job), `finish()` the
    terminal snapshot once the stream is over, `abort()` the terminal snapshot when the stream broke off.
    """

    def __init__(self, families: Sequence[RelayFamily] = FAMILIES) -> None:
        self._families = tuple(families)
        self.family: RelayFamily | None = None
        self.task_id: str | None = None
        self._content = _TextChannel()
        self._reasoning = _TextChannel()
        self._status: JobState | None = None
        self._progress = 0.0
        self._video_url: str | None = None
        self._thumbnail_url: str | None = None
        self._failure_lines: list[str] = []
        self._content_filtered = False
        self._fallback_url: str | None = None  # a video URL found by the last-resort rules
        self._content_error: object | None = None
        self._last: UpstreamStatus | None = None
        self._final: UpstreamStatus | None = None

    @property
    def done(self) -> bool:
        return self._final is not None

    def feed(self, chunk: Mapping[str, Any]) -> list[UpstreamStatus]:
        if self._final is not None:
            return []
        error = chunk.get("error")
        if error:
            self._final = self._error_status(error)
            return [self._final]

        snapshots: list[UpstreamStatus] = []
        if self._status is None:
            self._status = "queued"
            self._snapshot(snapshots)

        finish_reason = None
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping):
                continue
            delta = choice.get("delta") or choice.get("message")
            if isinstance(delta, Mapping):
                self._read(self._reasoning, delta.get("reasoning_content"), snapshots)
                self._read(self._content, delta.get("content"), snapshots)
                extra = {k: v for k, v in delta.items() if k not in _STANDARD_DELTA}
                self._fallback_url = next(urls_in(extra), None) or self._fallback_url
            finish_reason = choice.get("finish_reason") or finish_reason

        if self._content_error is not None:
            snapshots.append(self.finish())
            return snapshots
        if finish_reason:
            if str(finish_reason).lower() == "content_filter":
                self._content_filtered = True
            snapshots.append(self.finish())
        return snapshots

    def finish(self) -> UpstreamStatus:
        if self._final is None:
            for channel in (self._reasoning, self._content):
                for segment, complete in channel.flush():
                    self._scan(segment, complete)
            self._final = self._conclusion()
        return self._final

    @property
    def conclusive(self) -> bool:
        """Whether what was read so far decides the job (a link, a failure, a refusal) if the stream ends now."""
        return self._final is not None or bool(self._video_url or self._fallback_url or self._failure_lines
                                                   or self._content_filtered or self._content_error is not None)

    def abort(self, message: str) -> UpstreamStatus:
        """The stream broke off: conclude from what was read if that is conclusive, else fail with `message`."""
        if self._final is None:
            if self.conclusive:
                return self.finish()
            self._final = self._failed("upstream_error", message)
        return self._final

    # -- reading text --------------------------------------------------------------------------------------

    def _read(self, channel: _TextChannel, text: object, snapshots: list[UpstreamStatus]) -> None:
        if not isinstance(text, str) or not text:
            return
        for segment, complete in channel.push(text):
            self._scan(segment, complete)
            self._snapshot(snapshots)

    def _scan(self, text: str, complete: bool) -> None:
        family = self._recognise(text)
        if family is not None:
            self.family = family
            self._apply(family, text)
        elif complete:
            self._last_resort(text)
        # A reason is only whole once its line is, so failures are read from complete lines only.
        refusal = (family or self.family or self._families[0]).refusal
        if complete and refusal.search(text) and len(self._failure_lines) < _MAX_FAILURE_LINES:
            reason = readable(text)
            if reason and reason not in self._failure_lines:
                self._failure_lines.append(reason)

    def _last_resort(self, text: str) -> None:
        if (error := json_error(text)) is not None:
            self._content_error = error
            return
        if self._video_url is None and (url := video_link(text)) is not None:
            self._fallback_url = url
        if self._status == "queued" and _RUNNING_WORDS.search(text):
            self._status = "in_progress"  # "Generating....": running, even without a number

    def _recognise(self, text: str) -> RelayFamily | None:
        if self.family is not None and self.family.recognises(text):
            return self.family
        return next((family for family in self._families if family.recognises(text)), None)

    def _apply(self, family: RelayFamily, text: str) -> None:
        if family.task_id is not None and (match := family.task_id.search(text)):
            self.task_id = match.group("id")
        if family.running is not None and family.running.search(text):
            self._status = "in_progress"
        values = [
            float(number)
            for match in family.progress.finditer(text)
            for number in _NUMBER.findall(match.group("pct"))
        ]
        values = [value for value in values if 0.0 <= value <= 100.0]
        if values:
            self._status = "in_progress"
            self._progress = max(self._progress, *values)
        if (match := family.video_url.search(text)) and is_http_url(match.group("url")):
            self._video_url = match.group("url")
        thumbnail = family.thumbnail_url.search(text) if family.thumbnail_url is not None else None
        if thumbnail and is_http_url(thumbnail.group("url")):
            self._thumbnail_url = thumbnail.group("url")

    # -- building snapshots --------------------------------------------------------------------------------

    def _snapshot(self, snapshots: list[UpstreamStatus]) -> None:
        if self._status is None:
            return
        current = UpstreamStatus(
            status=self._status, progress=self._progress, thumbnail_url=self._thumbnail_url
        )
        if current != self._last:
            self._last = current
            snapshots.append(current)

    def _conclusion(self) -> UpstreamStatus:
        if self._content_error is not None:
            return self._error_status(self._content_error)
        # A family's own link wins over failure words; a link found by the last-resort rules does not.
        fallback = self._fallback_url if not self._failure_lines else None
        video_url = self._video_url or fallback
        if video_url and not self._content_filtered:
            return UpstreamStatus(
                status="completed",
                progress=100.0,
                video_url=video_url,
                thumbnail_url=self._thumbnail_url,
            )
        if self._failure_lines or self._content_filtered:
            return self._failure_status(self._failure_lines)
        return self._failed("upstream_error", "relay stream ended without a video URL")

    def _failure_status(self, lines: Iterable[str]) -> UpstreamStatus:
        reason = "; ".join(lines)
        family = self.family or self._families[0]
        # The relays' own markers (❌, 错误, 失败) do not say whose fault it was: unless the text blames the
        # infrastructure, the prompt is taken to have been refused.
        infrastructure = bool(family.failure.search(reason)) and not POLICY_WORDS.search(reason)
        if infrastructure and not self._content_filtered:
            return self._failed("upstream_error", reason)
        return self._failed(
            "content_policy_violation", reason or "the relay refused the prompt", refused=True
        )

    def _error_status(self, error: object) -> UpstreamStatus:
        if isinstance(error, Mapping):
            code = error.get("code")
            message = error.get("message")
        else:
            code, message = None, error
        code = str(code) if code not in (None, "") else "upstream_error"
        message = str(message) if message not in (None, "") else "the relay reported an error"
        refused = code in POLICY_ERROR_CODES or (code == "upstream_error" and bool(POLICY_WORDS.search(message)))
        return self._failed("content_policy_violation" if refused and code == "upstream_error" else code, message,
                            refused=refused)

    def _failed(self, code: str, message: str, *, refused: bool = False) -> UpstreamStatus:
        return UpstreamStatus(
            status="failed",
            progress=self._progress,
            thumbnail_url=self._thumbnail_url,
            error_code=code,
            error_message=message,
            refused=refused,
        )
