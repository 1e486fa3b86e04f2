"""The publisher's confirm window against the real broker: one frame per loop step, confirms
in order, a basic.return among confirmed publishes, a channel that dies halfway through a
batch, and the one timeout watchdog per channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import anyio
import pytest
from aiormq.abc import AbstractConnection, ChannelFrame
from aiormq.channel import Channel
from aiormq.exceptions import PublishError
from pamqp.commands import Basic

from routerd.amqp.flow import BlockWatch
from routerd.amqp.publisher import ConfirmWindow
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.fixture
async def connection(amqp_url: str, unique: str) -> AsyncIterator[AbstractConnection]:
    async with aiormq.connect(amqp_url) as conn:
        yield conn
        channel = await conn.channel()
        await channel.queue_delete(f"window.{unique}")


async def confirm_channel(connection: AbstractConnection) -> Channel:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    assert isinstance(channel, Channel)
    return channel


async def window_on_queue(
    connection: AbstractConnection, unique: str, confirm_time: Any = None
) -> tuple[Channel, str, ConfirmWindow]:
    """A confirm channel, its window (10 s timeout) and a declared queue to publish to."""
    channel = await confirm_channel(connection)
    queue = f"window.{unique}"
    await channel.queue_declare(queue)
    return channel, queue, ConfirmWindow(channel, 10.0, confirm_time=confirm_time)


def ten_with_a_return(window: ConfirmWindow, queue: str) -> list[asyncio.Future[Any]]:
    """Ten publishes to `queue`, but the sixth to an exchange without a binding for it."""
    return [
        send(window, b"x", "amq.topic" if i == 5 else "", "nobody" if i == 5 else queue, i)
        for i in range(10)
    ]


def send(
    window: ConfirmWindow, body: bytes, exchange: str, key: str, i: int
) -> asyncio.Future[Any]:
    """Publish number `i`, persistent, with message_id m-<i>."""
    properties = Basic.Properties(delivery_mode=2, message_id=f"m-{i}")
    return window.publish(body, exchange, key, properties.marshal(), f"m-{i}")


async def settle(futures: list[asyncio.Future[Any]]) -> list[Any]:
    with anyio.fail_after(20):
        return await asyncio.gather(*futures, return_exceptions=True)


async def take_all(connection: AbstractConnection, queue: str, count: int) -> list[bytes]:
    channel = await connection.channel()
    bodies: list[bytes] = []
    with anyio.fail_after(20):
        while len(bodies) < count:
            got = await channel.basic_get(queue, no_ack=True)
            if got.body:
                bodies.append(got.body)
    return bodies


async def test_the_publishes_of_one_loop_step_leave_as_one_frame_in_order(
    connection: AbstractConnection, unique: str
) -> None:
    channel, queue, window = await window_on_queue(connection, unique)
    handed: list[Any] = []
    put = channel.write_queue.put_nowait

    def spy(frame: Any) -> None:
        put(frame)
        handed.append(frame)

    channel.write_queue.put_nowait = spy  # type: ignore[method-assign]
    # One body larger than the broker's frame_max travels as several body frames.
    bodies = [f"{i}".encode() * (1 if i != 7 else 100_000) for i in range(300)]
    futures = [send(window, body, "", queue, i) for i, body in enumerate(bodies)]
    assert handed == [], "nothing is handed over before the loop step ends"
    results = await settle(futures)
    assert all(isinstance(r, Basic.Ack) for r in results), results[:3]
    # One socket write for the whole step, however many publishes it made.
    assert len(handed) == 1
    later = [send(window, b"late", "", queue, 300)]
    assert isinstance((await settle(later))[0], Basic.Ack)
    assert len(handed) == 2, "a later step's publishes go in a frame of their own"
    assert await take_all(connection, queue, len(bodies) + 1) == [*bodies, b"late"]
    assert channel.confirmations == {}
    assert channel.message_id_delivery_tag == {}


async def test_a_returned_publish_in_a_batch_fails_alone(
    connection: AbstractConnection, unique: str
) -> None:
    _, queue, window = await window_on_queue(connection, unique)
    results = await settle(ten_with_a_return(window, queue))
    assert isinstance(results[5], PublishError)
    assert all(isinstance(r, Basic.Ack) for i, r in enumerate(results) if i != 5)


async def test_each_answered_publish_tells_its_confirm_time(
    connection: AbstractConnection, unique: str
) -> None:
    times: list[float] = []
    _, queue, window = await window_on_queue(connection, unique, confirm_time=times.append)
    started = asyncio.get_running_loop().time()
    results = await settle(ten_with_a_return(window, queue))
    waited = asyncio.get_running_loop().time() - started
    assert isinstance(results[5], PublishError)
    # The return is the broker's answer too.
    assert len(times) == 10
    assert all(0 < seconds <= waited + 0.01 for seconds in times), (times, waited)


async def test_a_channel_dying_halfway_through_a_batch_fails_the_rest(
    connection: AbstractConnection, unique: str
) -> None:
    _, queue, window = await window_on_queue(connection, unique)
    # A missing exchange is a channel error: the broker closes the channel at publish 50
    # and ignores what follows it on the wire.
    futures = [
        send(
            window,
            b"x",
            f"window.missing.{unique}" if i == 50 else "",
            "x" if i == 50 else queue,
            i,
        )
        for i in range(100)
    ]
    results = await settle(futures)
    assert all(isinstance(r, BaseException) for r in results[50:]), "none hangs or succeeds"
    acked = [i for i, r in enumerate(results) if isinstance(r, Basic.Ack)]
    assert all(i < 50 for i in acked)
    depth = (await (await connection.channel()).queue_declare(queue, passive=True)).message_count
    assert depth is not None and len(acked) <= depth <= 50, "a confirmed publish was lost"
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        send(window, b"x", "", queue, 101)


async def test_one_watchdog_times_out_confirms_in_publish_order(
    connection: AbstractConnection,
) -> None:
    # Confirms that never come: futures the broker knows nothing about.
    channel = await confirm_channel(connection)
    window = ConfirmWindow(channel, 0.05)
    loop = asyncio.get_running_loop()
    settled, first, second = loop.create_future(), loop.create_future(), loop.create_future()
    window._watch(settled)
    settled.set_result("confirmed")
    window._watch(first)
    window._watch(second)
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await first
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await second
    assert settled.result() == "confirmed"
    assert window._watchdog is None and not window._deadlines


async def test_a_multiple_confirm_settles_every_publish_it_covers_and_no_other(
    connection: AbstractConnection,
) -> None:
    channel = await confirm_channel(connection)
    window = ConfirmWindow(channel, 10.0)
    loop = asyncio.get_running_loop()
    pending = {tag: loop.create_future() for tag in (1, 2, 3, 5, 8)}
    channel.confirmations.update(pending)
    await channel._on_confirm_frame(Basic.Ack(delivery_tag=5, multiple=True))
    assert all(isinstance(pending[t].result(), Basic.Ack) for t in (1, 2, 3, 5))
    assert not pending[8].done() and list(channel.confirmations) == [8]
    await channel._on_confirm_frame(Basic.Nack(delivery_tag=8))
    with pytest.raises(aiormq.exceptions.DeliveryError):
        pending[8].result()
    assert window.channel is channel and channel.confirmations == {}


async def test_a_full_writer_queue_delays_a_batch_without_reordering_it(
    connection: AbstractConnection, unique: str
) -> None:
    channel, queue, window = await window_on_queue(connection, unique)
    # Empty frames write nothing: they only take the writer queue's room.
    while not channel.write_queue.full():
        channel.write_queue.put_nowait(ChannelFrame(payload=b"", should_close=False))
    first = [send(window, b"a%d" % i, "", queue, i) for i in range(5)]
    # The end of the loop step, where the batch is handed over, before the writer runs.
    window._flush_step()
    assert window.full
    room = asyncio.ensure_future(window.room())
    await asyncio.sleep(0)
    assert not room.done(), "a publisher waits while the writer queue is full"
    second = [send(window, b"b%d" % i, "", queue, 10 + i) for i in range(5)]
    results = await settle(first + second)
    with anyio.fail_after(5):
        await room
    assert all(isinstance(r, Basic.Ack) for r in results)
    expected = [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)]
    assert await take_all(connection, queue, 10) == expected


async def test_the_watchdog_stops_while_the_broker_blocks_and_restarts_whole_after(
    connection: AbstractConnection,
) -> None:
    channel = await confirm_channel(connection)
    blocks = BlockWatch()
    window = ConfirmWindow(channel, 0.1, blocks)
    loop = asyncio.get_running_loop()
    before, during = loop.create_future(), loop.create_future()
    window._watch(before)
    blocks._event.clear()  # connection.blocked, as aiormq's reader would set it
    window._watch(during)
    # Ten timeouts pass while blocked and neither confirm times out.
    with anyio.move_on_after(1.0):
        await asyncio.wait({before, during}, return_when=asyncio.FIRST_COMPLETED)
    assert not before.done() and not during.done()
    assert window._watchdog is None
    unblocked = loop.time()
    blocks._event.set()  # connection.unblocked
    for confirmation in (before, during):
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await confirmation
    # Each got its whole timeout again from the unblock, not what was left of it.
    assert loop.time() - unblocked >= 0.1
    assert window._watchdog is None and not window._deadlines


async def test_a_closed_window_stops_listening_to_blocks(connection: AbstractConnection) -> None:
    channel = await confirm_channel(connection)
    blocks = BlockWatch()
    ConfirmWindow(channel, 0.1, blocks)
    assert len(blocks._listeners) == 1
    await channel.close()

    async def listeners() -> int:
        return len(blocks._listeners)

    await wait_for(listeners, lambda n: n == 0, within=5, what="the window to stop listening")
