"""Logging for operators: one line per event, as JSON or plain text, with secrets scrubbed on the way out.

Redaction happens in a filter on the handler, so it covers every record that reaches the output, whatever logger
it comes from and whoever writes the next log call: the secrets the config holds (upstream keys, admin keys, the
signing secret, passwords in storage URLs) and anything shaped like a credential (`sk-…`, `Bearer …`) are replaced
in the message, its arguments, the `extra=` fields, tracebacks and stack traces.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any
from urllib.parse import urlsplit

import orjson

from gateway.config import Config, ConfigError

REDACTED = "[redacted]"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "text")
LEVEL_ENV = "SORA_GATEWAY_LOG_LEVEL"
FORMAT_ENV = "SORA_GATEWAY_LOG_FORMAT"
HANDLER_NAME = "sora-gateway"
# where the object stores' own tools read their secrets from: scrubbed too, should an error ever quote one
STORE_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY",
                    "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_TOKEN", "AZURE_CLIENT_SECRET", "GOOGLE_SERVICE_ACCOUNT_KEY")
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words; no real key is that short

_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]+")
_API_KEY = re.compile(r"\bsk-[A-Za-z0-9._\-]{3,}")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}  # uvicorn adds a copy of its message with terminal colours
_CHATTY_LOGGERS = ("httpx", "httpcore")  # one line per upstream call at info level: shown at debug only


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}


class Redactor:
    """Replaces known secrets and credential-shaped strings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        text = _BEARER.sub(r"\g<1>" + REDACTED, text)
        text = _API_KEY.sub(REDACTED, text)
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


class RedactingFilter(logging.Filter):
    """Scrubs secrets from a record before its handler formats it. Never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the record
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        for name, value in extra_fields(record).items():
            setattr(record, name, self.redact.value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def config_secrets(config: Config) -> list[str]:
    """Every secret the config holds in clear."""
    found = [config.server.signing_secret]
    found += [k for k in config.server.admin_keys if not k.startswith("sha256:")]
    for upstream in config.upstreams:
        found += upstream.keys
    for url in (config.storage.database, config.storage.redis):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            found.append(password)
    found += [os.environ.get(name, "") for name in STORE_SECRET_ENV]
    return [s for s in found if s]


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value …`, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{name}={_text_value(value)}" for name, value in extra_fields(record).items())
        if fields:
            line += " " + fields
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return orjson.dumps(text).decode() if not text or any(c.isspace() or c == '"' for c in text) else text


def configure_logging(config: Config, *, stream: IO[str] | None = None,
                      environ: Mapping[str, str] | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr) through one redacting handler, at the configured level.

    `SORA_GATEWAY_LOG_LEVEL` and `SORA_GATEWAY_LOG_FORMAT` override the config. Format `auto` is text on a
    terminal and JSON otherwise. Calling it again replaces the handler it installed before.
    """
    environ = os.environ if environ is None else environ
    level = _setting(environ, LEVEL_ENV, config.server.log_level, LEVELS)
    fmt = _setting(environ, FORMAT_ENV, config.server.log_format, FORMATS)
    stream = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "text" if _is_terminal(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(config_secrets(config)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own lines go through the same handler
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    return handler


def _setting(environ: Mapping[str, str], name: str, configured: str, allowed: tuple[str, ...]) -> str:
    value = environ.get(name, "").strip().lower() or configured
    if value not in allowed:
        raise ConfigError([f"{name}: must be one of {', '.join(allowed)}, got {value!r}"], source="environment")
    return value


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
