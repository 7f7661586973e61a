"""A chat UI's housekeeping request answered at once: no video, no upstream call, no charge.

The answer takes the shape the template asks for: JSON text, plain text, or, when the request offers a
function to call (structured output the tool-calling way), a call of that function with the JSON as arguments.
Each answer is written to the ledger with outcome `ui_task` and a cost of 0.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from gateway.api.common import JSONResponse
from gateway.api.shapes import DONE, ChunkWriter
from gateway.config import ModelConfig
from gateway.core.auth import Principal
from gateway.core.records import LedgerRow
from gateway.core.ui_tasks import UiTask, answer
from gateway.ids import unique_id

FREE_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "video_seconds": 0, "cost_usd": 0.0}


async def answer_ui_task(gw, principal: Principal, model: ModelConfig, alias: str, body: dict[str, Any],
                         task: UiTask, request_id: str) -> Response:
    reply = answer(task)
    text = reply if isinstance(reply, str) else orjson.dumps(reply).decode()
    tool = _offered_function(body) if isinstance(reply, dict) else None
    user = body.get("user")
    await gw.db.ledger_insert(LedgerRow(
        request_id=request_id, time=time.time(), team=principal.team.name, key_id=principal.key_id,
        model=model.name, size="", seconds=0, outcome="ui_task", user=user if isinstance(user, str) else None,
        latency_ms=0.0))
    gw.metrics.ui_task(task.ui, task.name)
    writer = ChunkWriter(unique_id("chatcmpl-"), int(time.time()), alias)
    headers = {"x-ui-task": f"{task.ui}/{task.name}"}
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(_chunks(writer, text, tool, include_usage), media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})
    return JSONResponse(_completion(writer, text, tool), headers=headers)


def _offered_function(body: dict[str, Any]) -> str | None:
    """The function a request asks to be called (`tool_choice`), or its only tool; None without tools."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(name := (choice.get("function") or {}).get("name"), str):
        return name
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) == 1 and isinstance(tools[0], dict):
        name = (tools[0].get("function") or {}).get("name")
        return name if isinstance(name, str) else None
    return None


def _tool_call(name: str, arguments: str, index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"id": unique_id("call_"), "type": "function",
                            "function": {"name": name, "arguments": arguments}}
    return call if index is None else {"index": index, **call}


def _completion(writer: ChunkWriter, text: str, tool: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool is not None:
        message["content"], message["tool_calls"] = None, [_tool_call(tool, text)]
    return {
        "id": writer.completion_id, "object": "chat.completion", "created": writer.created, "model": writer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop",
                     "logprobs": None}],
        "usage": FREE_USAGE,
    }


async def _chunks(writer: ChunkWriter, text: str, tool: str | None, include_usage: bool) -> AsyncIterator[bytes]:
    if tool is not None:
        yield writer.chunk({"role": "assistant", "content": None, "tool_calls": [_tool_call(tool, text, 0)]}, None)
        yield writer.chunk({}, None, "tool_calls")
    else:
        yield writer.chunk({"role": "assistant", "content": text}, None)
        yield writer.chunk({}, None, "stop")
    if include_usage:
        body = {"id": writer.completion_id, "object": "chat.completion.chunk", "created": writer.created,
                "model": writer.model, "choices": [], "usage": FREE_USAGE}
        yield b"data: " + orjson.dumps(body) + b"\n\n"
    yield DONE
