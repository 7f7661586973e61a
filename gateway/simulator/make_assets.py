"""Regenerate the media files the simulator serves.

    python -m gateway.simulator.make_assets

Needs PyAV (a test dependency). The simulator itself only reads the files written here, so it runs without av.
Output: a 4 s, 24 fps, 128x72 H.264 MP4 of a moving colour pattern, a JPEG thumbnail taken from it and a JPEG
spritesheet of frames laid out on a grid, like the ones the Videos API returns.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av

ASSETS = Path(__file__).with_name("assets")
WIDTH, HEIGHT = 128, 72
FPS = 24
SECONDS = 4
SPRITE_COLUMNS, SPRITE_ROWS = 4, 2


def render(width: int, height: int, t: float) -> bytes:
    """RGBA pixels of the pattern at time `t` (seconds): drifting colour bands and a sliding square."""
    box = height // 3
    box_x = int((width - box) * (0.5 + 0.5 * math.sin(2 * math.pi * t / SECONDS)))
    box_y = (height - box) // 2
    pixels = bytearray(b"\xff" * (width * height * 4))
    for y in range(height):
        for x in range(width):
            i = (y * width + x) * 4
            if box_x <= x < box_x + box and box_y <= y < box_y + box:
                pixels[i : i + 3] = b"\xff\xff\xff"
                continue
            phase = (x / width + t / SECONDS) * 2 * math.pi
            pixels[i] = int(127 + 127 * math.sin(phase))
            pixels[i + 1] = int(127 + 127 * math.sin(phase + 2.1 + y / height))
            pixels[i + 2] = int(127 + 127 * math.sin(phase + 4.2))
    return bytes(pixels)


def make_video(path: Path) -> None:
    # faststart puts the index first so players can start before the download ends
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = {"crf": "32", "preset": "veryslow", "g": str(FPS * 2)}
        for index in range(FPS * SECONDS):
            frame = av.VideoFrame.from_bytes(render(WIDTH, HEIGHT, index / FPS), WIDTH, HEIGHT, format="rgba")
            frame.pts = index
            container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode())


def encode_jpeg(rgba: bytes, width: int, height: int) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, FPS)
    codec.options = {"qmin": "2", "qmax": "6"}
    frame = av.VideoFrame.from_bytes(rgba, width, height, format="rgba").reformat(format="yuvj420p")
    frame.pts = 0
    packets = codec.encode(frame) + codec.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def first_frame(path: Path) -> tuple[bytes, int, int]:
    """The first decoded frame of the video at `path`, as tightly packed RGBA."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).reformat(format="rgba")
        plane = bytes(frame.planes[0])
        stride, row = frame.planes[0].line_size, frame.width * 4
        data = b"".join(plane[y * stride : y * stride + row] for y in range(frame.height))
        return data, frame.width, frame.height


def make_spritesheet() -> bytes:
    tile_w, tile_h = WIDTH // 2, HEIGHT // 2
    count = SPRITE_COLUMNS * SPRITE_ROWS
    tiles = [render(tile_w, tile_h, SECONDS * n / count) for n in range(count)]
    sheet_w = tile_w * SPRITE_COLUMNS
    rows = []
    for row in range(SPRITE_ROWS):
        for y in range(tile_h):
            for column in range(SPRITE_COLUMNS):
                tile = tiles[row * SPRITE_COLUMNS + column]
                rows.append(tile[y * tile_w * 4 : (y + 1) * tile_w * 4])
    return encode_jpeg(b"".join(rows), sheet_w, tile_h * SPRITE_ROWS)


def main() -> None:
    ASSETS.mkdir(exist_ok=True)
    video = ASSETS / "sample.mp4"
    make_video(video)
    (ASSETS / "thumbnail.jpg").write_bytes(encode_jpeg(*first_frame(video)))
    (ASSETS / "spritesheet.jpg").write_bytes(make_spritesheet())
    for path in sorted(ASSETS.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
