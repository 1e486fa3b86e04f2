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
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf = ca.issue_cert("routerd")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
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
    (tmp_path / "junk.pem").write_text("-----BEGIN-----\n")
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources({}, {"ROUTERD_AMQP_URL": url.replace("ca.pem", "junk.pem")})
    assert f"cafile={tmp_path}/junk.pem: cannot be read as CA certificates" in str(caught.value)


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


# --- the URL from a file (ROUTERD_AMQP_URL_FILE), as Kubernetes mounts a secret ----------


def test_the_url_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text("amqp://router:s3cret@broker:5672/prod\n")
    s = Settings.from_sources(NO_FLAGS, {"ROUTERD_AMQP_URL_FILE": str(secret)})
    assert s.amqp_url == "amqp://router:s3cret@broker:5672/prod", "the newline is stripped"
    assert s.broker.url == s.amqp_url
    assert s.amqp_url_from == f"file {secret} named by environment variable ROUTERD_AMQP_URL_FILE"
    assert s.describe()["amqp_url_from"] == s.amqp_url_from
    assert "s3cret" not in str(s.describe()) and "s3cret" not in repr(s)
    assert s.warnings == ()


def test_the_flag_wins_over_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text("amqp://router:s3cret@broker/\n")
    s = Settings.from_sources(
        {"amqp_url": "amqp://flag-host/"}, {"ROUTERD_AMQP_URL_FILE": str(secret)}
    )
    assert (s.amqp_url, s.amqp_url_from) == ("amqp://flag-host/", "option --amqp-url")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it (No such file or directory): check the path"),
        ("", "it is empty: write amqp://user:password@host/vhost"),
        ("\n", "it is empty"),
        (b"\xff\xfe", "cannot read it (not UTF-8 text)"),
    ],
)
def test_an_unusable_url_file_is_named(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    secret = tmp_path / "amqp-url"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(NO_FLAGS, {"ROUTERD_AMQP_URL_FILE": str(secret)})
    text = str(caught.value)
    assert text.startswith(f"invalid AMQP URL file '{secret}' (from environment variable ")
    assert message in text


def test_a_url_file_that_is_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(NO_FLAGS, {"ROUTERD_AMQP_URL_FILE": str(tmp_path)})
    assert "cannot read it (Is a directory)" in str(caught.value)


def test_the_url_and_its_file_both_set_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text("amqp://a:b@c/")
    env = {"ROUTERD_AMQP_URL_FILE": str(secret), "ROUTERD_AMQP_URL": "amqp://x:y@z/"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(NO_FLAGS, env)
    assert "ROUTERD_AMQP_URL is set too; set only one of them" in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        "s3cret",  # a bare password in the file, not a URL: never echoed
        "http://router:s3cret@broker/",
        "amqp://router:s3cret/x@broker/",  # an unescaped / in the password
        "amqp://router:s3c@ret@broker:99999/",
    ],
)
def test_a_bad_url_from_a_file_never_shows_the_password(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text(content + "\n")
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(NO_FLAGS, {"ROUTERD_AMQP_URL_FILE": str(secret)})
    assert "s3c" not in str(caught.value)
    assert f"from file {secret} named by environment variable" in str(caught.value)


def test_a_password_on_the_command_line_is_warned_about() -> None:
    on_argv = Settings.from_sources({"amqp_url": "amqp://router:s3cret@broker/"}, {})
    (warning,) = on_argv.warnings
    assert "`ps` shows it" in warning and "ROUTERD_AMQP_URL_FILE" in warning
    assert "s3cret" not in warning
    assert Settings.from_sources({"amqp_url": "amqp://broker/"}, {}).warnings == ()
    assert Settings.from_sources({}, {"ROUTERD_AMQP_URL": "amqp://u:p@broker/"}).warnings == ()


def test_help_names_the_url_file() -> None:
    from routerd.settings import env_help

    assert "ROUTERD_AMQP_URL_FILE" in env_help("amqp_url")


def test_the_api_reads_the_url_file_too(tmp_path: Path) -> None:
    from routerd.api import ApiSettings

    secret = tmp_path / "amqp-url"
    secret.write_text("amqp://api:s3cret@broker/\n")
    env = {"ROUTERD_AMQP_URL_FILE": str(secret), "ROUTERD_API_KEYS": "keys.yaml"}
    assert ApiSettings.from_sources({}, env).common.amqp_url == "amqp://api:s3cret@broker/"
