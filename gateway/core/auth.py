"""Team and admin key checks: keys are compared as SHA-256 hashes, in constant time."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from cachetools import TTLCache

from gateway.config import Config, TeamConfig
from gateway.core.errors import Unauthenticated
from gateway.core.records import KeyRecord

KEY_PREFIX = "sk-gw-"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_team_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    team: TeamConfig
    key_id: str


_INVALID_KEY = "Incorrect API key provided. Send your team key as 'Authorization: Bearer <key>'."


def invalid_key(message: str = _INVALID_KEY) -> Unauthenticated:
    return Unauthenticated(message)


class Authenticator:
    """Resolves a bearer key to its team. Database keys are cached for at most a second, so a revocation
    or expiry takes effect at once for practical purposes."""

    def __init__(self, config: Config, db) -> None:
        self.config = config
        self.db = db
        self._config_keys: dict[str, tuple[str, TeamConfig]] = {}
        for team in config.teams:
            for entry in team.keys:
                self._config_keys[entry] = ("cfg_" + entry[7:19], team)
        self._admin = [k if k.startswith("sha256:") else hash_key(k) for k in config.server.admin_keys]
        self._db_cache: TTLCache[str, KeyRecord | None] = TTLCache(maxsize=100_000, ttl=1.0)
        self.last_used: dict[str, float] = {}

    async def team_key(self, authorization: str | None) -> Principal:
        key = _bearer(authorization)
        digest = hash_key(key)
        # Lookups go by the key's hash, so timing reveals nothing about the key itself.
        found = self._config_keys.get(digest)
        if found is not None:
            return Principal(found[1], found[0])
        record = await self._lookup(digest)
        if record is None or not hmac.compare_digest(record.hash, digest):
            raise invalid_key()
        if record.revoked_at is not None:
            raise invalid_key("This API key has been revoked; ask your platform team for a new one.")
        now = time.time()
        if record.expires_at is not None and record.expires_at <= now:
            raise invalid_key("This API key has expired; ask your platform team for a new one.")
        team = self.config.team(record.team)
        if team is None:
            raise invalid_key("This API key belongs to a team that no longer exists in the gateway config.")
        self.last_used[record.id] = now
        return Principal(team, record.id)

    def is_admin(self, authorization: str | None) -> bool:
        try:
            digest = hash_key(_bearer(authorization))
        except Unauthenticated:
            return False
        return any(hmac.compare_digest(digest, entry) for entry in self._admin)

    def forget(self, key_hash: str | None = None) -> None:
        if key_hash is None:
            self._db_cache.clear()
        else:
            self._db_cache.pop(key_hash, None)

    async def _lookup(self, digest: str) -> KeyRecord | None:
        if digest in self._db_cache:
            return self._db_cache[digest]
        record = await self.db.key_by_hash(digest)
        self._db_cache[digest] = record
        return record


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise invalid_key("You didn't provide an API key. Send your team key as 'Authorization: Bearer <key>'.")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise invalid_key("The Authorization header must be 'Bearer <key>'.")
    return key.strip()
