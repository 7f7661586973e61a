"""OpenAI wire shapes built from the gateway's records: Video objects, completions and stream chunks."""
from __future__ import annotations

from typing import Any

import orjson

from gateway.core import records
from gateway.core.records import JobRecord
from gateway.core.signing import LinkSigner


def public_status(record: JobRecord) -> str:
    return records.public_status(record.status)


def progress_fields(record: JobRecord) -> dict[str, Any]:
    """What `progress` is: the upstream's own figure, or the gateway's estimate where the upstream reports none
    (`progress_estimated`); and, while queued where the upstream says, the job's place in its queue."""
    return {"progress_estimated": record.progress_estimated and record.status != "completed",
            "queue_position": record.queue_position if record.status in ("submitting", "queued") else None}


def video_object(record: JobRecord, expires_at: int | None = None) -> dict[str, Any]:
    """The OpenAI Video object for a job, with the gateway's `progress_estimated` and `queue_position`."""
    error = None
    if record.status == "failed":
        error = {"code": record.error_code or "upstream_error", "message": record.error_message or "failed"}
    return {
        "id": record.id,
        "object": "video",
        "model": record.model,
        "status": public_status(record),
        "progress": int(record.progress),
        **progress_fields(record),
        "created_at": int(record.created_at),
        "completed_at": int(record.completed_at) if record.completed_at and record.status == "completed" else None,
        "expires_at": expires_at if record.status == "completed" else None,
        "prompt": record.prompt,
        "seconds": str(record.seconds + record.base_seconds),  # an extension: the stitched length
        "size": record.size,
        "remixed_from_video_id": record.remixed_from,
        "error": error,
    }


def video_status(record: JobRecord, signer: LinkSigner, expires: int) -> dict[str, Any]:
    """The compact `video` object carried by every chat chunk and completion."""
    done = record.status == "completed"
    return {
        "id": record.id,
        "status": public_status(record),
        "progress": int(record.progress),
        **progress_fields(record),
        "url": signer.url(record.id, expires=expires) if done else None,
        "expires_at": expires if done else None,
    }


def usage(record: JobRecord, cost: float) -> dict[str, Any]:
    return {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "video_seconds": record.seconds,
        "cost_usd": cost,
    }


def completion(completion_id: str, created: int, model: str, content: str, video: dict, usage_: dict,
               reasoning: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": usage_,
        "video": video,
    }


class ChunkWriter:
    """Encodes one stream's `chat.completion.chunk` events as SSE frames."""

    __slots__ = ("completion_id", "created", "model")

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model

    def chunk(self, delta: dict[str, Any], video: dict | None, finish_reason: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if video is not None:
            body["video"] = video
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def usage_chunk(self, usage_: dict, video: dict) -> bytes:
        body = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage_, "video": video}
        return b"data: " + orjson.dumps(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
