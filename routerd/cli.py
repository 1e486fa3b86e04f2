"""The `routerd` command: thin wrappers that parse arguments and call the package.

Every command finds its route config the same way (`--config`, else `ROUTERD_CONFIG`, else
config/routes.yaml) through `routerd.settings`, the one place `ROUTERD_*` variables are
read; the ops tools share exit codes and output formats (`routerd.ops.common`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from routerd.ops.common import OutputFormat
from routerd.settings import env_help

SettingsT = TypeVar("SettingsT")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Validate, categorize and route email send requests between RabbitMQ queues.",
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"The route config, default config/routes.yaml {env_help('config')}.",
        show_default=False,
    ),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]


def _setting(help_text: str, name: str, flag: str) -> Any:
    # typer.Option's own return type is Any: it stands in for the default value.
    return typer.Option(flag, help=f"{help_text} {env_help(name)}", show_default=False)


# The long-running commands' (serve, api, rejections record) logging options.
LogFormatOption = Annotated[
    str | None, _setting("text or json, default text", "log_format", "--log-format")
]
LogLevelOption = Annotated[
    str | None, _setting("debug, info, ... default info", "log_level", "--log-level")
]
# The broker daemons' (serve, rejections record) reconnect ceiling.
ReconnectMaxOption = Annotated[
    str | None,
    _setting(
        "Seconds the reconnect backoff grows to, default 30", "reconnect_max", "--reconnect-max"
    ),
]


def _settings(
    command: str, from_sources: Callable[..., SettingsT], flags: dict[str, Any], startup: int
) -> SettingsT:
    """The command's settings from its flags over the environment; on a bad one, say which
    and exit with the command's `startup` status."""
    from routerd.settings import SettingsError

    try:
        return from_sources(flags, os.environ)
    except SettingsError as exc:
        print(f"routerd {command}: {exc}", file=sys.stderr)
        raise typer.Exit(startup) from None


def _version(value: bool) -> None:
    if value:
        print(f"routerd {version('routerd')}")
        raise typer.Exit()


@app.callback()
def main_options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Validate, categorize and route email send requests between RabbitMQ queues."""


def _config(flag: Path | None) -> Path:
    from routerd.settings import config_path

    return config_path(flag, os.environ)


@app.command()
def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Route configs to check (default: the --config one).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail (exit 1) on warnings too.")
    ] = False,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Check route configs and their schemas. Exit 0 clean, 1 problems, 2 unreadable."""
    from routerd.ops.lint import run_lint

    raise typer.Exit(run_lint(paths or [_config(config)], output, sys.stdout, strict=strict))


@app.command()
def send(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files of send requests (one JSON object, an array, or JSON lines); - for stdin.",
            show_default=False,
        ),
    ] = None,
    generate: Annotated[
        int | None,
        typer.Option("--generate", "-n", help="Send N synthetic v1 requests (docs/send.md)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --generate.")] = 0,
    invalid: Annotated[
        float, typer.Option("--invalid", help="Share of invalid requests in --generate.")
    ] = 0.05,
    rate: Annotated[
        float | None,
        typer.Option("--rate", "-r", help="Requests per second (default: as fast as it goes)."),
    ] = None,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", help="Publishes awaiting their confirm at once.")
    ] = 64,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Refuse what routerd would reject, as the public API does, instead of "
            "publishing it (invalid requests then never reach routerd).",
        ),
    ] = False,
    config: ConfigOption = None,
    amqp_url: Annotated[
        str | None,
        _setting("Broker URL, default amqp://guest:***@127.0.0.1:5672/", "amqp_url", "--amqp-url"),
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="Seconds to wait for the broker.")
    ] = 10.0,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Publish send requests to routerd's source queue: a load generator.

    Exit 0 all confirmed, 1 any refused or failed, 2 the usage, the config or the input is
    broken.
    """
    from routerd.ops.send import SendRequest, send_command

    asked = SendRequest(
        files=tuple(files or ()),
        generate=generate,
        seed=seed,
        invalid=invalid,
        config=config,
        amqp_url=amqp_url,
        check=check,
        rate=rate,
        max_in_flight=max_in_flight,
        connect_timeout=connect_timeout,
    )
    raise typer.Exit(send_command(asked, output, sys.stdout, sys.stderr, os.environ))


@app.command()
def explain(
    message: Annotated[
        str, typer.Argument(help="A file holding one send request, or - for stdin.")
    ],
    config: ConfigOption = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="An AMQP header NAME=VALUE (text) or NAME:=JSON (typed), repeatable.",
        ),
    ] = None,
    prop: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            "-P",
            help="An AMQP property NAME=VALUE, repeatable; content_type defaults to "
            "application/json, an empty value removes it.",
        ),
    ] = None,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Show where one send request would go, and why: the schema, each validation error,
    each rule tried with the values it saw, and the decision.

    Exit 0 routed, 1 rejected, 2 the config, the request file or an option is broken.
    """
    from routerd.ops.explain import run_explain

    raise typer.Exit(
        run_explain(
            _config(config), message, header or [], output, sys.stdout, properties=prop or []
        )
    )


