"""Log output: one line per event, text for people or JSON for log shippers, never a password."""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is
# printed as a structured field.
_RECORD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)
# user:password@ inside any URL. Applied to every finished line as a last line of defence:
# a URL can reach a log line through an exception message that no call site controls.
# Up to the last @ before a space or quote: a password may hold an unescaped @ or /.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"']*:)[^\s\"']*@")
_PLAIN_VALUE = re.compile(r"[^\s\"'=\\]+")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Loggers of libraries that talk too much at INFO for a daemon's steady state.
_CHATTY = ("watchfiles",)


def redact_url(url: str) -> str:
    """`amqp://user:secret@host/vhost` -> `amqp://user:***@host/vhost`; other text unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _scrub(url)
    if password is None:
        # No password as a URL parser reads it, but an unescaped / # ? in one hides it.
        return _scrub(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _scrub(text: str) -> str:
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with milliseconds: replicas on different hosts sort into one timeline.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


def _exception_text(record: logging.LogRecord) -> str | None:
    parts = []
    if record.exc_info and record.exc_info[0] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)).rstrip())
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts) if parts else None


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and _PLAIN_VALUE.fullmatch(text):
        return text
    return orjson.dumps(text).decode()


class TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z INFO routerd.reload route table reloaded rules=5 hash=ab12`."""

    def format(self, record: logging.LogRecord) -> str:
        # Newlines are escaped so one event stays one line, even a multi-line message.
        message = record.getMessage().replace("\n", "\\n")
        fields = [f"{k}={_text_value(v)}" for k, v in _extras(record).items()]
        exc = _exception_text(record)
        if exc is not None:
            fields.append(f"exc={_text_value(exc)}")
        line = f"{_timestamp(record)} {record.levelname} {record.name} {message}"
        if fields:
            line = f"{line} {' '.join(fields)}"
        return _scrub(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the `extra=` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            payload.setdefault(key, value)
        exc = _exception_text(record)
        if exc is not None:
            payload["exc"] = exc
        line = orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return _scrub(line)


def parse_level(level: str) -> int:
    """`info`, `INFO`, `warning` or a number; a clear error for anything else."""
    text = level.strip()
    if text.isdigit():
        return int(text)
    try:
        return _LEVELS[text.lower()]
    except KeyError:
        choices = ", ".join(k for k in _LEVELS if k != "warn")
        raise ValueError(f"unknown log level {level!r}: use one of {choices}") from None


def configure_logging(log_format: LogFormat, level: str) -> None:
    """Send every log record to stderr, one line each, in the chosen format.

    Calling it again replaces what an earlier call installed and leaves other handlers
    (pytest's caplog, for one) alone.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    numeric = parse_level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.set_name("routerd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "routerd"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
