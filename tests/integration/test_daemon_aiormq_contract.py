"""What routerd relies on aiormq to do, pinned against the real broker.

`routerd.amqp.publisher` maps these outcomes onto Unroutable / PublishFailed; if an aiormq
upgrade changes one of them, this file says which before the daemon misbehaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aiormq
import anyio
import pytest
from aiormq.abc import AbstractConnection
from pamqp.commands import Basic

from routerd.amqp.publisher import Publisher
from routerd.config.loader import load
from routerd.delivery import PublishFailed, PublishFailure, Unroutable
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Decision, Envelope
from tests.conftest import SHIPPED_CONFIG

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

PERSISTENT = Basic.Properties(delivery_mode=2)


@pytest.fixture
async def connection(amqp_url: str, unique: str) -> AsyncIterator[AbstractConnection]:
    async with aiormq.connect(amqp_url) as conn:
        yield conn
        channel = await conn.channel()
        for queue in (f"contract.ok.{unique}", f"contract.full.{unique}"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(f"contract.x.{unique}")


async def test_a_returned_mandatory_publish_raises_publish_error(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = f"contract.x.{unique}"
    await channel.exchange_declare(exchange, exchange_type="topic")
    with anyio.fail_after(10), pytest.raises(aiormq.exceptions.PublishError):
        await channel.basic_publish(
            b"x", exchange=exchange, routing_key="nobody", mandatory=True, properties=PERSISTENT
        )
    # The channel stays usable: a return is not a channel error.
    await channel.queue_declare(f"contract.ok.{unique}")
    with anyio.fail_after(10):
        ok = await channel.basic_publish(
            b"x", routing_key=f"contract.ok.{unique}", mandatory=True, properties=PERSISTENT
        )
    assert isinstance(ok, Basic.Ack)


async def test_a_broker_nack_raises_delivery_error(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    queue = f"contract.full.{unique}"
    await channel.queue_declare(
        queue, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    with anyio.fail_after(10), pytest.raises(aiormq.exceptions.DeliveryError) as caught:
        await channel.basic_publish(b"x", routing_key=queue, properties=PERSISTENT)
    assert not isinstance(caught.value, aiormq.exceptions.PublishError)
    assert isinstance(caught.value.frame, Basic.Nack)


async def test_a_closing_channel_fails_pending_confirms_instead_of_hanging(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    queue = f"contract.ok.{unique}"
    await channel.queue_declare(queue)
    publishes = [
        asyncio.ensure_future(
            channel.basic_publish(b"x" * 1000, routing_key=queue, properties=PERSISTENT)
        )
        for _ in range(500)
    ]
    await asyncio.sleep(0)
    await channel.close()
    with anyio.fail_after(10):
        results = await asyncio.gather(*publishes, return_exceptions=True)
    assert all(isinstance(r, Basic.Ack | BaseException) for r in results)


async def test_publisher_maps_outcomes_to_domain_errors(
    connection: AbstractConnection, unique: str
) -> None:
    table = load(SHIPPED_CONFIG)
    rejected = decide(table, Envelope(b"not json", {}, {"message_id": "m1"}))
    assert rejected.rejected

    def to(exchange: str, routing_key: str) -> Decision:
        return replace(
            rejected, target=replace(rejected.target, exchange=exchange), routing_key=routing_key
        )

    exchange = f"contract.x.{unique}"
    setup = await connection.channel()
    await setup.exchange_declare(exchange, exchange_type="topic")

    publisher = await Publisher.open(connection, 5.0)
    with anyio.fail_after(10), pytest.raises(Unroutable):
        await publisher.publish(to(exchange, "nobody"))
    # A missing exchange is a channel error (404): the channel closes under the publish.
    with anyio.fail_after(10), pytest.raises(PublishFailed) as failed:
        await publisher.publish(to(f"contract.missing.{unique}", "x"))
    assert failed.value.cause is PublishFailure.CHANNEL_CLOSED
    with anyio.fail_after(10), pytest.raises(PublishFailed) as failed:
        await publisher.publish(to(exchange, "nobody"))
    assert failed.value.cause is PublishFailure.CHANNEL_CLOSED, (
        "a closed channel fails fast, never hangs"
    )
