"""Response cache keys and cache controls (single-flight lives in `gateway.core.flights`)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from gateway.core.request import VideoRequest
from gateway.core.upstream import ImageInput, VideoInput


def normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.split())


def cache_key(request: VideoRequest, image: ImageInput | None, team: str | None,
              video: VideoInput | None = None) -> str:
    """Hash of everything that decides the video; `team` is None when the cache is global."""
    parts = [
        team or "*",
        request.model.name,
        request.model.upstream_model,
        normalise_prompt(request.prompt),
        request.size,
        request.seconds,
        hashlib.sha256(image.data).hexdigest() if image else "",
        request.remix_of or "",
    ]
    if request.operation != "create" or request.characters:  # keys of plain videos stay as they were
        parts += [request.operation, request.source_id or "", hashlib.sha256(video.data).hexdigest() if video else "",
                  sorted(request.characters)]
    return "vc1:" + hashlib.sha256(orjson.dumps(parts)).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheControl:
    lookup: bool = True  # False for `Cache-Control: no-cache`
    store: bool = True  # False for `Cache-Control: no-store`

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return cls()
        directives = {d.strip().split("=", 1)[0].lower() for d in header.split(",")}
        return cls(lookup="no-cache" not in directives, store="no-store" not in directives)
