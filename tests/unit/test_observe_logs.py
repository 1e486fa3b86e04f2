from __future__ import annotations

import json
import logging
import sys

import pytest

from routerd.observe import configure_logging, parse_level, redact_url
from routerd.observe.logs import JsonFormatter, TextFormatter


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("routerd.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("connect to amqp://routerd:s3cret@broker:5672/ failed")
        except ValueError:
            exc_info = sys.exc_info()
    return logger.makeRecord(
        "routerd.test", logging.INFO, __file__, 1, msg, args, exc_info, extra=extra
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqps://u:p%40ss@host/vhost?heartbeat=5", "amqps://u:***@host/vhost?heartbeat=5"),
        ("amqp://host:5672/", "amqp://host:5672/"),
        ("amqp://user@host/", "amqp://user@host/"),
        ("not a url", "not a url"),
        ("amqp://u:p@host:notaport/", "amqp://u:***@host:notaport/"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_text_line_has_time_level_logger_message_and_extras() -> None:
    line = TextFormatter().format(record("route table %s", "reloaded", rules=5, hash="ab12"))
    stamp, level, logger, rest = line.split(" ", 3)
    assert stamp.endswith("Z") and "T" in stamp
    assert (level, logger) == ("INFO", "routerd.test")
    assert rest == "route table reloaded rules=5 hash=ab12"


def test_text_quotes_values_with_spaces_and_keeps_one_line() -> None:
    line = TextFormatter().format(record("two\nlines", reason="file change: routes.yaml"))
    assert "\n" not in line
    assert 'reason="file change: routes.yaml"' in line
    assert "two\\nlines" in line


def test_exceptions_stay_on_one_line_without_the_password() -> None:
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(record("connection lost", exc=True))
        assert "\n" not in line
        assert "s3cret" not in line
        assert "ValueError" in line


def test_passwords_are_scrubbed_from_messages_and_extras() -> None:
    rec = record("connecting to %s", "amqp://u:hunter2@h/", url="amqp://u:hunter2@h/")
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(rec)
        assert "hunter2" not in line
        assert "amqp://u:***@h/" in line


def test_json_is_one_object_per_line_with_extras() -> None:
    line = JsonFormatter().format(record("route table reloaded", rules=5, generation=2))
    data = json.loads(line)
    assert data["level"] == "info"
    assert data["logger"] == "routerd.test"
    assert data["msg"] == "route table reloaded"
    assert (data["rules"], data["generation"]) == (5, 2)
    assert data["ts"].endswith("Z")


def test_configure_logging_writes_to_stderr_and_replaces_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("text", "info")
        configure_logging("json", "debug")
        ours = [h for h in root.handlers if h.get_name() == "routerd"]
        assert len(ours) == 1
        logging.getLogger("routerd.test").debug("hello", extra={"n": 1})
        err = capsys.readouterr().err.strip().splitlines()
        assert json.loads(err[-1])["msg"] == "hello"
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
        root.setLevel(level)


def test_bad_level_and_format_are_clear_errors() -> None:
    assert parse_level("WARNING") == logging.WARNING
    assert parse_level("15") == 15
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_level("loud")
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("xml", "info")  # type: ignore[arg-type]
