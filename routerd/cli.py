"""The `routerd` command: thin wrappers that parse arguments and call the package."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Validate, categorize and route email send requests between RabbitMQ queues.",
)
log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config/routes.yaml")


def main() -> None:
    app()
