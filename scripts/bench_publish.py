"""CPU per confirmed publish: routerd's confirm window beside aiormq's `basic_publish`.

    .venv/bin/python scripts/bench_publish.py [--count 20000] [--in-flight 256] [--rounds 3]
                                              [--json PATH]

Both publish the same decisions (~1 KB, persistent, mandatory) through `Publisher` into one
quorum queue, `--in-flight` at a time as the daemon does with its prefetch, in interleaved
rounds in this one process. CPU is this process's own (user + system), so a busy machine
moves it less than the wall-clock rate; both are printed. Asserts nothing. `--json PATH`
also writes every round's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import aiormq  # noqa: E402
from aiormq.channel import Channel  # noqa: E402
from bench_serve import write_json  # noqa: E402

from routerd.amqp.publisher import Publisher  # noqa: E402
from routerd.config.loader import load  # noqa: E402
from routerd.pipeline.decide import decide  # noqa: E402
from routerd.pipeline.envelope import Decision, Envelope  # noqa: E402
from tests.factories import encode, valid_v1  # noqa: E402

DEFAULT_URL = os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def decisions(queue: str, count: int) -> list[Decision]:
    table = load(ROOT / "config" / "routes.yaml")
    made = []
    for i in range(count):
        envelope = Envelope(encode(valid_v1(i)), {}, {"message_id": f"m-{i}"})
        decision = decide(table, envelope)
        # To the test queue through the default exchange.
        target = replace(decision.target, exchange="")
        made.append(replace(decision, target=target, routing_key=queue))
    return made


async def run(publisher: Publisher, batch: list[Decision], in_flight: int) -> tuple[float, float]:
    """Wall and CPU seconds to publish `batch`, `in_flight` at a time."""
    queue: asyncio.Queue[Decision] = asyncio.Queue()
    for decision in batch:
        queue.put_nowait(decision)

    async def worker() -> None:
        while not queue.empty():
            await publisher.publish(queue.get_nowait())

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def main(args: argparse.Namespace) -> None:
    queue = f"bench.publish.{uuid.uuid4().hex[:8]}"
    batch = decisions(queue, args.count)
    connection = await aiormq.connect(args.amqp_url)
    setup = await connection.channel()
    await setup.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    figures: dict[str, list[tuple[float, float]]] = {}
    try:
        for round_ in range(args.rounds):
            kinds = ["aiormq basic_publish", "confirm window"]
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                if kind == "confirm window":
                    publisher = await Publisher.open(connection, 30.0)
                else:
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    assert isinstance(channel, Channel)
                    publisher = Publisher(channel, 30.0)
                figures.setdefault(kind, []).append(await run(publisher, batch, args.in_flight))
                await publisher.channel.close()
                await setup.queue_purge(queue)
    finally:
        await setup.queue_delete(queue)
        await connection.close()
    print(
        f"{args.count} confirmed publishes of ~{len(batch[0].body)} B into a quorum queue, "
        f"{args.in_flight} in flight; {args.rounds} interleaved rounds, min/median/max"
    )
    medians = {}
    for kind, runs in figures.items():
        cpu_us = [1e6 * cpu / args.count for _, cpu in runs]
        rates = [args.count / wall for wall, _ in runs]
        medians[kind] = statistics.median(cpu_us)
        print(
            f"  {kind:22} CPU µs/publish {min(cpu_us):6.1f} {statistics.median(cpu_us):6.1f} "
            f"{max(cpu_us):6.1f}   rate/s {min(rates):6.0f} {statistics.median(rates):6.0f} "
            f"{max(rates):6.0f}"
        )
    ratio = medians["confirm window"] / medians["aiormq basic_publish"]
    print(f"  CPU per publish, window / basic_publish: {ratio:.2f}")
    if args.json is not None:
        write_json(
            args.json,
            {
                "count": args.count,
                "in_flight": args.in_flight,
                "body_bytes": len(batch[0].body),
                "kinds": {
                    kind: [
                        {
                            "wall_seconds": wall,
                            "cpu_seconds": cpu,
                            "cpu_us_per_publish": 1e6 * cpu / args.count,
                            "rate": args.count / wall,
                        }
                        for wall, cpu in runs
                    ]
                    for kind, runs in figures.items()
                },
            },
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--json", type=Path, default=None, help="also write every round here")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
