"""OpenAI-shaped `size` in the terms video providers use: an aspect ratio and a resolution label."""
from __future__ import annotations

import math

from gateway.core.upstream import UpstreamError

ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21")
# the shorter side → the label providers give that resolution
RESOLUTIONS = {480: "480p", 720: "720p", 768: "768p", 1080: "1080p", 1440: "1440p", 2160: "4k"}


def aspect_and_resolution(size: str) -> tuple[str, str] | None:
    """`1280x720` → (`16:9`, `720p`); None for a size no provider names that way."""
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return None
    w, h = int(width), int(height)
    divisor = math.gcd(w, h)
    aspect = f"{w // divisor}:{h // divisor}"
    if aspect == "64:27":  # 21:9 as cinema sizes have it (2560x1080)
        aspect = "21:9"
    resolution = RESOLUTIONS.get(min(w, h))
    if aspect not in ASPECT_RATIOS or resolution is None:
        return None
    return aspect, resolution


def cannot(upstream: str, model: str, what: str, param: str, can: str) -> UpstreamError:
    """The 400 for a request the model cannot honour, saying what it can."""
    return UpstreamError(f"{model} (upstream {upstream}) cannot make {what}; it makes {can}", status=400,
                         code="invalid_value", param=param)
