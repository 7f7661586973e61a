"""The media every finished job serves (written by make_assets.py)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Asset:
    data: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class Assets:
    video: Asset
    thumbnail: Asset
    spritesheet: Asset

    @classmethod
    def load(cls) -> Assets:
        folder = resources.files(__package__) / "assets"
        return cls(
            video=Asset((folder / "sample.mp4").read_bytes(), "video/mp4"),
            thumbnail=Asset((folder / "thumbnail.jpg").read_bytes(), "image/jpeg"),
            spritesheet=Asset((folder / "spritesheet.jpg").read_bytes(), "image/jpeg"),
        )

    def variant(self, name: str) -> Asset:
        return {"video": self.video, "thumbnail": self.thumbnail, "spritesheet": self.spritesheet}[name]
