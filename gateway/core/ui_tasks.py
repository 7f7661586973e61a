"""A chat UI's housekeeping request (a title, tags, follow-ups, …) recognised and answered without a video.

Chat UIs send these to the model the person picked; generating a paid video for each would cost several videos
per message. `match` finds the template (see `ui_templates.TEMPLATES`), `answer` builds what it asks for from the
person's own words: a JSON object for templates that ask for JSON, plain text otherwise.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.person_prompt import strip_gateway_text
from gateway.core.ui_templates import ANY_TEMPLATE, TEMPLATES, UiTemplate

VIDEO_ID = re.compile(r"\bvideo_[0-9a-f]{32}\b")
_SPEAKER_LINE = re.compile(r"^\s*(?:USER|User|user|Human|human|用户)\s*[:：]\s*(\S.*)$", re.MULTILINE)
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_FILLER = frozenset("a an the please make create generate render show me us video videos clip of with".split())
_SMALL = frozenset("a an and as at by for in of on or the to with".split())
_PREPOSITIONS = frozenset("above across along around at behind below beneath beside between by during for from in"
                          " inside into near of off on onto over past through to toward towards under while with"
                          " within".split())
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_TITLE_WORDS = 5


@dataclass(frozen=True, slots=True)
class UiTask:
    template: UiTemplate
    messages: list[dict[str, Any]]

    @property
    def ui(self) -> str:
        return self.template.ui

    @property
    def name(self) -> str:
        return self.template.task


def match(body: dict[str, Any]) -> UiTask | None:
    """The known UI template this request follows, or None for a request a person wrote."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    text = task_text(messages)
    if not text or ANY_TEMPLATE.search(text) is None:
        return None
    template = next((t for t in TEMPLATES if t.matches(text)), None)
    return UiTask(template, messages) if template is not None else None


def task_text(messages: list[dict[str, Any]]) -> str:
    """Where UIs put their task: the system messages and the last user message."""
    parts = [text_of(m) for m in messages if m.get("role") in ("system", "developer")]
    users = [m for m in messages if m.get("role") == "user"]
    if users:
        parts.append(text_of(users[-1]))
    return "\n\n".join(p for p in parts if p)


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def answer(task: UiTask) -> str | dict[str, Any]:
    return ANSWERS[task.template.answer](task)


def person_words(task: UiTask) -> str:
    """The first thing the person asked for: the best source of a title or a summary."""
    text = task_text(task.messages)
    for line in _SPEAKER_LINE.findall(text):
        words = strip_gateway_text(line)
        if words and not _is_template(words):
            return words
    for message in task.messages:
        if message.get("role") == "user":
            words = strip_gateway_text(text_of(message))
            if words and not _is_template(words):
                return words
    return ""


def _is_template(text: str) -> bool:
    return any(t.matches(text) for t in TEMPLATES)


def title(words: str) -> str:
    """A short title from the person's words: 'make a video of a red fox in snow' → 'Red Fox in Snow'."""
    if _CJK.search(words):
        clause = next((c for c in re.split(r"[\s\W_]+", words) if c), "")
        return clause[:10] or "Video"  # the first clause, at most 10 characters
    found = _WORD.findall(words)
    while found and found[0].lower() in _FILLER:
        found.pop(0)
    picked: list[str] = []
    for word in found[:_TITLE_WORDS]:
        if len(picked) >= 3 and word.lower() in _PREPOSITIONS:
            break  # 'red fox running through fresh snow' → 'Red Fox Running'
        picked.append(word)
    while picked and picked[-1].lower() in _SMALL | _PREPOSITIONS:
        picked.pop()
    if not picked:
        return "Video"
    lower = _SMALL | _PREPOSITIONS
    return " ".join(w.lower() if i and w.lower() in lower else w[:1].upper() + w[1:] for i, w in enumerate(picked))


def language(words: str) -> str:
    scripts = (("[\u3040-\u30ff]", "Japanese"), ("[\uac00-\ud7af]", "Korean"), ("[\u3400-\u9fff]", "Chinese"),
               ("[\u0400-\u04ff]", "Russian"), ("[\u0600-\u06ff]", "Arabic"))
    return next((name for pattern, name in scripts if re.search(pattern, words)), "English")


def summary(task: UiTask) -> str:
    words = person_words(task) or "a video"
    ids = [i for m in task.messages if m.get("role") == "assistant" for i in VIDEO_ID.findall(text_of(m))]
    text = f"The user asked for a video: {words}"
    return text + (f"\nLatest video: {ids[-1]}" if ids else "")


_NOT_NEEDED = ("<websearch>\n<question>\nnot_needed\n</question>\n</websearch>\n"
               "<knowledge>\n<question>\nnot_needed\n</question>\n</knowledge>")

ANSWERS: dict[str, Callable[[UiTask], str | dict[str, Any]]] = {
    "title_json": lambda t: {"title": title(person_words(t))},
    "title_text": lambda t: title(person_words(t)),
    "title_language_json": lambda t: {"language": language(person_words(t)), "title": title(person_words(t))},
    "tags_json": lambda t: {"tags": ["Video"]},
    "tags_text": lambda t: "video",
    "follow_ups_json": lambda t: {"follow_ups": []},
    "queries_json": lambda t: {"queries": []},
    "autocomplete_json": lambda t: {"text": ""},
    "emoji": lambda t: "🎬",
    "image_prompt_json": lambda t: {"prompt": person_words(t)},
    "summary_text": summary,
    "rephrase_xml": lambda t: _NOT_NEEDED,
}
