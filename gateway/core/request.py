"""What to generate: a `VideoRequest`, built from a chat-completions body and checked against the model."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from gateway.config import STREAM_FORMATS, ModelConfig, TeamConfig
from gateway.core.errors import NotFound, PermissionDenied, bad_request, shown
from gateway.core.person_prompt import person_prompt

VIDEO_ID_PATTERN = re.compile(r"\bvideo_[0-9a-f]{32}\b")
CHARACTER_ID_PATTERN = re.compile(r"char_[0-9a-f]{32}")
EXTENSION_SECONDS = (4, 8, 12, 16, 20)
MAX_CHARACTERS = 10


@dataclass(frozen=True, slots=True)
class VideoRequest:
    """A validated request for one video, before any image is fetched."""

    model: ModelConfig
    prompt: str
    size: str
    seconds: int
    image_url: str | None = None
    remix_of: str | None = None  # the gateway id of an earlier video this one remixes
    user: str | None = None
    webhook_url: str | None = None  # checked by `gateway.core.webhooks.check_request_url` before it gets here
    operation: str = "create"  # create | edit | extension (of `source_id`, or of an uploaded video)
    source_id: str | None = None  # the gateway id of the video edited or extended; None for an upload
    characters: tuple[str, ...] = ()  # gateway character ids (`char_…`) the video shows

    @property
    def price(self) -> float:
        return self.model.price(self.seconds)


@dataclass(frozen=True, slots=True)
class ChatOptions:
    stream: bool
    include_usage: bool
    stream_format: str


def parse_chat_body(body: Any) -> tuple[str, dict[str, Any]]:
    """Return (model alias, body) after the checks that do not depend on the team."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", param="model")
    return model, body


def check_prompt(prompt: str, limit: int, param: str) -> str:
    if len(prompt) > limit:
        raise bad_request(f"The prompt is {len(prompt)} characters long; this gateway accepts at most {limit}."
                          " Shorten it.", param=param, code="prompt_too_long")
    return prompt


def build_video_request(body: dict[str, Any], model: ModelConfig,
                        max_prompt_chars: int = 32_000) -> tuple[VideoRequest, ChatOptions]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of messages.", param="messages")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise bad_request(f"Invalid value for 'n': {shown(n)}. This model makes one video per request; send n=1.",
                          param="n")
    prompt, image_url, remix_of = _read_messages(messages)
    check_prompt(prompt, max_prompt_chars, "messages")
    stream = body.get("stream") is True
    stream_options = body.get("stream_options") or {}
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    stream_format = body.get("stream_format") or model.stream_format
    if not isinstance(stream_format, str) or stream_format not in STREAM_FORMATS:
        allowed = ", ".join(f"'{f}'" for f in STREAM_FORMATS)
        raise bad_request(f"Invalid value for 'stream_format': {shown(stream_format)}. Supported values are:"
                          f" {allowed}.", param="stream_format")
    user = body.get("user")
    request = VideoRequest(
        model=model,
        prompt=prompt,
        size=check_size(body.get("size"), model),
        seconds=check_seconds(body.get("seconds"), model),
        image_url=image_url,
        remix_of=remix_of,
        user=user if isinstance(user, str) else None,
        characters=check_characters(body.get("characters")),
    )
    if body.get("extend_seconds") is not None:
        request = _extension(request, body["extend_seconds"])
    return request, ChatOptions(stream, include_usage, stream_format)


def _extension(request: VideoRequest, extend_seconds: Any) -> VideoRequest:
    """A follow-up that extends the conversation's video instead of remixing it."""
    if request.remix_of is None:
        raise bad_request("'extend_seconds' extends the video of an earlier reply of this gateway in the"
                          " conversation, and this conversation holds none; send the earlier reply along, or"
                          " leave 'extend_seconds' out.", param="extend_seconds")
    return replace(request, operation="extension", source_id=request.remix_of, remix_of=None,
                   seconds=check_extension_seconds(extend_seconds, "extend_seconds"))


def check_extension_seconds(value: Any, param: str = "seconds") -> int:
    seconds = int(value) if isinstance(value, (int, str)) and str(value).strip().isdigit() else None
    if seconds not in EXTENSION_SECONDS:
        allowed = ", ".join(f"'{s}'" for s in EXTENSION_SECONDS)
        raise bad_request(f"Invalid value for '{param}': {value!r}. An extension adds one of: {allowed} seconds.",
                          param=param)
    return seconds


