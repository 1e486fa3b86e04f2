"""Transactional latency during a bulk spike: one shared source queue vs two sources.

For each layout, on its own copy of the shipped config (unique queue names):

1. the topology is declared with routerd's own code (`Broker.declare_config`);
2. a backlog of bulk send requests (stream: broadcast, ~1 KB) is loaded into the catch-all
   source `email.send`, where publishers put bulk in both layouts;
3. `routerd serve` starts and drains it; meanwhile password-reset requests are
   published at a steady rate through `routerd.client.Publisher` (config=, so it picks
   the source as `routerd send` and the API do);
4. each one's latency is from just before its publish to its delivery from the
   transactional target queue to a consumer waiting there.

"one source" is the shipped config rewritten to its one-source form (only `email.send`, as
before issue 9): a password reset queues behind the whole backlog ahead of it. "two sources"
is the shipped config: it goes to `email.send.transactional`, which the daemon consumes on
a channel of its own. Prints figures side by side; asserts nothing; cleans up.

    .venv/bin/python scripts/bench_spike.py [--bulk 100000] [--rate 20] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiormq  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402

from routerd.client import Publisher  # noqa: E402
from tests.conftest import SHIPPED_CONFIG, SHIPPED_SCHEMAS, isolate_config  # noqa: E402
from tests.factories import encode, valid_v1  # noqa: E402
from tests.harness import Broker, start_daemon  # noqa: E402
from tests.harness.config import catch_all_source, keep_one_source, source_entries  # noqa: E402

DEFAULT_URL = os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POLL = 0.1


@dataclass
class Run:
    layout: str
    sources: list[str]
    latencies: list[float]  # seconds, one per transactional request that arrived
    sent: int
    backlog_left: int  # bulk requests still in the sources when the last one was sent
    drain_seconds: float | None  # from daemon start to an empty catch-all source

    def line(self) -> str:
        if not self.latencies:
            return f"{self.layout:<12} none of {self.sent} transactional requests arrived"
        ms = sorted(1000 * x for x in self.latencies)
        p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
        drain = (
            f"drained {self.drain_seconds:.1f} s after routerd started"
            if self.drain_seconds is not None
            else "not drained yet when the last arrived"
        )
        return (
            f"{self.layout:<12} p50 {statistics.median(ms):>8.1f} ms   p99 {p99:>8.1f} ms   "
            f"max {ms[-1]:>8.1f} ms   ({len(ms)}/{self.sent} arrived; bulk left in the "
            f"sources when the last was sent: {self.backlog_left}; backlog {drain})"
        )


def bulk_backlog(count: int) -> list[bytes]:
    return [
        encode(valid_v1(i, stream="broadcast", tags=["newsletter"], message_id=f"bulk-{i}"))
        for i in range(count)
    ]


def config_copy(workdir: Path, suffix: str, *, one_source: bool) -> Path:
    (workdir / "config").mkdir()
    shutil.copytree(SHIPPED_SCHEMAS, workdir / "schemas")
    data = isolate_config(yaml.safe_load(SHIPPED_CONFIG.read_text()), f"spike.{suffix}")
    path = workdir / "config" / "routes.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return keep_one_source(path) if one_source else path


async def arrivals(url: str, queue: str, seen: dict[str, float]) -> None:
    """Record when each request is delivered from the transactional target queue."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1000)

        async def on_message(message: Any) -> None:
            now = time.monotonic()
            seen.setdefault(orjson.loads(message.body)["message_id"], now)

        await channel.basic_consume(queue, on_message, no_ack=True)
        await asyncio.Event().wait()
    finally:
        await connection.close()


