"""How one `routerd serve` process runs: CLI flags over `ROUTERD_*` environment variables.

Settings are what the route table is not: where the broker and the HTTP endpoint are, how
to log, how long to wait. They are fixed for the life of the process; the route table is
the part that reloads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from routerd.amqp.options import BrokerOptions, BrokerOptionsError, redact_urls, split_urls
from routerd.observe.logs import LogFormat, parse_level

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config/routes.yaml")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 9464

# Setting name -> environment variable. The first six are the CLI contract of `serve`;
# the rest are tuning knobs ops rarely touch, so they have no flag.
ENV_VARS: Mapping[str, str] = {
    "config": "ROUTERD_CONFIG",
    "amqp_url": "ROUTERD_AMQP_URL",
    # A file holding the URL, as Kubernetes mounts a secret: the password stays out of the
    # environment (readable in /proc/PID/environ and in `kubectl describe`) and out of argv.
    "amqp_url_file": "ROUTERD_AMQP_URL_FILE",
    "http_addr": "ROUTERD_HTTP_ADDR",
    "log_format": "ROUTERD_LOG_FORMAT",
    "log_level": "ROUTERD_LOG_LEVEL",
    "shutdown_timeout": "ROUTERD_SHUTDOWN_TIMEOUT",
    "publish_timeout": "ROUTERD_PUBLISH_TIMEOUT",
    "reconnect_min": "ROUTERD_RECONNECT_MIN",
    "reconnect_max": "ROUTERD_RECONNECT_MAX",
}


class SettingsError(ValueError):
    """A setting has a value routerd cannot use; names the setting, where it came from, the fix."""

    def __init__(self, name: str, origin: str, value: str, problem: str) -> None:
        self.name = name
        self.origin = origin
        self.value = value
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"invalid {self.name} {self.value!r} (from {self.origin}): {self.problem}"


@dataclass(frozen=True, slots=True)
class Settings:
    config_path: Path = DEFAULT_CONFIG
    # Kept out of repr: a Settings object printed in a traceback must not leak the password.
    amqp_url: str = field(default=DEFAULT_AMQP_URL, repr=False)
    # Where the URL came from ("default", "option --amqp-url", "file /run/...": never the
    # URL itself), so a startup log line can say which of several sources won.
    amqp_url_from: str = "default"
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    log_format: LogFormat = "text"
    log_level: str = "info"
    shutdown_timeout: float = 30.0
    publish_timeout: float = 10.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    # The broker connection's options, built once from the fields above and the URL's
    # query (heartbeat, TLS files, connect timeout), and handed whole to the broker link.
    broker: BrokerOptions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            broker = BrokerOptions.from_url(
                self.amqp_url,
                publish_timeout=self.publish_timeout,
                reconnect_min=self.reconnect_min,
                reconnect_max=self.reconnect_max,
            )
        except BrokerOptionsError as exc:
            raise SettingsError("AMQP URL", "settings", self.redacted_url, str(exc)) from None
        # Frozen: the one assignment, here, where the object is built.
        object.__setattr__(self, "broker", broker)

    @property
    def redacted_url(self) -> str:
        """The AMQP URL(s) as they may appear in logs and output: passwords replaced by ***."""
        return redact_urls(self.amqp_url)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What a long-running process should log at start: settings that work but leak."""
        if self.amqp_url_from.startswith("option") and urlsplit(self.amqp_url).password:
            return (
                f"the broker password is on the command line, where `ps` shows it to every "
                f"user of this host: give the URL in {ENV_VARS['amqp_url_file']} (a file) "
                f"or {ENV_VARS['amqp_url']} instead",
            )
        return ()

    @property
    def http_addr(self) -> str:
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"{host}:{self.http_port}"

    def describe(self) -> dict[str, Any]:
        """Every setting by name, safe to log."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "broker"}
        out["config_path"] = str(self.config_path)
        out.update(self.broker.describe())
        return out

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, str | float | Path | None],
        environ: Mapping[str, str],
    ) -> Settings:
        """Build settings from CLI flags (None = not given) over environment variables.

        Keys of `flags` and `ENV_VARS` are the same names: config, amqp_url, http_addr,
        log_format, log_level, shutdown_timeout, publish_timeout, reconnect_min,
        reconnect_max. Raises `SettingsError` for the first bad value.
        """
        return _parse(_gather(flags, environ, ENV_VARS))


def config_path(flag: Path | None, environ: Mapping[str, str]) -> Path:
    """The route config a command works on: `--config`, else `ROUTERD_CONFIG`, else the
    default; the same rule for every command, `serve` included."""
    # Only the config's own variable: a command that needs no broker must not fail on
    # another setting's bad value (a mistyped ROUTERD_HTTP_ADDR is `serve`'s to report).
    only = {"config": ENV_VARS["config"]}
    return _parse(_gather({"config": flag}, environ, only)).config_path


def given(
    name: str,
    flags: Mapping[str, str | float | Path | None],
    environ: Mapping[str, str],
    variables: Mapping[str, str],
) -> tuple[str, str] | None:
    """One setting's text and where it came from: its flag over its variable (in
    `variables`); None when neither is given. Every routerd command reads settings so."""
    value = flags.get(name)
    if value is not None:
        return str(value), "option --" + name.replace("_", "-")
    var = variables.get(name)
    if var is not None and environ.get(var, "") != "":
        return environ[var], f"environment variable {var}"
    return None


def _gather(
    flags: Mapping[str, str | float | Path | None],
    environ: Mapping[str, str],
    variables: Mapping[str, str],
) -> dict[str, tuple[str, str]]:
    """Each setting's text and where it came from: a flag given over its variable."""
    for name in flags:
        if name not in ENV_VARS:
            raise KeyError(f"unknown setting {name!r}")
    raw: dict[str, tuple[str, str]] = {}
    for name in {**variables, **flags}:
        found = given(name, flags, environ, variables)
        if found is not None:
            raw[name] = found
    return raw


