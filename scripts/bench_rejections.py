#!/usr/bin/env python3
"""How fast `routerd rejections record` empties a rejected queue, side by side: SQLite and
PostgreSQL, batched inserts and one row per transaction.

    .venv/bin/python scripts/bench_rejections.py [--count 5000]

Each run: a fresh database (a file, or `rej_bench_<uuid>` on the PostgreSQL server at
127.0.0.1:5432), a rejected queue of its own filled with N rejections as `routerd serve`
publishes them (headers x-rejected-reason/x-rejected-reasons, 1 KB JSON bodies), then a
recorder subprocess; the figure is rows committed per second from its start to the last
row. Compare ratios within one run: machines of this kind differ by up to 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiormq
import asyncpg
import yaml
from pamqp.commands import Basic

from routerd.rejections.store import RejectionStore

ROOT = Path(__file__).resolve().parent.parent
ROUTERD = ROOT / ".venv" / "bin" / "routerd"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    # `source:` (one) or `sources:` (several; the shipped config has two).
    return list(data["sources"]) if "sources" in data else [data["source"]]


def isolated_config(folder: Path, suffix: str) -> tuple[Path, str, str, str]:
    """A copy of the shipped config whose queue and exchange names end in `suffix`."""
    shutil.copytree(ROOT / "schemas", folder / "schemas")
    (folder / "config").mkdir()
    data = yaml.safe_load((ROOT / "config" / "routes.yaml").read_text())
    for source in _sources(data):
        source["queue"] += f".{suffix}"
    for target in [*data["targets"].values(), data["rejected"]]:
        target["exchange"] += f".{suffix}"
        for queue in target.get("queues", []):
            queue["name"] += f".{suffix}"
    path = folder / "config" / "routes.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rejected = data["rejected"]
    return path, rejected["exchange"], rejected["routing_key"], rejected["queues"][0]["name"]


def rejection(i: int, tag: str) -> tuple[bytes, dict[str, Any]]:
    body = {
        "schema_version": 1,
        "message_id": f"{tag}-{i}",
        "customer_id": f"cus-{i % 97}",
        "from": {"email": "noreply@shop.example"},
        "to": [{"email": f"user{n}@example.org"} for n in range(20)],
        "subject": "x" * 200,
    }
    reasons = [
        {"code": "schema_violation", "message": "'text' is a required property", "pointer": ""},
    ]
    headers = {"x-rejected-reason": "schema_violation", "x-rejected-reasons": reasons}
    return json.dumps(body).encode(), headers


async def fill(exchange: str, key: str, queue: str, count: int, tag: str) -> None:
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    await channel.queue_bind(queue, exchange, routing_key=key)
    for start in range(0, count, 500):
        sends = []
        for i in range(start, min(start + 500, count)):
            body, headers = rejection(i, tag)
            props = Basic.Properties(delivery_mode=2, message_id=f"{tag}-{i}", headers=headers)
            sends.append(channel.basic_publish(body, exchange=exchange, routing_key=key,
                                               properties=props))  # fmt: skip
        await asyncio.gather(*sends)
    await connection.close()


async def cleanup(data: dict[str, Any]) -> None:
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    queues = {source["queue"] for source in _sources(data)}
    exchanges = set()
    for target in [*data["targets"].values(), data["rejected"]]:
        exchanges.add(target["exchange"])
        queues.update(q["name"] for q in target.get("queues", []))
    for queue in queues:
        await channel.queue_delete(queue)
    for exchange in exchanges:
        await channel.exchange_delete(exchange)
    await connection.close()


async def rows(store: RejectionStore) -> int:
    try:
        return await store.count()
    except Exception:
        return 0  # the recorder has not created the table yet


async def one_run(kind: str, batch: int, count: int, folder: Path) -> float:
    tag = uuid.uuid4().hex[:8]
    config, exchange, key, queue = isolated_config(folder / tag, tag)
    database = f"rej_bench_{tag}"
    if kind == "sqlite":
        db = f"sqlite:///{folder / tag / 'rejections.sqlite3'}"
    else:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{database}"')
        await admin.close()
        db = f"postgresql://postgres@127.0.0.1:5432/{database}"
    recorder: asyncio.subprocess.Process | None = None
    try:
        await fill(exchange, key, queue, count, tag)
        recorder = await asyncio.create_subprocess_exec(
            str(ROUTERD), "rejections", "record", "--config", str(config), "--db", db,
            "--batch-size", str(batch), "--http-addr", "127.0.0.1:0", "--log-level", "warning",
            cwd=ROOT,
        )  # fmt: skip
        # From the first commit seen to the last: the process's start (imports, connect,
        # migrate) is a fixed cost, not a rate.
        first: tuple[float, int] | None = None
        # One connection for every poll: a new PostgreSQL connection forks a backend.
        store = RejectionStore.open(db)
        while (done := await rows(store)) < count:
            if recorder.returncode is not None:
                raise SystemExit(f"the recorder exited with {recorder.returncode}")
            if first is None and done:
                first = (time.perf_counter(), done)
            await asyncio.sleep(0.02)
        await store.close()
        if first is None:
            raise SystemExit("every row arrived between two polls: give a larger --count")
        return (count - first[1]) / (time.perf_counter() - first[0])
    finally:
        if recorder is not None:
            recorder.terminate()
            await asyncio.wait_for(recorder.wait(), 30)
        await cleanup(yaml.safe_load(config.read_text()))
        if kind == "postgresql":
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=5000, help="rejections per run")
    count = parser.parse_args().count
    print(f"{count} rejections per run; rows/s from the recorder's first commit to its last")
    print(f"{'database':<12} {'batch size':>10} {'rows/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgresql"):
            for batch in (256, 1):
                rate = await one_run(kind, batch, count, Path(tmp))
                print(f"{kind:<12} {batch:>10} {rate:>9,.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