def check_characters(value: Any, param: str = "characters") -> tuple[str, ...]:
    """`[{"id": "char_…"}, …]` (plain id strings work too) → the ids, in order, without repeats."""
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or len(value) > MAX_CHARACTERS:
        raise bad_request(f"'{param}' must be an array of up to {MAX_CHARACTERS} objects like"
                          ' {"id": "char_…"}.', param=param)
    ids: list[str] = []
    for i, item in enumerate(value):
        character_id = item.get("id") if isinstance(item, dict) else item
        if not isinstance(character_id, str) or not CHARACTER_ID_PATTERN.fullmatch(character_id):
            raise bad_request(f"'{param}[{i}]' must be an object like {{\"id\": \"char_…\"}} naming one of your"
                              " characters (POST /v1/videos/characters makes one).", param=f"{param}[{i}]")
        if character_id not in ids:
            ids.append(character_id)
    return tuple(ids)


def check_size(value: Any, model: ModelConfig) -> str:
    if value is None:
        return model.size
    if not isinstance(value, str) or value not in model.sizes:
        allowed = ", ".join(f"'{s}'" for s in model.sizes)
        raise bad_request(f"Invalid value for 'size': {shown(value)}. Supported values for {model.name} are:"
                          f" {allowed}.", param="size")
    return value


def check_seconds(value: Any, model: ModelConfig) -> int:
    if value is None:
        return model.seconds
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) < 8:
        seconds = int(value)
    if seconds not in model.seconds_allowed:
        allowed = ", ".join(f"'{s}'" for s in model.seconds_allowed)
        raise bad_request(
            f"Invalid value for 'seconds': {shown(value)}. Supported values for {model.name} are: {allowed}.",
            param="seconds",
        )
    return seconds


def _read_messages(messages: list[Any]) -> tuple[str, str | None, str | None]:
    """(prompt, image URL, remixed video id). The prompt is the last user message, guided by the system and
    developer messages before it; a conversation without a user message takes it from the last of those."""
    user_index = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a 'role'.", param=f"messages[{i}]")
        if message["role"] == "user":
            user_index = i
    if user_index is None:
        user_index = _last_instruction(messages)
    guidance: list[str] = []
    for i, message in enumerate(messages[:user_index]):
        if message["role"] in ("system", "developer"):
            text, _ = _read_content(message.get("content"), f"messages[{i}].content", allow_image=False)
            if text:
                guidance.append(text)
    text, image_url = _read_content(messages[user_index].get("content"), f"messages[{user_index}].content")
    prompt = person_prompt(guidance, text)
    if not (person_prompt([], text) if guidance else prompt):  # the user's own words, without the guidance
        raise bad_request(f"The last {messages[user_index]['role']} message must contain a text prompt describing"
                          " the video.", param=f"messages[{user_index}].content")
    return prompt, image_url, _remixed_video(messages[:user_index])


def _last_instruction(messages: list[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] in ("system", "developer"):
            return i
    raise bad_request("messages must contain a user message (or a system or developer message) with the video"
                      " prompt.", param="messages")


def _read_content(content: Any, param: str, allow_image: bool = True) -> tuple[str, str | None]:
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param=param)
    texts: list[str] = []
    image: str | None = None
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and allow_image:
            if image is not None:
                raise bad_request("Only one image_url part is supported per request; send a single reference image.",
                                  param=f"{param}[{j}]")
            image = _image_url(part.get("image_url"), f"{param}[{j}].image_url")
        elif kind == "image_url":
            continue
        else:
            raise bad_request(f"Unsupported content part type {shown(kind)}; use 'text' or 'image_url'.",
                              param=f"{param}[{j}]")
    return "\n".join(texts), image


def _image_url(value: Any, param: str) -> str:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise bad_request("image_url must hold a 'url' string (an https URL or a data: URI).", param=param)
    return url


def _remixed_video(history: list[dict[str, Any]]) -> str | None:
    for message in reversed(history):
        if message.get("role") != "assistant":
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        text = content if isinstance(content, str) else " ".join(
            p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
        if match := VIDEO_ID_PATTERN.search(text):
            return match.group(0)
    return None


def resolve_model(models: dict[str, ModelConfig], team: TeamConfig, alias: Any) -> ModelConfig:
    """The model a team asked for: 404 when it does not exist, 403 when the team may not use it."""
    if not isinstance(alias, str):
        raise bad_request("'model' must be a string naming one of the models this gateway offers.", param="model")
    model = models.get(alias)
    if model is None:
        raise reject_unknown_model(alias)
    if not team.may_use(alias):
        raise PermissionDenied(f"Your team may not use the model '{alias}'. Ask your platform team to allow it.",
                               code="model_not_allowed", param="model")
    return model


def reject_unknown_model(model: str) -> NotFound:
    return NotFound(f"The model '{model}' does not exist or you do not have access to it.",
                    code="model_not_found", param="model")
