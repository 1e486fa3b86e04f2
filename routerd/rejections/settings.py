"""How `routerd rejections` runs: CLI flags over `ROUTERD_*` environment variables.

The route config (which names the rejected queue), the broker, logging and timeouts are
read exactly as `routerd serve` reads them (`routerd.settings`); the recorder adds the
database, the retention of rows and the batch size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from routerd.rejections.store import DEFAULT_DB
from routerd.rejections.writer import DEFAULT_BATCH_SIZE
from routerd.settings import ENV_VARS, Settings, SettingsError, given

# Beside serve's 9464, so that both run on one host with their defaults.
DEFAULT_HTTP_ADDR = "127.0.0.1:9465"
DEFAULT_RETENTION = timedelta(days=30)

REJECTIONS_ENV_VARS: Mapping[str, str] = {
    "db": "ROUTERD_REJECTIONS_DB",
    "retention": "ROUTERD_REJECTIONS_RETENTION",
    "batch_size": "ROUTERD_REJECTIONS_BATCH_SIZE",
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `24h`, `30d`, `2w`, or a number of seconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 15m, 24h, 30d or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def moment_of(text: str, now: datetime) -> datetime:
    """A duration back from `now` (`24h`) or an RFC 3339 time; ValueError saying both."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: give a duration back from now (90m, 24h, 7d) or a time "
            "(2026-01-31T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def database(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The database `--db` names, else `ROUTERD_REJECTIONS_DB`, else the SQLite file."""
    if flag:
        return flag
    return environ.get(REJECTIONS_ENV_VARS["db"], "") or DEFAULT_DB


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    # The route config, broker URL, HTTP address, timeouts and logging, as for serve.
    common: Settings
    db: str = DEFAULT_DB
    retention: timedelta = DEFAULT_RETENTION
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, str | Path | None],
        environ: Mapping[str, str] = os.environ,
    ) -> RecorderSettings:
        """Flags (None = not given) over variables. Keys: serve's settings plus db,
        retention, batch_size. Raises `SettingsError` for the first bad value."""
        shared = {k: v for k, v in flags.items() if k in ENV_VARS}
        if shared.get("http_addr") is None and not environ.get(ENV_VARS["http_addr"]):
            shared["http_addr"] = DEFAULT_HTTP_ADDR
        common = Settings.from_sources(shared, environ)
        retention = DEFAULT_RETENTION
        found = given("retention", flags, environ, REJECTIONS_ENV_VARS)
        if found is not None:
            try:
                retention = parse_duration(found[0])
            except ValueError as exc:
                raise SettingsError("retention", found[1], found[0], str(exc)) from None
        batch_size = DEFAULT_BATCH_SIZE
        found = given("batch_size", flags, environ, REJECTIONS_ENV_VARS)
        if found is not None:
            if not found[0].isdigit() or not 1 <= int(found[0]) <= 10_000:
                raise SettingsError("batch size", found[1], found[0], "use a number 1..10000")
            batch_size = int(found[0])
        db = flags.get("db")
        return cls(
            common=common,
            db=database(str(db) if db is not None else None, environ),
            retention=retention,
            batch_size=batch_size,
        )
