"""What the provider fakes share: reading an image sent as a data URL, and the tests' hold on content downloads."""
from __future__ import annotations

import asyncio
import base64
import binascii

from .state import SimulatorState
from .videos import sniff


def data_url_image(url: str) -> tuple[str, bytes] | None:
    """(mime, bytes) of a base64 data URL whose bytes are the image type it names; None for anything else."""
    header, comma, payload = url.partition(",")
    if not (comma and header.startswith("data:") and header.endswith(";base64")):
        return None
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    mime = header.removeprefix("data:").removesuffix(";base64")
    return (mime, data) if data and sniff(data) == mime else None


async def held(state: SimulatorState) -> None:
    """Wait while a test holds content downloads (state.content_gate closed), counting the download held."""
    gate = state.content_gate
    if gate is not None and not gate.is_set():
        state.content_held += 1
        await asyncio.to_thread(gate.wait, 60)  # a test that forgets to open it still ends