@app.command(name="test")
def route_test(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Route test files (default: the tests/ folder beside the config)."),
    ] = None,
    config: ConfigOption = None,
    coverage: Annotated[
        bool,
        typer.Option("--coverage", help="Also list the rules and targets no route test reaches."),
    ] = False,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Run the route tests that live beside the config (default: its tests/*.yaml).

    Exit 0 all passed, 1 some failed, 2 the config or a test file is broken.
    """
    from routerd.ops.routetest import run_route_tests

    raise typer.Exit(
        run_route_tests(_config(config), files or [], output, sys.stdout, coverage=coverage)
    )


@app.command()
def api(
    config: ConfigOption = None,
    amqp_url: Annotated[
        str | None,
        typer.Option(
            "--amqp-url",
            help="Broker URL, as for serve, default amqp://guest:***@127.0.0.1:5672/ "
            f"{env_help('amqp_url')}.",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="HOST:PORT to answer HTTP on, default 127.0.0.1:8080 (env ROUTERD_API_ADDR).",
            show_default=False,
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="The customers' API keys file: customer id -> list of sha256 hex of each key "
            "(env ROUTERD_API_KEYS).",
            show_default=False,
        ),
    ] = None,
    rejections_db: Annotated[
        str | None,
        typer.Option(
            "--rejections-db",
            help="The rejections recorder's database, for GET /v1/rejections "
            "(env ROUTERD_REJECTIONS_DB); without it that endpoint answers 404.",
            show_default=False,
        ),
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            "--max-in-flight",
            help="Sends whose bodies are read and published at once; more wait their turn "
            "before their body is read, default 32 (env ROUTERD_API_MAX_IN_FLIGHT).",
            show_default=False,
        ),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run the reference public API (POST /v1/send) until SIGTERM; needs the api extra.

    Exit 0 after a graceful stop, 2 when the settings, the keys file or the config (as
    `routerd lint` reports it) stop it from starting. docs/api.md says more.
    """
    from routerd.api.server import ApiExit, run
    from routerd.api.settings import ApiSettings

    flags = {
        "config": config,
        "amqp_url": amqp_url,
        "listen": listen,
        "keys": keys,
        "rejections_db": rejections_db,
        "max_in_flight": max_in_flight,
        "log_format": log_format,
        "log_level": log_level,
    }
    raise typer.Exit(run(_settings("api", ApiSettings.from_sources, flags, ApiExit.STARTUP)))


@app.command()
def serve(
    config: ConfigOption = None,
    amqp_url: Annotated[
        str | None,
        _setting(
            "Broker URL, default amqp://guest:***@127.0.0.1:5672/; query keys heartbeat, "
            "timeout, name, and with amqps:// cafile, certfile, keyfile, verify_hostname; "
            "for a cluster, one URL per node separated by commas",
            "amqp_url",
            "--amqp-url",
        ),
    ] = None,
    http_addr: Annotated[
        str | None,
        _setting(
            "HOST:PORT for /metrics, /healthz, /readyz, default 127.0.0.1:9464",
            "http_addr",
            "--http-addr",
        ),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
    shutdown_timeout: Annotated[
        str | None,
        _setting(
            "Seconds to finish in-flight requests on SIGTERM, default 30",
            "shutdown_timeout",
            "--shutdown-timeout",
        ),
    ] = None,
    publish_timeout: Annotated[
        str | None,
        _setting(
            "Seconds to wait for the broker to confirm a publish, default 10",
            "publish_timeout",
            "--publish-timeout",
        ),
    ] = None,
    reconnect_min: Annotated[
        str | None,
        _setting(
            "Seconds of the first reconnect backoff, default 0.5",
            "reconnect_min",
            "--reconnect-min",
        ),
    ] = None,
    reconnect_max: ReconnectMaxOption = None,
) -> None:
    """Route send requests from the source queue until SIGTERM. SIGHUP reloads the config.

    Exit 0 after a graceful stop, 1 when a second signal forced it, 2 when the settings or
    the config (as `routerd lint` reports it) stop it from starting.
    """
    from routerd.daemon import ServeExit
    from routerd.daemon import serve as run_daemon
    from routerd.settings import Settings

    flags = {
        "config": config,
        "amqp_url": amqp_url,
        "http_addr": http_addr,
        "log_format": log_format,
        "log_level": log_level,
        "shutdown_timeout": shutdown_timeout,
        "publish_timeout": publish_timeout,
        "reconnect_min": reconnect_min,
        "reconnect_max": reconnect_max,
    }
    settings = _settings("serve", Settings.from_sources, flags, ServeExit.STARTUP)
    raise typer.Exit(run_daemon(settings))


rejections_app = typer.Typer(
    no_args_is_help=True,
    help="Rejected send requests kept in a database: record them, list them (docs/rejections.md).",
)
app.add_typer(rejections_app, name="rejections")
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="The rejections database: a file path or sqlite:///FILE (default "
        "rejections.sqlite3), or postgresql://USER:PASSWORD@HOST:PORT/DB "
        "(env ROUTERD_REJECTIONS_DB).",
        show_default=False,
    ),
]


@rejections_app.command("record")
def rejections_record(
    config: ConfigOption = None,
    db: DbOption = None,
    amqp_url: Annotated[
        str | None, _setting("Broker URL, as for serve", "amqp_url", "--amqp-url")
    ] = None,
    http_addr: Annotated[
        str | None,
        _setting(
            "HOST:PORT for /metrics, /healthz, /readyz, default 127.0.0.1:9465",
            "http_addr",
            "--http-addr",
        ),
    ] = None,
    retention: Annotated[
        str | None,
        typer.Option(
            "--retention",
            help="Delete rows older than this (15m, 24h, 30d), default 30d "
            "(env ROUTERD_REJECTIONS_RETENTION).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            "--batch-size",
            help="Rows per insert at most, default 256 (env ROUTERD_REJECTIONS_BATCH_SIZE).",
            show_default=False,
        ),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
    shutdown_timeout: Annotated[
        str | None,
        _setting(
            "Seconds to finish rows in flight on SIGTERM, default 30",
            "shutdown_timeout",
            "--shutdown-timeout",
        ),
    ] = None,
    reconnect_min: Annotated[
        str | None,
        _setting(
            "Seconds of the first reconnect backoff (broker and database), default 0.5",
            "reconnect_min",
            "--reconnect-min",
        ),
    ] = None,
    reconnect_max: ReconnectMaxOption = None,
) -> None:
    """Consume the rejected queue and keep each rejection in the database until SIGTERM.

    Each delivery is acked only once its row is committed. Exit 0 after a graceful stop,
    1 when a second signal forced it, 2 when the settings, the config or the database URL
    stop it from starting.
    """
    from routerd.rejections.recorder import RecorderExit, record
    from routerd.rejections.settings import RecorderSettings

    flags = {
        "config": config,
        "db": db,
        "amqp_url": amqp_url,
        "http_addr": http_addr,
        "retention": retention,
        "batch_size": batch_size,
        "log_format": log_format,
        "log_level": log_level,
        "shutdown_timeout": shutdown_timeout,
        "reconnect_min": reconnect_min,
        "reconnect_max": reconnect_max,
    }
    settings = _settings(
        "rejections record", RecorderSettings.from_sources, flags, RecorderExit.STARTUP
    )
    raise typer.Exit(record(settings))


@rejections_app.command("list")
def rejections_list(
    db: DbOption = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only this customer's.", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only those recorded since: a duration back (90m, 24h, 7d) or a time "
            "(2026-01-31T12:00:00Z).",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Only those with this reason code (any of their reasons).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 50,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """List recorded rejections, newest first, as a table or --format json.

    Exit 0 once the query ran (found or not), 2 when an option or the database must be
    fixed first.
    """
    import anyio

    from routerd.rejections.listing import ListRequest, list_rejections
    from routerd.rejections.settings import database

    asked = ListRequest(
        db=database(db, os.environ), customer=customer, since=since, reason=reason, limit=limit
    )
    code = anyio.run(list_rejections, asked, output, sys.stdout, sys.stderr, backend="asyncio")
    raise typer.Exit(code)


def main() -> None:
    app()
