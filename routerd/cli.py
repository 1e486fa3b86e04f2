"""The `routerd` command: thin wrappers that parse arguments and call the package."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Validate, categorize and route email send requests between RabbitMQ queues.",
)
log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config/routes.yaml")


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="The route config.", envvar="ROUTERD_CONFIG"),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]


@app.command()
def lint(
    path: Annotated[Path, typer.Argument(help="The route config to check.")] = DEFAULT_CONFIG,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Check a route config and its schemas. Exit 0 clean, 1 problems, 2 unreadable."""
    from routerd.config.lint import run_lint

    raise typer.Exit(run_lint(path, output.value, sys.stdout))


@app.command()
def explain(
    message: Annotated[
        str, typer.Argument(help="A file holding one send request, or - for stdin.")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
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
    output: FormatOption = OutputFormat.text,
) -> None:
    """Show where one send request would go, and why: the schema, each validation error,
    each rule tried, and the decision.

    Exit 0 routed, 1 rejected, 2 the config, the request file or an option is broken.
    """
    from routerd.explain import run_explain

    raise typer.Exit(
        run_explain(config, message, header or [], output.value, sys.stdout, properties=prop or [])
    )


@app.command(name="test")
def route_test(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Route test files (default: the tests/ folder beside the config)."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Run the route tests that live beside the config (default: its tests/*.yaml).

    Exit 0 all passed, 1 some failed, 2 the config or a test file is broken.
    """
    from routerd.routetest import run_route_tests

    raise typer.Exit(run_route_tests(config, files or [], output.value, sys.stdout))


@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="The route config. (env ROUTERD_CONFIG)"),
    ] = None,
    amqp_url: Annotated[
        str | None,
        typer.Option(
            "--amqp-url",
            help="Broker URL, default amqp://guest:***@127.0.0.1:5672/ (env ROUTERD_AMQP_URL)",
            show_default=False,
        ),
    ] = None,
    http_addr: Annotated[
        str | None,
        typer.Option(
            "--http-addr",
            help="HOST:PORT for /metrics, /healthz, /readyz, default 127.0.0.1:9464 "
            "(env ROUTERD_HTTP_ADDR)",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="text or json, default text (env ROUTERD_LOG_FORMAT)"),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="debug, info, ... default info (env ROUTERD_LOG_LEVEL)"),
    ] = None,
    shutdown_timeout: Annotated[
        str | None,
        typer.Option(
            "--shutdown-timeout",
            help="Seconds to finish in-flight requests on SIGTERM, default 30 "
            "(env ROUTERD_SHUTDOWN_TIMEOUT)",
        ),
    ] = None,
) -> None:
    """Route send requests from the source queue until SIGTERM. SIGHUP reloads the config."""
    import os

    from routerd.daemon import EXIT_STARTUP
    from routerd.daemon import serve as run_daemon
    from routerd.settings import Settings, SettingsError

    flags = {
        "config": config,
        "amqp_url": amqp_url,
        "http_addr": http_addr,
        "log_format": log_format,
        "log_level": log_level,
        "shutdown_timeout": shutdown_timeout,
    }
    try:
        settings = Settings.from_sources(flags, os.environ)
    except SettingsError as exc:
        print(f"routerd serve: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_STARTUP) from None
    raise typer.Exit(run_daemon(settings))


def main() -> None:
    app()
