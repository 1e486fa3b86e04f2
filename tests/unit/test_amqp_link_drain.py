"""The graceful stop of one session, with a fake consumer: no broker involved."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import anyio
import pytest

from routerd.amqp.consumer import Consumer
from routerd.amqp.link import BrokerLink
from routerd.amqp.options import BrokerOptions
from routerd.observe.health import Health
from routerd.observe.metrics import Metrics

pytestmark = pytest.mark.anyio


class FakeChannel:
    def __init__(self) -> None:
        self._closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def closing(self) -> asyncio.Future[None]:
        # Like aiormq: an observer the caller may cancel without closing anything.
        observer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing.add_done_callback(
            lambda source: observer.done() or observer.set_exception(ConnectionError("gone"))
        )
        return observer

    def close(self) -> None:
        self._closing.set_result(None)


class FakeAcker:
    def __init__(self) -> None:
        self.idle = asyncio.Event()

    def __len__(self) -> int:
        return 0 if self.idle.is_set() else 3

    async def wait_idle(self) -> None:
        await self.idle.wait()


class FakeConsumer:
    def __init__(self, cancel_ok: asyncio.Event) -> None:
        self.channel = FakeChannel()
        self.acker = FakeAcker()
        self.cancel_ok = cancel_ok
        self.cancel_started = asyncio.Event()
        self.cancel_finished = asyncio.Event()

    async def cancel(self) -> None:
        self.cancel_started.set()
        await self.cancel_ok.wait()
        self.cancel_finished.set()


def link() -> BrokerLink:
    options = BrokerOptions("amqp://unused/")
    return BrokerLink(options, cast(Any, None), Metrics(), Health(), shutdown_timeout=30.0)


async def test_a_clean_stop_cancels_then_waits_for_in_flight_acks() -> None:
    cancel_ok = asyncio.Event()
    consumer = FakeConsumer(cancel_ok)
    drain = asyncio.ensure_future(link()._drain(cast(Consumer, consumer)))
    with anyio.fail_after(5):
        await consumer.cancel_started.wait()
        assert not drain.done()
        cancel_ok.set()
        await consumer.cancel_finished.wait()
        for _ in range(3):
            await asyncio.sleep(0)
        assert not drain.done(), "must wait for in-flight acks"
        consumer.acker.idle.set()
        await drain


async def test_a_channel_closing_under_the_cancel_ends_the_stop_at_once() -> None:
    # The broker connection is being torn down when the stop begins: the cancel-ok never
    # comes, and waiting for it would hold the stop for aiormq's whole rpc timeout.
    consumer = FakeConsumer(asyncio.Event())
    drain = asyncio.ensure_future(link()._drain(cast(Consumer, consumer)))
    with anyio.fail_after(5):
        await consumer.cancel_started.wait()
        assert not drain.done()
        consumer.channel.close()
        await drain
    assert not consumer.cancel_finished.is_set()
