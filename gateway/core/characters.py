"""Characters: a team's people, pets and objects, kept the same across its videos.

A character lives on the upstream account that made it, so the gateway keeps the clip it was made from and makes
it again, lazily, on each upstream key that runs a job using it; the mapping (key label → upstream character id)
is remembered, and rotation prefers keys that already hold a job's characters. Clients only ever see `char_…`.
"""
from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.core.database import Database
from gateway.core.errors import bad_request, not_found
from gateway.core.records import CharacterRecord
from gateway.core.upstream import GenerationSpec, UpstreamKey, VideoInput

FEATURE = "characters"
NAME_MAX = 64
_MENTION = re.compile(r"(?<![\w@])@([\w][\w.\-]*)")


def new_character_id() -> str:
    return "char_" + secrets.token_hex(16)


def is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def check_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX:
        raise bad_request(f"'name' is required: the character's display name, 1 to {NAME_MAX} characters, which a"
                          " prompt can mention as @Name.", param="name")
    return value.strip()


class CharacterMaker(Protocol):
    async def create_character(self, name: str, video: VideoInput, key: UpstreamKey) -> str:
        """Make a character on the key's account; return its upstream id. Raises UpstreamError."""


class Characters:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, team: str, name: str, media: bytes, source: str,
                     source_video_id: str | None = None) -> CharacterRecord:
        record = CharacterRecord(id=new_character_id(), team=team, name=name, created_at=time.time(), media=media,
                                 source=source, source_video_id=source_video_id)
        await self.db.insert_character(record)
        return record

    async def own(self, team: str, character_id: str) -> CharacterRecord:
        """The team's character; another team's, a deleted or an unknown id is the same 404."""
        record = await self.db.get_character(character_id)
        if record is None or record.team != team or record.deleted:
            raise not_found(f"Character with id '{character_id}' not found.")
        return record

    async def for_job(self, team: str, ids: Sequence[str], prompt: str) -> tuple[CharacterRecord, ...]:
        """The characters a job shows: those named by id (each must be the team's), then those its prompt
        mentions as @Name (a mention that names none of the team's characters is plain text)."""
        chosen = [await self._own_for_use(team, character_id, i) for i, character_id in enumerate(ids)]
        names = {m.casefold() for m in _MENTION.findall(prompt)}
        if names:
            for record in await self.db.list_characters(team):
                if record.name.casefold() in names and all(c.id != record.id for c in chosen):
                    chosen.append(record)
        return tuple(chosen)

    async def _own_for_use(self, team: str, character_id: str, index: int) -> CharacterRecord:
        record = await self.db.get_character(character_id)
        if record is None or record.team != team or record.deleted:
            raise not_found(f"Character with id '{character_id}' not found (characters[{index}]); POST"
                            " /v1/videos/characters makes one, GET /v1/videos/characters lists yours.")
        return record


@dataclass(frozen=True, slots=True)
class JobCharacters:
    """The characters of one job, made on whichever key the job lands on."""

    records: tuple[CharacterRecord, ...]
    db: Database

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    async def holders(self) -> frozenset[str]:
        """Labels of the keys that already hold every one of these characters."""
        mappings = await self.db.character_keys(self.ids)
        held = [set(m) for m in mappings.values()]
        return frozenset(set.intersection(*held)) if held else frozenset()

    async def on_key(self, spec: GenerationSpec, maker: CharacterMaker, key: UpstreamKey) -> GenerationSpec:
        """`spec` with the upstream ids of the characters on `key`, making those the key does not hold yet."""
        mappings = await self.db.character_keys(self.ids)
        upstream_ids = []
        for record in self.records:
            upstream_id = mappings.get(record.id, {}).get(key.label)
            if upstream_id is None:
                upstream_id = await maker.create_character(record.name, VideoInput(record.media), key)
                await self.db.save_character_key(record.id, key.label, upstream_id)
            upstream_ids.append(upstream_id)
        return replace(spec, characters=tuple(upstream_ids))
