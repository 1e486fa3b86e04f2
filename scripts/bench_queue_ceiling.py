"""Roughly what one quorum queue of this broker takes and gives, against the same load
spread over several queues (shards).

For 1, then `--shards` queues: `--publishers` connections publish `--count` ~1 KB
persistent messages in all, with confirms (`--window` unconfirmed each), spread round-robin
over the queues; then as many consumers (prefetch 500, acks batched with multiple=True)
drain them. Prints publish and drain msg/s for each layout; asserts nothing; deletes its
queues. No routerd is involved: this is the broker's side of the capacity arithmetic in
docs/SCALING.md.

    .venv/bin/python scripts/bench_queue_ceiling.py [--count 60000] [--shards 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

import aiormq
from pamqp.commands import Basic

DEFAULT_URL = os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY = b"x" * 1024


async def publish(url: str, queues: list[str], count: int, window: int) -> None:
    connection = await aiormq.connect(url)
    try:
        channel: Any = await connection.channel(publisher_confirms=True)
        properties = Basic.Properties(delivery_mode=2)
        pending: set[asyncio.Future[Any]] = set()
        for i in range(count):
            confirm = asyncio.ensure_future(
                channel.basic_publish(
                    BODY, routing_key=queues[i % len(queues)], properties=properties, wait=False
                )
            )
            pending.add(confirm)
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                confirmed(done)
        confirmed(await asyncio.gather(*pending))
    finally:
        await connection.close()


def confirmed(frames: Iterable[Any]) -> None:
    for frame in frames:
        result = frame.result() if isinstance(frame, asyncio.Future) else frame
        if not isinstance(result, Basic.Ack):
            raise SystemExit(f"a publish was not confirmed: {result!r}")


async def drain(url: str, queue: str, count: int) -> None:
    connection = await aiormq.connect(url)
    try:
        channel: Any = await connection.channel()
        await channel.basic_qos(prefetch_count=500)
        got = 0
        finished = asyncio.Event()

        async def on_message(message: Any) -> None:
            nonlocal got
            got += 1
            if got % 100 == 0 or got == count:
                await channel.basic_ack(message.delivery.delivery_tag, multiple=True)
            if got >= count:
                finished.set()

        await channel.basic_consume(queue, on_message)
        await finished.wait()
    finally:
        await connection.close()


async def layout(args: argparse.Namespace, shards: int) -> tuple[float, float]:
    suffix = uuid.uuid4().hex[:8]
    queues = [f"bench.ceiling.{suffix}.{i}" for i in range(shards)]
    connection = await aiormq.connect(args.amqp_url)
    channel = await connection.channel()
    for queue in queues:
        await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        each = args.count // args.publishers
        total = each * args.publishers
        start = time.monotonic()
        await asyncio.gather(
            *(publish(args.amqp_url, queues, each, args.window) for _ in range(args.publishers))
        )
        published = total / (time.monotonic() - start)
        # One consumer per queue: each drains what the round-robin put there.
        per_queue = [args.publishers * len(range(q, each, shards)) for q in range(shards)]
        start = time.monotonic()
        await asyncio.gather(
            *(drain(args.amqp_url, queue, n) for queue, n in zip(queues, per_queue, strict=True))
        )
        drained = total / (time.monotonic() - start)
        return published, drained
    finally:
        for queue in queues:
            await channel.queue_delete(queue)
        await connection.close()


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.count} persistent 1 KB messages, {args.publishers} publishers with confirms "
        f"(window {args.window}), quorum queues, {os.cpu_count()} CPUs, {args.amqp_url}"
    )
    for shards in (1, args.shards):
        published, drained = await layout(args, shards)
        print(
            f"{shards} queue{'s' if shards > 1 else ' '}   publish {published:>7.0f} msg/s   "
            f"drain {drained:>7.0f} msg/s",
            flush=True,
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
