"""How job status reads in a chat stream: one preset per `stream_format`, all text in one place."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamFormat:
    name: str
    status_field: str  # the delta field status lines go into: "content" or "reasoning_content"
    queued: str
    progress: Callable[[float], str]
    estimate: Callable[[float], str]  # progress that is the gateway's estimate, marked as one
    ready: Callable[[str], str]
    refused: Callable[[str], str]
    queued_at: Callable[[int], str] | None = None  # queued, with the place in the upstream's queue, where it fits


def watchable(url: str) -> str:
    """A link line, then the one block Open WebUI plays inline.

    Open WebUI keeps an HTML tag and its text together only when the tag starts its own line after a blank
    line, and its player takes the element's text as the source, so the URL is also the element's text. A
    markdown-only client shows the link (and the tag as text); a plain-text client shows the link line and
    the bare URL; a markdown renderer that allows HTML shows a player from `src`.
    """
    return f'✅ Video ready: [▶ Watch]({url})\n\n<video src="{url}" controls>\n{url}\n</video>'


MARKDOWN = StreamFormat(
    name="markdown",
    status_field="content",
    queued="> ⏳ Queued\n\n",
    progress=lambda p: f"> 🎬 Generating: {int(p)}%\n\n",
    estimate=lambda p: f"> 🎬 Generating: about {int(p)}%\n\n",
    ready=watchable,
    refused=lambda reason: f"❌ Video refused: {reason}",
    queued_at=lambda position: f"> ⏳ Queued (position {position})\n\n",
)

# zh and reasoning are what clients of Family-A and sora2api relays already parse (`进度：([\d.]+)%`,
# `Progress**: 45% (running)`): an estimate keeps that text and only adds its mark after it, and the queued
# line stays exactly as those clients know it.

ZH = StreamFormat(
    name="zh",
    status_field="content",
    queued="> ⌛️ 任务正在队列中，请耐心等待...\n\n",
    progress=lambda p: f"> 🏃 进度：{p:.1f}%\n\n",
    estimate=lambda p: f"> 🏃 进度：{p:.1f}%（预估）\n\n",
    ready=lambda url: f"> ✅ 视频生成成功，[点击这里]({url}) 查看视频~~~\n\n",
    refused=lambda reason: f"> ❌ 生成失败：{reason}\n\n",
)

REASONING = StreamFormat(
    name="reasoning",
    status_field="reasoning_content",
    queued="**Video Generation Progress**: 0% (queued)\n",
    progress=lambda p: f"**Video Generation Progress**: {int(p)}% (running)\n",
    estimate=lambda p: f"**Video Generation Progress**: {int(p)}% (running), estimated\n",
    ready=lambda url: f"```html\n<video src='{url}' controls></video>\n```",
    refused=lambda reason: f"❌ Video refused: {reason}",
)

FORMATS = {f.name: f for f in (MARKDOWN, ZH, REASONING)}
