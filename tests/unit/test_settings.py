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


def test_the_broker_options_are_built_once_from_the_settings() -> None:
    env = {
        "ROUTERD_AMQP_URL": "amqp://u:p@broker/?heartbeat=5",
        "ROUTERD_PUBLISH_TIMEOUT": "3",
        "ROUTERD_RECONNECT_MIN": "1",
        "ROUTERD_RECONNECT_MAX": "8",
    }
    s = Settings.from_sources(NO_FLAGS, env)
    broker = s.broker
    assert s.broker is broker
    assert broker.url == s.amqp_url
    assert broker.heartbeat == 5
    assert (broker.publish_timeout, broker.reconnect_min, broker.reconnect_max) == (3, 1, 8)
    assert Settings().broker.heartbeat == 10, "an explicit heartbeat, not aiormq's 60 s"
    described = s.describe()
    assert described["heartbeat"] == 5
    assert "broker" not in described


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    url = (
        f"amqps://u:s3cret@broker/?cafile={tmp_path}/ca.pem"
        f"&certfile={tmp_path}/cert.pem&keyfile={tmp_path}/key.pem"
    )
    s = Settings.from_sources({"amqp_url": url}, {})
    assert s.broker.tls_files == {
        "cafile": f"{tmp_path}/ca.pem",
        "certfile": f"{tmp_path}/cert.pem",
        "keyfile": f"{tmp_path}/key.pem",
    }
    missing = url.replace("ca.pem", "nope.pem")
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources({}, {"ROUTERD_AMQP_URL": missing})
    message = str(caught.value)
    assert f"cafile={tmp_path}/nope.pem: no such file" in message
    assert "from environment variable ROUTERD_AMQP_URL" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://h/?heartbeat=off", "heartbeat=off: use whole seconds"),
        ("amqp://h/?cafile=/ca.pem", "TLS files need an amqps:// URL"),
    ],
)
def test_bad_broker_options_are_named(url: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources({"amqp_url": url}, {})
    assert message in str(caught.value)
    assert "(from option --amqp-url)" in str(caught.value)
    # Built directly (as tests and embedders do), the same check applies.
    with pytest.raises(SettingsError) as direct:
        Settings(amqp_url=url)
    assert message in str(direct.value)
