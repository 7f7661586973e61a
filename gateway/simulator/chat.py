"""The "Sora-2 chat format" dialect: POST /v1/chat/completions streams one of three families of text.

A stream is planned up front as a list of timed steps, then played back in real time. The plan has the same
skeleton for every family (opening, queued, in progress, a number of progress updates, an ending); a family
decides only the words and the chunk shape, so each family's text lives in one small class:

- A (laozhang / APIYI style): markdown quotes in `content`, progress "进度：12.5%", a "[点击这里](url)" link.
- B (asyncdata.net style): a task id, "排队中... 生成中.", progress numbers "42..54..67.." whose chunk boundaries
  fall inside the dots, then sid, thumbnail and "[在线播放▶️](url)".
- C (sora2api style): progress in `reasoning_content`, the link in an HTML <video> block, finish_reason "STOP",
  a fresh chunk id per chunk, ASCII-escaped JSON, and HTTP 500 for every error before the stream starts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .assets import Assets
from .behaviour import Outcome, outcome_for, profile_for
from .errors import APIError
from .middleware import bearer_token
from .settings import SimulatorSettings
from .state import ChatJob, SimulatorState

PROGRESS_UPDATES = 7
QUEUED_AT = 0.05  # shares of duration_s
STARTED_AT = 0.1
LAST_PROGRESS_AT = 0.9
UPDATES_BEFORE_ENDING: dict[Outcome, int] = {"complete": PROGRESS_UPDATES, "refuse": 3, "fail": 3, "error": 2}

GENERATION_ERROR = {
    "error": {
        "message": "upstream generation error",
        "type": "server_error",
        "param": None,
        "code": "generation_error",
    }
}
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(frozen=True, slots=True)
class Links:
    video: str
    thumbnail: str


@dataclass(slots=True)
class Step:
    at: float  # seconds after the stream starts
    delta: dict[str, Any] | None = None
    finish_reason: str | None = None
    raw: bytes | None = None  # a frame sent as is (mid-stream error, [DONE])
    publish: bool = False  # the job's files become downloadable when this step is sent


@dataclass
class Plan:
    """The steps of one stream; families append to it at the current time `at`."""

    at: float = 0.0
    steps: list[Step] = field(default_factory=list)
    publish_next: bool = False

    def content(self, text: str, finish_reason: str | None = None) -> None:
        self.add(Step(self.at, {"content": text}, finish_reason))

    def reasoning(self, text: str) -> None:
        self.add(Step(self.at, {"reasoning_content": text}))

    def finish(self, reason: str) -> None:
        self.add(Step(self.at, {}, reason))

    def raw(self, data: bytes) -> None:
        self.add(Step(self.at, raw=data))

    def add(self, step: Step) -> None:
        step.publish, self.publish_next = self.publish_next, False
        self.steps.append(step)


class Family:
    """The words and chunk shape of one relay family. Subclasses override what their relay sends."""

    def __init__(self, job: ChatJob, links: Links) -> None:
        self.job = job
        self.links = links
        self.id = "chatcmpl-" + secrets.token_hex(14)
        self.created = int(time.time())
        self.role_sent = False

    def opening(self, plan: Plan) -> None: ...

    def queued(self, plan: Plan) -> None: ...

    def started(self, plan: Plan) -> None: ...

    def progress(self, plan: Plan, share: float) -> None: ...

    def success(self, plan: Plan) -> None: ...

    def failure(self, plan: Plan, refused: bool) -> None: ...

    def frame(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.job.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


class FamilyA(Family):
    TEXT: ClassVar[dict[str, dict[str, str]]] = {
        "zh": {
            "queued": "> ⌛️ 任务正在队列中，请耐心等待...\n\n",
            "progress": "> 🏃 进度：{:.1f}%\n\n",
            "success": "> ✅ 视频生成成功，[点击这里]({}) 查看视频~~~\n\n",
            "refused": "> ❌ 生成失败：内容违反政策，请修改提示词后重试\n\n",
            "failed": "> ❌ 生成失败：视频生成出错，请稍后重试\n\n",
        },
        "en": {
            "queued": "> ⌛️ Task is in queue, please wait...\n\n",
            "progress": "> 🏃 Progress: {:.1f}%\n\n",
            "success": "> ✅ video generated successful,[click here]({})\n\n",
            "refused": "> ❌ Generation failed: content policy violation, please revise your prompt and try again\n\n",
            "failed": "> ❌ Generation failed: video generation error, please try again later\n\n",
        },
    }

    @property
    def text(self) -> dict[str, str]:
        return self.TEXT[self.job.language]

    def opening(self, plan: Plan) -> None:
        request = json.dumps({"prompt": self.job.prompt, "mode": self.job.orientation}, ensure_ascii=False)
        plan.content(f"```json\n{request}\n```\n\n")

    def queued(self, plan: Plan) -> None:
        plan.content(self.text["queued"])

    def progress(self, plan: Plan, share: float) -> None:
        plan.content(self.text["progress"].format(share * 100))

    def success(self, plan: Plan) -> None:
        plan.content(self.text["success"].format(self.links.video))
        plan.finish("stop")

    def failure(self, plan: Plan, refused: bool) -> None:
        plan.content(self.text["refused" if refused else "failed"])
        plan.finish("stop")


class FamilyB(Family):
    TEXT: ClassVar[dict[str, dict[str, str]]] = {
        "zh": {
            "queued": "> 排队中...",
            "started": " 生成中.",
            "progress": "\n> 🏃 进度 ",
            "complete": "\n> 生成完成 ✅\n\n",
            "play": "[在线播放▶️]({})\n\n",
            "refused": "\n> ❌ 生成失败：内容违反政策 (This content may violate our content policies.)\n\n",
            "failed": "\n> ❌ 生成失败：任务执行失败，请重试\n\n",
        },
        "en": {
            "queued": "> Queuing…",
            "started": " Generating.",
            "progress": "\n> 🏃 Progress ",
            "complete": "\n> Generation Complete ✅\n\n",
            "play": "[Play Online▶️]({})\n\n",
            "refused": "\n> ❌ Generation failed: content policy violation "
            "(This content may violate our content policies.)\n\n",
            "failed": "\n> ❌ Generation failed: task failed, please retry\n\n",
        },
    }

    def __init__(self, job: ChatJob, links: Links) -> None:
        super().__init__(job, links)
        self.task_id = "task_" + secrets.token_hex(13)
        self.sid = "s_" + secrets.token_hex(16)
        self.updates = 0
        self.pending_dots = ""

    @property
    def text(self) -> dict[str, str]:
        return self.TEXT[self.job.language]

    def opening(self, plan: Plan) -> None:
        plan.content(f"> ID: `{self.task_id}`\n\n")

    def queued(self, plan: Plan) -> None:
        plan.content(self.text["queued"])

    def started(self, plan: Plan) -> None:
        plan.content(self.text["started"])

    def progress(self, plan: Plan, share: float) -> None:
        # "42..54..67.." arrives as "42.", ".54", "..67", "..": chunk boundaries fall inside the separators.
        if self.updates == 0:
            plan.content(self.text["progress"])
        piece = self.pending_dots + str(int(share * 100))
        if self.updates % 3 == 0:
            piece, self.pending_dots = piece + ".", "."
        else:
            self.pending_dots = ".."
        self.updates += 1
        plan.content(piece)

    def close_progress(self, plan: Plan) -> None:
        if self.pending_dots:
            plan.content(self.pending_dots)
            self.pending_dots = ""

    def success(self, plan: Plan) -> None:
        self.close_progress(plan)
        plan.content(self.text["complete"])
        plan.content(f"> sid: `{self.sid}`\n\n")
        plan.content(f"![thumbnail.webp]({self.links.thumbnail})\n\n")
        plan.content(self.text["play"].format(self.links.video))
        plan.finish("stop")

    def failure(self, plan: Plan, refused: bool) -> None:
        self.close_progress(plan)
        plan.content(self.text["refused" if refused else "failed"])
        plan.finish("stop")


class FamilyC(Family):
    """sora2api: English progress and Chinese failures whatever the language, as that relay sends them."""

    def opening(self, plan: Plan) -> None:
        if self.job.images:
            plan.reasoning("**Image Upload Begins**\n\nUploading image to server...\n")
            plan.reasoning("Image uploaded successfully. Proceeding to generation...\n")
        plan.reasoning("**Generation Process Begins**\n\nInitializing generation request...\n")

    def progress(self, plan: Plan, share: float) -> None:
        plan.reasoning(f"**Video Generation Progress**: {int(share * 100)}% (running)\n")

    def success(self, plan: Plan) -> None:
        plan.reasoning(
            "**Video Generation Completed**\n\nVideo generation successful. Now caching the video file...\n"
        )
        plan.reasoning("Video file cached successfully. Preparing final response...\n")
        plan.content(f"```html\n<video src='{self.links.video}' controls></video>\n```", "STOP")

    def failure(self, plan: Plan, refused: bool) -> None:
        if refused:
            plan.reasoning("**Content Policy Violation**\n")
            plan.content("❌ 生成失败: This content may violate our content policies.", "STOP")
        else:
            plan.reasoning("**Video Generation Failed**\n")
            plan.content("❌ 生成失败: Video generation failed.", "STOP")

    def frame(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        now = time.time()
        full_delta: dict[str, Any] = {}
        if not self.role_sent:
            full_delta["role"] = "assistant"
            self.role_sent = True
        full_delta["content"] = delta.get("content")
        full_delta["reasoning_content"] = delta.get("reasoning_content")
        full_delta["tool_calls"] = None
        usage: dict[str, int] = {"prompt_tokens": 0}
        if finish_reason:
            usage.update(completion_tokens=1, total_tokens=1)
        chunk = {
            "id": f"chatcmpl-{int(now * 1000)}",
            "object": "chat.completion.chunk",
            "created": int(now),
            "model": "sora",
            "choices": [
                {
                    "index": 0,
                    "delta": full_delta,
                    "finish_reason": finish_reason,
                    "native_finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()


FAMILIES: dict[str, type[Family]] = {"a": FamilyA, "b": FamilyB, "c": FamilyC}


def plan_stream(family: Family, outcome: Outcome, duration_s: float) -> list[Step]:
    plan = Plan()
    family.opening(plan)
    plan.at = QUEUED_AT * duration_s
    family.queued(plan)
    plan.at = STARTED_AT * duration_s
    family.started(plan)
    updates = UPDATES_BEFORE_ENDING[outcome]
    for n in range(updates):
        plan.at = progress_time(n, duration_s)
        family.progress(plan, (n + 1) / (PROGRESS_UPDATES + 1))
    if outcome == "complete":
        plan.at = duration_s
        plan.publish_next = True
        family.success(plan)
    else:
        plan.at = progress_time(updates, duration_s)
        if outcome == "error":
            plan.raw(b"data: " + orjson.dumps(GENERATION_ERROR) + b"\n\n")
        else:
            family.failure(plan, refused=outcome == "refuse")
    plan.raw(DONE)
    return plan.steps


def progress_time(n: int, duration_s: float) -> float:
    spacing = (LAST_PROGRESS_AT - STARTED_AT) / (PROGRESS_UPDATES - 1)
    return (STARTED_AT + n * spacing) * duration_s


class ChatAPI:
    def __init__(self, state: SimulatorState, settings: SimulatorSettings, assets: Assets) -> None:
        self.state = state
        self.settings = settings
        self.assets = assets

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.completions, methods=["POST"]),
            Route("/files/{name}", self.file, methods=["GET"]),
        ]

    async def completions(self, request: Request) -> Response:
        key = bearer_token(request.scope)
        profile = profile_for(key, self.settings)
        body = await read_body(request, profile.family)
        prompt, images = read_prompt(body, profile.family)
        model = body.get("model") if isinstance(body.get("model"), str) else "sora-2"
        job = ChatJob(
            id=secrets.token_hex(16),
            key=key,
            family=profile.family,
            language=profile.language,
            model=model,
            prompt=prompt,
            images=images,
            outcome=outcome_for(prompt),
            orientation=orientation(model, body.get("size")),
        )
        self.state.chats[job.id] = job
        base = (self.settings.public_url or str(request.base_url)).rstrip("/")
        links = Links(video=f"{base}/files/{job.id}.mp4", thumbnail=f"{base}/files/{job.id}.jpg")
        family = FAMILIES[job.family](job, links)
        steps = plan_stream(family, job.outcome, self.settings.duration_s)
        return StreamingResponse(
            play(job, family, steps), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def file(self, request: Request) -> Response:
        job_id, _, extension = request.path_params["name"].rpartition(".")
        job = self.state.chats.get(job_id)
        asset = {"mp4": self.assets.video, "jpg": self.assets.thumbnail}.get(extension)
        if job is None or not job.finished or asset is None:
            raise APIError(404, "File not found.")
        return Response(asset.data, media_type=asset.media_type)


async def play(job: ChatJob, family: Family, steps: list[Step]) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in steps:
        delay = start + step.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if step.publish:
            job.finished = True
        if step.raw is not None:
            yield step.raw
        else:
            assert step.delta is not None
            yield family.frame(step.delta, step.finish_reason)


def reject(family: str, message: str, param: str | None = None) -> APIError:
    """Families A and B answer bad requests with 400; sora2api (C) answers every error with 500."""
    if family == "c":
        return APIError(500, message, type="server_error")
    return APIError(400, message, param=param)


async def read_body(request: Request, family: str) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise reject(family, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise reject(family, "The request body must be a JSON object.")
    if body.get("stream") is not True:
        raise reject(family, "stream must be true: this endpoint only serves streaming responses.", "stream")
    return body


def read_prompt(body: dict[str, Any], family: str) -> tuple[str, int]:
    """The text of the last user message and the number of images attached to it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise reject(family, "Missing required parameter: 'messages'.", "messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise reject(family, "The conversation has no user message.", "messages")
    content = users[-1].get("content")
    texts: list[str] = []
    images = 0
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                images += 1
    else:
        raise reject(family, "Invalid content format in the last user message.", "messages")
    prompt = "\n".join(texts).strip()
    if not prompt:
        raise reject(family, "The last user message has no text prompt.", "messages")
    return prompt, images


def orientation(model: str, size: Any) -> str:
    if "landscape" in model:
        return "landscape"
    if isinstance(size, str):
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit() and int(width) > int(height):
            return "landscape"
    return "portrait"
