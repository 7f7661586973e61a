"""Identifiers that must be unique but need not be secret (request and completion ids).

A random per-process prefix and a counter: unique across instances and restarts, and far cheaper than reading
the OS's random source on every request. Ids that grant nothing by themselves are the only ones made here.
"""
from __future__ import annotations

import itertools
import secrets

_PREFIX = secrets.token_hex(6)
_COUNTER = itertools.count(1)


def unique_id(kind: str) -> str:
    return f"{kind}{_PREFIX}{next(_COUNTER):012x}"
