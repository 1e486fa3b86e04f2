"""The consumer against the real broker, each delivery handled on the channel's reader and
settled from its confirm's callback: acks leave in delivery order and in runs, and a
channel that dies halfway through a batch loses nothing and leaves no count behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiormq
import pytest
from aiormq.abc import AbstractConnection
from aiormq.channel import Channel

from routerd.amqp.acker import Action
from routerd.amqp.consumer import Consumer
from routerd.amqp.publisher import Publisher
from routerd.amqp.topology import declare_topology
from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.delivery import RequestHandler
from routerd.observe.metrics import Metrics
from tests.factories import mixed
from tests.harness.accounting import QueueNames
from tests.harness.broker import Broker, Outgoing
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

PREFETCH = 64


@dataclass
class Tables:
    table: RouteTable


@dataclass
class Session:
    connection: AbstractConnection
    publisher: Publisher
    consumer: Consumer
    metrics: Metrics
    # Every ack or requeue frame the acker sent, in order.
    sent: list[Action]


async def wait_acked(s: Session, count: int, what: str) -> None:
    async def probe() -> float:
        return s.metrics.acked.value

    await wait_for(probe, lambda n: n >= count, within=60, what=what, interval=0.02)


@asynccontextmanager
async def session(
    broker: Broker, amqp_url: str, config: Path, names: QueueNames, backlog: list[Outgoing]
) -> AsyncIterator[Session]:
    """The consumer of the source and its publisher, consuming `backlog` (queued first)."""
    table = load(config)
    await broker.declare_config(config)
    await broker.publish(names.source, backlog)
    async with aiormq.connect(amqp_url) as connection:
        await declare_topology(connection, table)
        publisher = await Publisher.open(connection, 10.0)
        handler = RequestHandler(
            Tables(table), publisher.publish, start=publisher.start, source=names.source
        )
        channel = await connection.channel(publisher_confirms=False)
        assert isinstance(channel, Channel)
        metrics = Metrics()
        consumer = Consumer(channel, names.source, PREFETCH, handler, metrics)
        sent: list[Action] = []
        on_sent = consumer._on_sent

        def record(action: Action) -> None:
            sent.append(action)
            on_sent(action)

        consumer.acker._on_sent = record
        acker = asyncio.create_task(consumer.acker.run())
        try:
            await consumer.start()
            yield Session(connection, publisher, consumer, metrics, sent)
        finally:
            acker.cancel()
            await asyncio.wait({acker})


def numbered(count: int) -> list[Outgoing]:
    # The sequence number in the message_id: each request is told apart downstream.
    return [
        Outgoing(body, None, {"message_id": f"seq-{i}"})
        for i, (_, body) in enumerate(mixed(count, seed=7))
    ]


def seqs(received: list[object]) -> list[str]:
    return [r.properties["message_id"] for r in received]  # type: ignore[attr-defined]


async def test_acks_leave_in_delivery_order_in_runs_and_every_request_is_routed_once(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str
) -> None:
    count = 600
    async with session(broker, amqp_url, isolated_config, names, numbered(count)) as s:
        await wait_acked(s, count, f"all {count} acked")
        await s.consumer.acker.wait_idle()
    tags: list[int] = []
    for action in s.sent:
        tags += list(range(action.tag - action.count + 1, action.tag + 1))
    assert tags == list(range(1, count + 1)), "every tag acked once, in delivery order"
    assert all(a.multiple == (a.count > 1) for a in s.sent)
    runs = max(a.count for a in s.sent)
    assert runs > 1, "confirms that arrive together are acked with one multiple=True ack"
    assert s.metrics.in_flight.value == 0 and s.metrics.in_flight_bytes.value == 0
    routed = [r for q in names.targets for r in await broker.drain(q)]
    assert sorted(seqs(routed)) == sorted(f"seq-{i}" for i in range(count))
    assert await broker.depth(names.source) == 0


async def test_a_publisher_channel_dying_halfway_through_a_batch_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str
) -> None:
    count = 2000
    async with session(broker, amqp_url, isolated_config, names, numbered(count)) as s:
        await wait_acked(s, PREFETCH, "routing under way")
        # Confirms pending: they fail with the close, and their deliveries are left alone.
        await s.publisher.channel.close()
        held = s.consumer.in_flight
        await s.consumer.channel.close()
        s.consumer.abandon()
        assert s.metrics.in_flight.value == 0
        assert s.metrics.in_flight_bytes.value == 0, "no body counted after the channel died"
        acked = s.metrics.acked.value
    assert 0 < acked < count and held > 0
    routed = [r for q in names.targets for r in await broker.drain(q)]
    back = await broker.drain(names.source)
    every = {f"seq-{i}" for i in range(count)}
    assert set(seqs(routed)) | set(seqs(back)) == every, "nothing lost"
    assert len(set(seqs(routed))) == len(routed), "no request routed twice"


async def test_bodies_over_several_frames_arrive_whole(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str
) -> None:
    # frame_max is 128 KiB: these take 1, 2 and 8 body frames, the last one partly filled.
    bodies = [b"a" * 1000, b"b" * 131_072, b"c" * 1_000_000]
    backlog = [Outgoing(body) for body in bodies]
    async with session(broker, amqp_url, isolated_config, names, backlog) as s:
        await wait_acked(s, len(bodies), "all acked")
    rejected = await broker.drain(names.rejected)
    assert sorted(r.body for r in rejected) == bodies, "not JSON: rejected, each body whole"
