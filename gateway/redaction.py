"""One redactor for every secret the gateway holds and for anything shaped like a credential.

It is used where text from outside enters the gateway (upstream error bodies, a failed job's reason) and where
text leaves it for operators (every log record), so a key never reaches a client, an admin view, Redis, a metric
or a log line whatever its shape: the configured secrets are replaced wherever they appear, and so are `sk-…`,
`key-…`, Google `AIza…` keys, long bare hex, JWTs, `Bearer …` tokens and passwords in URLs.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

REDACTED = "[redacted]"
# where the object stores' own tools read their secrets from: scrubbed too, should an error ever quote one
STORE_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY",
                    "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_TOKEN", "AZURE_CLIENT_SECRET", "GOOGLE_SERVICE_ACCOUNT_KEY")
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words; no real key is that short

_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-*]+")
_SHAPES = re.compile(
    r"\b(?i:sk|ak|pk|rk|key|tok|token)[-_][A-Za-z0-9._\-*]{3,}"  # sk-…, key-…, tok_… (masked ones too)
    r"|\bAIza[0-9A-Za-z_\-]{10,}"  # Google API keys
    r"|\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"  # JWTs
    r"|(?<![A-Za-z0-9_])[0-9a-fA-F]{32,}(?![A-Za-z0-9_])"  # bare hex (not inside ids like video_<hex>)
    # long tokens mixing upper case, lower case and digits (base64 and url-safe keys); case-sensitive on purpose,
    # so ids like video_<hex> or words joined by dashes are left alone
    r"|(?<![A-Za-z0-9_])(?=[A-Za-z0-9+/_\-]*[0-9])(?=[A-Za-z0-9+/_\-]*[a-z])(?=[A-Za-z0-9+/_\-]*[A-Z])"
    r"[A-Za-z0-9+/_\-]{32,}={0,2}(?![A-Za-z0-9_])"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# the gateway's own job and request ids: nothing credential-shaped can match inside one (the prefix is no key
# word and hex after `_` is not bare hex), and each is new, so neither scanned for shapes nor remembered
_OWN_ID = re.compile(r"(?:video|req)_[0-9a-f]{20,32}")
_MEMO_TEXT, _MEMO_ENTRIES = 200, 4096  # texts up to this long are remembered, this many at most


class Redactor:
    """Replaces known secrets and credential-shaped strings in text.

    `update()` swaps the known secrets (a config reload), so one instance can be shared by everything built
    from the config.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._known: re.Pattern[str] | None = None
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                variants |= {secret, quote(secret, safe="")}
        known = sorted(variants, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None
        self._seen: dict[str, str] = {}

    def __call__(self, text: str, extra: Iterable[str] = ()) -> str:
        for secret in extra:
            if len(secret) >= MIN_SECRET_LENGTH:
                text = text.replace(secret, REDACTED)
        if len(text) > _MEMO_TEXT:
            return self._redact(text)
        # Log lines repeat most of their fields (method, route, team, model, key label): each is scanned once.
        done = self._seen.get(text)
        if done is None:
            if _OWN_ID.fullmatch(text):
                return text if self._known is None else self._known.sub(REDACTED, text)
            if len(self._seen) >= _MEMO_ENTRIES:
                self._seen = {}
            done = self._seen[text] = self._redact(text)
        return done

    def _redact(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        text = _BEARER.sub(r"\g<1>" + REDACTED, text)
        text = _SHAPES.sub(REDACTED, text)
        return _URL_PASSWORD.sub(r"\g<1>" + REDACTED + "@", text)

    def value(self, value: Any) -> Any:
        """A copy of `value` with every string in it redacted; other objects become their redacted `str()`."""
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v) for v in value]
        return self(str(value))

    def fields(self, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """`{name: self.value(v)}`, with the common cases first: numbers and texts seen before cost a lookup."""
        seen = self._seen
        done: dict[str, Any] = {}
        for name, v in items:
            kind = type(v)
            if kind is str:
                known = seen.get(v)
                done[name] = known if known is not None else self(v)
            elif v is None or kind is int or kind is float or kind is bool:
                done[name] = v
            else:
                done[name] = self.value(v)
        return done

    def outside_text(self, text: str, extra: Iterable[str] = (), limit: int = 300) -> str:
        """Text from outside, fit to be shown: redacted, on one line, without control characters, bounded."""
        text = _CONTROL.sub(" ", self(text, extra).replace("\n", " ").replace("\r", " ")).strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"


NO_SECRETS = Redactor()


def config_secrets(config: Any) -> list[str]:
    """Every secret the config holds in clear: signing secret, admin keys, upstream keys and webhook secrets,
    storage passwords."""
    found = [config.server.signing_secret]
    found += [k for k in config.server.admin_keys if not k.startswith("sha256:")]
    for upstream in config.upstreams:
        found += upstream.keys
        found.append(upstream.webhook_secret)
    found += [team.webhook_secret for team in config.teams]
    found += [os.environ.get(name, "") for name in STORE_SECRET_ENV]
    for url in (config.storage.database, config.storage.redis):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            found.append(password)
    return [s for s in found if s]
