"""Runtime team keys: random, shown once, stored as hashes."""
from __future__ import annotations

import re
import secrets
import time

from gateway.core.auth import hash_key, new_team_key
from gateway.core.errors import bad_request, shown
from gateway.core.records import KeyRecord

_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])$")
MAX_KEY_LIFETIME_S = 10 * 366 * 86_400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: str, param: str = "expires") -> float:
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) <= 0:
        raise bad_request(f"Invalid value for '{param}': {shown(value)}. Use a number and a unit, like 30d, 12h or"
                          " 90m.", param=param)
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_KEY_LIFETIME_S:
        raise bad_request(f"Invalid value for '{param}': {shown(value)} is longer than ten years; use at most 3660d.",
                          param=param)
    return seconds


async def create_key(db, team: str, name: str, expires_in_s: float | None) -> tuple[str, KeyRecord]:
    """Return (the key, its record). The key itself is not stored anywhere."""
    key = new_team_key()
    now = time.time()
    record = KeyRecord(id="key_" + secrets.token_hex(8), team=team, name=name, hash=hash_key(key), created_at=now,
                       expires_at=now + expires_in_s if expires_in_s else None)
    await db.insert_key(record)
    return key, record


def key_view(record: KeyRecord) -> dict:
    now = time.time()
    status = ("revoked" if record.revoked_at else
              "expired" if record.expires_at is not None and record.expires_at <= now else "active")
    return {"id": record.id, "object": "api_key", "team": record.team, "name": record.name,
            "created_at": int(record.created_at),
            "expires_at": int(record.expires_at) if record.expires_at else None,
            "last_used_at": int(record.last_used_at) if record.last_used_at else None,
            "revoked_at": int(record.revoked_at) if record.revoked_at else None, "status": status}