def env_help(name: str) -> str:
    """ "(env ROUTERD_X)" for a setting's help text: `--help` names every variable."""
    if name == "amqp_url":
        return f"(env {ENV_VARS[name]}, or the file named by {ENV_VARS['amqp_url_file']})"
    return f"(env {ENV_VARS[name]})"


def _parse(raw: Mapping[str, tuple[str, str]]) -> Settings:
    settings = Settings()
    changes: dict[str, Any] = {}
    if "config" in raw:
        value, _ = raw["config"]
        changes["config_path"] = Path(value)
    given = _amqp_url_given(raw)
    if given is not None:
        value, origin = given
        changes["amqp_url"], changes["amqp_url_from"] = _amqp_url(value, origin), origin
    if "http_addr" in raw:
        changes["http_host"], changes["http_port"] = host_port(*raw["http_addr"])
    if "log_format" in raw:
        value, origin = raw["log_format"]
        if value.lower() not in ("text", "json"):
            raise SettingsError("log format", origin, value, "use text or json")
        changes["log_format"] = cast(LogFormat, value.lower())
    if "log_level" in raw:
        value, origin = raw["log_level"]
        try:
            parse_level(value)
        except ValueError as exc:
            raise SettingsError("log level", origin, value, str(exc)) from None
        changes["log_level"] = value
    for name in ("shutdown_timeout", "publish_timeout", "reconnect_min", "reconnect_max"):
        if name in raw:
            changes[name] = _seconds(name.replace("_", " "), *raw[name])
    settings = replace(settings, **changes)
    if settings.reconnect_min > settings.reconnect_max:
        raise SettingsError(
            "reconnect min",
            "settings",
            str(settings.reconnect_min),
            f"must not exceed reconnect max ({settings.reconnect_max})",
        )
    return settings


