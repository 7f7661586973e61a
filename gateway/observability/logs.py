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
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import orjson

from gateway.config import Config, ConfigError
from gateway.redaction import REDACTED, Redactor, config_secrets

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "text")
LEVEL_ENV = "SORA_GATEWAY_LOG_LEVEL"
FORMAT_ENV = "SORA_GATEWAY_LOG_FORMAT"
HANDLER_NAME = "sora-gateway"
__all__ = ["REDACTED", "JSONFormatter", "RedactingFilter", "Redactor", "TextFormatter", "config_secrets",
           "configure_logging", "extra_fields"]

_FIELDS = "_sgw_fields"  # the redacted `extra=` fields, kept on the record by the filter for the formatter
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message", _FIELDS}  # uvicorn adds a copy of its message with terminal colours
_CHATTY_LOGGERS = ("httpx", "httpcore")  # one line per upstream call at info level: shown at debug only


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record (redacted, once it passed the filter)."""
    fields = record.__dict__.get(_FIELDS)
    return fields if fields is not None else dict(_extras(record))


def _extras(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    return ((name, value) for name, value in vars(record).items() if name not in _RECORD_FIELDS)


class RedactingFilter(logging.Filter):
    """Scrubs secrets from a record before its handler formats it. Never drops a record."""

    def __init__(self, secrets: Iterable[str] | Redactor = ()) -> None:
        super().__init__()
        self.redact = secrets if isinstance(secrets, Redactor) else Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the record
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        fields = self.redact.fields(_extras(record))
        vars(record).update(fields)
        record.__dict__[_FIELDS] = fields
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = extra_fields(record)
        if fields.keys().isdisjoint(entry):
            entry.update(fields)
        else:  # a field named like one of the four above does not replace it
            for name, value in fields.items():
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
        # A request path may hold a decoded %0a: one record must stay one line, or a client could forge lines.
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {_one_line(record.getMessage())}"
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


_stamp: tuple[int, str] = (-1, "")  # the last second formatted, and its text: a line's time is built once a second


def _timestamp(record: logging.LogRecord) -> str:
    global _stamp
    second, text = _stamp
    if int(record.created) != second:
        second = int(record.created)
        text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _stamp = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


def _one_line(text: str) -> str:
    if "\n" not in text and "\r" not in text:
        return text
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


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
    # No line shows the caller's file and line, thread or process: the logging module need not look them up.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
