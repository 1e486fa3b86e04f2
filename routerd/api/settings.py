"""How one `routerd api` process runs: CLI flags over `ROUTERD_*` environment variables.

The route config and the broker are found exactly as `routerd serve` finds them
(`routerd.settings`); the API adds where it listens and where the customers' keys are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from routerd.settings import Settings, SettingsError, given, host_port

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 8080
# Sends whose bodies are read and published at once. 64 clients sending bodies at the
# shipped 1 MiB limit peaked at 181 MiB RSS with 32, 390 MiB without a bound
# (scripts/bench_api.py --concurrency 64); small sends hold a place for milliseconds (a body
# read and a confirm), so they rarely wait.
DEFAULT_MAX_IN_FLIGHT = 32

# The API's own settings -> environment variable; the shared ones are routerd.settings'.
API_ENV_VARS: Mapping[str, str] = {
    "listen": "ROUTERD_API_ADDR",
    "keys": "ROUTERD_API_KEYS",
    # The same variable as the recorder's: the API reads the database it writes.
    "rejections_db": "ROUTERD_REJECTIONS_DB",
    "max_in_flight": "ROUTERD_API_MAX_IN_FLIGHT",
}


@dataclass(frozen=True, slots=True)
class ApiSettings:
    # The route config, broker URL, timeouts and logging, as `routerd serve` reads them.
    common: Settings
    keys_path: Path
    listen_host: str = DEFAULT_LISTEN_HOST
    listen_port: int = DEFAULT_LISTEN_PORT
    # The rejections database `GET /v1/rejections` reads; None: the endpoint answers 404.
    rejections_db: str | None = None
    # Sends at once between reading the body and the broker's confirm; more wait their turn
    # before a byte of their body is read.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @property
    def listen_addr(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, str | Path | None],
        environ: Mapping[str, str] = os.environ,
    ) -> ApiSettings:
        """Build settings from CLI flags (None = not given) over environment variables.

        Keys of `flags`: config, amqp_url, log_format, log_level (as `serve`), listen, keys,
        rejections_db, max_in_flight. Raises `SettingsError` for the first bad or missing value.
        """
        shared = ("config", "amqp_url", "log_format", "log_level")
        common = Settings.from_sources({name: flags.get(name) for name in shared}, environ)
        listen = given("listen", flags, environ, API_ENV_VARS)
        host, port = DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT
        if listen is not None:
            host, port = host_port(*listen, what="listen address", port=8080, need_host=True)
        keys = given("keys", flags, environ, API_ENV_VARS)
        if keys is None:
            raise SettingsError(
                "API keys file",
                "settings",
                "",
                f"give --keys FILE or {API_ENV_VARS['keys']} (docs/api.md: the keys file)",
            )
        rejections_db = given("rejections_db", flags, environ, API_ENV_VARS)
        max_in_flight = DEFAULT_MAX_IN_FLIGHT
        if (found := given("max_in_flight", flags, environ, API_ENV_VARS)) is not None:
            max_in_flight = _max_in_flight(*found)
        return cls(
            common=common,
            keys_path=Path(keys[0]),
            listen_host=host,
            listen_port=port,
            rejections_db=rejections_db[0] if rejections_db else None,
            max_in_flight=max_in_flight,
        )


def _max_in_flight(value: str, origin: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(
            "sends in flight",
            origin,
            value,
            f"use a whole number of 1 or more, e.g. {DEFAULT_MAX_IN_FLIGHT}",
        )
    return int(text)