def _amqp_url_given(raw: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The AMQP URL's text and origin: the flag, else the variable or the file it names."""
    url, from_file = raw.get("amqp_url"), raw.get("amqp_url_file")
    if url is not None and url[1].startswith("option"):
        return url
    if from_file is None:
        return url
    path, origin = from_file
    if url is not None:
        raise SettingsError(
            "AMQP URL file",
            origin,
            path,
            f"{ENV_VARS['amqp_url']} is set too; set only one of them",
        )
    try:
        # A secret file written by `echo` or kubectl ends with a newline that is no part
        # of the URL.
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise SettingsError(
            "AMQP URL file",
            origin,
            path,
            f"cannot read it ({why}): check the path and that this user may read it",
        ) from None
    if not text:
        raise SettingsError(
            "AMQP URL file", origin, path, "it is empty: write amqp://user:password@host/vhost"
        )
    return text, f"file {path} named by {origin}"


def _amqp_url(value: str, origin: str) -> str:
    """One broker URL, or several separated by commas (the nodes of a cluster)."""
    # Text without a scheme may be a bare password pasted into the wrong place: never echo it.
    shown = redact_urls(value) if "://" in value else f"({len(value)} characters, not a URL)"
    urls = split_urls(value)
    if not urls:
        raise SettingsError("AMQP URL", origin, shown, "use amqp://user:password@host:port/vhost")
    for position, url in enumerate(urls, 1):
        which = "AMQP URL" if len(urls) == 1 else f"AMQP URL #{position}"
        _one_amqp_url(url, origin, which)
    try:
        options = BrokerOptions.from_url(value)
    except BrokerOptionsError as exc:
        raise SettingsError("AMQP URL", origin, shown, str(exc)) from None
    # Checked at start, so that a mistyped path stops the process with its name rather
    # than failing every reconnect attempt.
    for key, path in options.tls_files.items():
        if not Path(path).is_file():
            raise SettingsError("AMQP URL", origin, shown, f"{key}={path}: no such file")
    try:
        # Files that exist but are no certificates would fail every connection attempt.
        options.ssl_context()
    except BrokerOptionsError as exc:
        raise SettingsError("AMQP URL", origin, shown, str(exc)) from None
    return value


def _one_amqp_url(value: str, origin: str, which: str) -> None:
    shown = redact_urls(value) if "://" in value else f"({len(value)} characters, not a URL)"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        # Not the parser's message: it quotes the text it choked on, the password perhaps.
        raise SettingsError(
            which,
            origin,
            shown,
            "it is not a valid URL; percent-encode the user and password (%40 for @, "
            "%2F for /, %3A for :)",
        ) from None
    if parts.scheme not in ("amqp", "amqps"):
        raise SettingsError(
            which,
            origin,
            shown,
            "use amqp://user:password@host:port/vhost or amqps://...; "
            "separate the URLs of a cluster's nodes with commas",
        )
    if not parts.hostname:
        raise SettingsError(which, origin, shown, "it names no host")
    if port == 0:
        raise SettingsError(which, origin, shown, "port 0 is not a broker port")
    try:
        BrokerOptions.from_url(value)
    except BrokerOptionsError as exc:
        raise SettingsError(which, origin, shown, str(exc)) from None


def host_port(
    value: str, origin: str, what: str = "HTTP address", port: int = 9464, need_host: bool = False
) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets; `:PORT` is every interface unless `need_host`)
    as (host, port), or SettingsError naming `what` with an example on `port`."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or (need_host and not host):
        raise SettingsError(what, origin, value, f"use HOST:PORT, e.g. 127.0.0.1:{port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise SettingsError(what, origin, value, f"write an IPv6 host in brackets: [::1]:{port}")
    number = int(port_text)
    if number > 65535:
        raise SettingsError(what, origin, value, "the port must be 0..65535")
    return host, number


def _seconds(name: str, value: str, origin: str) -> float:
    try:
        seconds = float(value.strip().removesuffix("s"))
    except ValueError:
        raise SettingsError(name, origin, value, "use a number of seconds, e.g. 30") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise SettingsError(name, origin, value, "must be a positive number of seconds")
    return seconds
