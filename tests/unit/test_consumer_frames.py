"""A delivery taken off the connection's reader: assembled from its frames, handled at once,
and never ahead of frames already queued for the channel."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from routerd.amqp.consumer import Consumer
from routerd.delivery.handler import Settle, Spawn
from routerd.delivery.outcome import Delivery
from routerd.observe.metrics import Metrics

pytestmark = pytest.mark.anyio


class Channel:
    """What the consumer uses of an aiormq channel, its frame queue the real one."""

    number = 1
    is_closed = False

    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Seen:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def begin(self, delivery: Delivery, settle: Settle, spawn: Spawn) -> None:
        self.bodies.append(delivery.envelope.body)


def consumer() -> tuple[Consumer, Channel, Seen]:
    channel, seen = Channel(), Seen()
    made = Consumer(cast(Any, channel), "q", 10, seen, Metrics())
    # What start() does, without a broker to consume from.
    made._queue_put = channel.frames.put
    return made, channel, seen


def deliver(made: Consumer, tag: int) -> Basic.Deliver:
    return Basic.Deliver(consumer_tag=made._tag, delivery_tag=tag, routing_key="q")


def header(size: int) -> ContentHeader:
    return ContentHeader(0, size, Basic.Properties(message_id="m"))


async def test_a_delivery_is_assembled_from_its_frames_and_handled_at_once() -> None:
    made, channel, seen = consumer()
    frames = [deliver(made, 1), header(5), ContentBody(b"ab"), ContentBody(b"cde")]
    frames += [deliver(made, 2), header(0), deliver(made, 3), header(1), ContentBody(b"z")]
    for frame in frames:
        await made._put_frame((0, frame))
    assert seen.bodies == [b"abcde", b"", b"z"]
    assert channel.frames.empty(), "nothing went through the channel's queue"
    assert len(made.acker) == 3


async def test_a_delivery_behind_queued_frames_waits_its_turn_in_the_queue() -> None:
    made, channel, seen = consumer()
    ahead = Basic.CancelOk(consumer_tag=made._tag)
    await made._put_frame((0, ahead))
    frames = [deliver(made, 1), header(1), ContentBody(b"x")]
    for frame in frames:
        await made._put_frame((0, frame))
    assert seen.bodies == []
    queued = [channel.frames.get_nowait()[1] for _ in range(channel.frames.qsize())]
    assert queued == [ahead, *frames]


async def test_another_consumers_delivery_is_left_to_aiormq() -> None:
    made, channel, seen = consumer()
    stray = Basic.Deliver(consumer_tag="someone-else", delivery_tag=1, routing_key="q")
    await made._put_frame((0, stray))
    await made._put_frame((0, header(0)))
    assert seen.bodies == [] and channel.frames.qsize() == 2


@pytest.mark.parametrize("second", [ContentBody(b"x"), Basic.Deliver(delivery_tag=2)])
async def test_a_broken_frame_sequence_fails_loudly(second: Any) -> None:
    made, _, seen = consumer()
    await made._put_frame((0, deliver(made, 1)))
    with pytest.raises(ValueError, match="Unexpected frame"):
        await made._put_frame((0, second))
    assert seen.bodies == []
