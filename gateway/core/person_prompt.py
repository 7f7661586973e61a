"""The prompt sent upstream is the person's own words: never a UI's wrapper, never text the gateway wrote.

Chat UIs send the whole conversation back, including the gateway's own progress lines and video links, and
some wrap the person's message in a template of their own (Open WebUI's RAG template puts it in
`<user_query>`). A video made from that would follow the wrapper and the transcript instead of the request.
"""
from __future__ import annotations

import re

_USER_QUERY = re.compile(r"<user_query>\s*(.*?)\s*</user_query>", re.DOTALL)
_RAG_TASK = re.compile(r"### Task:\s*Respond to the user query using the provided context", re.IGNORECASE)

# What gateway/core/formats.py writes, in every preset (tests check the two stay in step).
_GATEWAY_TEXT = re.compile("|".join((
    r"```html\s*<video\b.*?</video>\s*```",
    r"<video\b.*?</video>",
    r"> ⏳ Queued(?: \(position \d+\))?",
    r"> 🎬 Generating: (?:about )?\d+%",
    r"✅ Video ready: \[▶ Watch\]\([^)\s]*\)",
    r"> ⌛️ 任务正在队列中，请耐心等待\.\.\.",
    r"> 🏃 进度：[\d.]+%(?:（预估）)?",
    r"> ✅ 视频生成成功，\[点击这里\]\([^)\s]*\) 查看视频~~~",
    r"\*\*Video Generation Progress\*\*: \d+% \((queued|running)\)(?:, estimated)?",
    r"(> )?❌ (Video refused: |生成失败：)[^\n]*",
    r"\bhttps?://\S+?/v1/videos/video_[0-9a-f]{32}/content\S*",
)), re.DOTALL)
_BLANK_RUNS = re.compile(r"\n\s*\n(\s*\n)+")


def person_prompt(guidance: list[str], text: str) -> str:
    """The prompt for a video: system guidance first, then the person's message, both cleaned."""
    text = user_query(text)
    parts = [strip_gateway_text(g) for g in guidance if not _RAG_TASK.search(g)]
    parts.append(strip_gateway_text(text))
    return "\n\n".join(p for p in parts if p)


def user_query(text: str) -> str:
    """The person's words inside a RAG template, or the text itself when it is not one."""
    if _RAG_TASK.search(text) or "<context>" in text:
        match = _USER_QUERY.search(text)
        if match:
            return match.group(1)
    return text


def strip_gateway_text(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", _GATEWAY_TEXT.sub("", text)).strip()
