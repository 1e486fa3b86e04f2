"""Settings of `routerd serve`: flags over ROUTERD_* variables, clear errors, no password shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from routerd.settings import DEFAULT_AMQP_URL, Settings, SettingsError

NO_FLAGS: dict[str, str | None] = {}


def test_defaults() -> None:
    s = Settings.from_sources(NO_FLAGS, {})
    assert s == Settings()
    assert s.amqp_url == DEFAULT_AMQP_URL == "amqp://guest:guest@127.0.0.1:5672/"
    assert (s.http_host, s.http_port) == ("127.0.0.1", 9464)
    assert s.config_path == Path("config/routes.yaml")
    assert (s.log_format, s.log_level) == ("text", "info")
    assert (s.shutdown_timeout, s.publish_timeout) == (30.0, 10.0)


def test_flags_win_over_environment() -> None:
    env = {
        "ROUTERD_CONFIG": "/env/routes.yaml",
        "ROUTERD_AMQP_URL": "amqp://env:pw@env-host/",
        "ROUTERD_HTTP_ADDR": "0.0.0.0:1000",
        "ROUTERD_LOG_FORMAT": "json",
        "ROUTERD_SHUTDOWN_TIMEOUT": "5",
    }
    s = Settings.from_sources(
        {"config": Path("/flag/routes.yaml"), "http_addr": "127.0.0.1:2000", "log_format": None},
        env,
    )
    assert s.config_path == Path("/flag/routes.yaml")
    assert s.amqp_url == "amqp://env:pw@env-host/"
    assert (s.http_host, s.http_port) == ("127.0.0.1", 2000)
    assert s.log_format == "json"
    assert s.shutdown_timeout == 5.0


def test_empty_environment_values_are_unset() -> None:
    assert Settings.from_sources(NO_FLAGS, {"ROUTERD_HTTP_ADDR": ""}).http_port == 9464


@pytest.mark.parametrize(
    ("addr", "host", "port"),
    [("[::1]:9000", "::1", 9000), (":9000", "", 9000), ("localhost:0", "localhost", 0)],
)
def test_http_addresses(addr: str, host: str, port: int) -> None:
    s = Settings.from_sources({"http_addr": addr}, {})
    assert (s.http_host, s.http_port) == (host, port)


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"http_addr": "9464"}, {}, "invalid HTTP address '9464' (from option --http-addr)"),
        ({"http_addr": "::1:9464"}, {}, "in brackets"),
        ({"http_addr": "host:70000"}, {}, "0..65535"),
        ({}, {"ROUTERD_LOG_FORMAT": "xml"}, "from environment variable ROUTERD_LOG_FORMAT"),
        ({"log_level": "chatty"}, {}, "unknown log level 'chatty'"),
        ({"shutdown_timeout": "soon"}, {}, "use a number of seconds"),
        ({"shutdown_timeout": "-1"}, {}, "positive"),
        ({}, {"ROUTERD_PUBLISH_TIMEOUT": "nan"}, "positive"),
        ({"amqp_url": "http://host/"}, {}, "amqp://user:password@host"),
        ({"amqp_url": "amqp:///vhost"}, {}, "names no host"),
        ({}, {"ROUTERD_RECONNECT_MIN": "60"}, "must not exceed reconnect max"),
    ],
)
def test_bad_values_are_named(
    flags: dict[str, str | None], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(flags, env)
    assert message in str(caught.value)


def test_seconds_accept_a_suffix() -> None:
    assert Settings.from_sources({"shutdown_timeout": "2.5s"}, {}).shutdown_timeout == 2.5


def test_the_password_is_never_shown() -> None:
    url = "amqp://router:s3cret@broker:5672/prod"
    s = Settings.from_sources({"amqp_url": url}, {})
    assert s.amqp_url == url
    assert s.redacted_url == "amqp://router:***@broker:5672/prod"
    assert "s3cret" not in repr(s)
    assert "s3cret" not in str(s.describe())
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources({"amqp_url": "http://router:s3cret@broker/"}, {})
    assert "s3cret" not in str(caught.value)


def test_unknown_flag_is_a_bug() -> None:
    with pytest.raises(KeyError):
        Settings.from_sources({"prefetch": "10"}, {})