async def one_layout(args: argparse.Namespace, bodies: list[bytes], *, one_source: bool) -> Run:
    layout = "one source" if one_source else "two sources"
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-spike-") as tmp:
        config = config_copy(Path(tmp), suffix, one_source=one_source)
        data = yaml.safe_load(config.read_text())
        sources = [s["queue"] for s in source_entries(data)]
        bulk_source = catch_all_source(data)["queue"]
        target = data["targets"]["transactional"]["queues"][0]["name"]
        logs = Path(tmp) / "logs"
        async with Broker(args.amqp_url) as broker:
            await broker.declare_config(config)
            start = time.monotonic()
            await broker.publish(bulk_source, bodies, window=1000)
            print(
                f"  {layout}: loaded {len(bodies)} bulk requests into {bulk_source} in "
                f"{time.monotonic() - start:.1f} s",
                file=sys.stderr,
            )
            seen: dict[str, float] = {}
            consumer = asyncio.create_task(arrivals(args.amqp_url, target, seen))
            daemon = start_daemon(config, args.amqp_url, logs, name="spike")
            try:
                await daemon.wait_ready(60)
                started = time.monotonic()
                drained: list[float] = []
                watcher = asyncio.create_task(watch_drain(broker, bulk_source, started, drained))
                sent, left = await publish_transactional(args, config, seen)
                published = dict(sent)
                deadline = time.monotonic() + args.limit
                while len(seen.keys() & published.keys()) < len(published):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(POLL)
                watcher.cancel()
                await daemon.stop(60)
            finally:
                daemon.kill()
                consumer.cancel()
            latencies = [seen[m] - t for m, t in published.items() if m in seen]
            return Run(
                layout, sources, latencies, len(published), left, drained[0] if drained else None
            )


async def watch_drain(broker: Broker, queue: str, started: float, drained: list[float]) -> None:
    # The broker tells a queue's depth only when asked: polling is the only way here.
    while (await broker.depth(queue) or 0) > 0:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    drained.append(time.monotonic() - started)


async def publish_transactional(
    args: argparse.Namespace, config: Path, seen: dict[str, float]
) -> tuple[list[tuple[str, float]], int]:
    """Password resets at a steady rate, each through the client; (message_id, sent at)."""
    sent: list[tuple[str, float]] = []
    interval = 1 / args.rate
    count = int(args.rate * args.seconds)
    async with Publisher(args.amqp_url, config=config, app_id="bench-spike") as publisher:
        queues = [s.queue for s in publisher.table.sources] if publisher.table else []
        async with Broker(args.amqp_url) as broker:
            begin = time.monotonic()
            tasks = []
            for i in range(count):
                await asyncio.sleep(max(0.0, begin + i * interval - time.monotonic()))
                request = valid_v1(
                    10_000_000 + i,
                    recipients=1,
                    tags=["password-reset"],
                    message_id=f"reset-{uuid.uuid4().hex[:12]}",
                )
                request.pop("stream", None)
                sent.append((request["message_id"], time.monotonic()))
                # Not awaited in turn: a slow confirm must not hold back the next send.
                tasks.append(asyncio.create_task(publisher.send(request)))
            await asyncio.gather(*tasks)
            left = sum((await broker.depths(queues)).values())
    return sent, left


async def main(args: argparse.Namespace) -> None:
    bodies = bulk_backlog(args.bulk)
    mean = sum(map(len, bodies)) / len(bodies)
    print(
        f"bulk backlog {len(bodies)} requests (mean {mean:.0f} B) loaded before routerd starts; "
        f"{int(args.rate * args.seconds)} password resets at {args.rate:g}/s through "
        f"routerd.client while it drains; one routerd replica; {os.cpu_count()} CPUs"
    )
    runs = []
    for one_source in (True, False):
        run = await one_layout(args, bodies, one_source=one_source)
        runs.append(run)
        print(f"{'':<12} sources: {', '.join(run.sources)}", flush=True)
        print(run.line(), flush=True)
    print("\nlatency of a password reset from publish to the transactional target queue:")
    for run in runs:
        print(run.line())


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk", type=int, default=100_000, help="bulk backlog (100000)")
    parser.add_argument("--rate", type=float, default=20.0, help="password resets per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to send them")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds to wait at most")
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
