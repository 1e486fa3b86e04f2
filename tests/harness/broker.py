"""The test's own AMQP connection: publish with publisher confirms, queue depth by passive
declare, drain a queue exactly, delete the test's queues and exchanges at the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiormq
import anyio
import yaml
from pamqp.commands import Basic

from routerd.amqp.topology import declare_topology
from routerd.config.loader import load
from tests.harness.config import source_entries


@dataclass(frozen=True)
class Outgoing:
    body: bytes
    headers: Mapping[str, Any] | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    queue: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool

    @property
    def delivery_mode(self) -> int | None:
        return self.properties.get("delivery_mode")


def plain(value: Any) -> Any:
    """AMQP field values as plain Python: bytes that are text become str, tables dicts."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
)


def _received(queue: str, message: Any) -> Received:
    props = message.header.properties
    properties = {n: getattr(props, n, None) for n in _PROPERTY_NAMES}
    return Received(
        queue=queue,
        body=bytes(message.body),
        headers=plain(props.headers or {}),
        properties={k: v for k, v in properties.items() if v is not None},
        exchange=message.delivery.exchange or "",
        routing_key=message.delivery.routing_key or "",
        redelivered=bool(getattr(message.delivery, "redelivered", False)),
    )


def topology(config: Path) -> tuple[list[str], list[str]]:
    """(queues, exchanges) a routes.yaml names: the source, every target's, rejected's."""
    data = yaml.safe_load(Path(config).read_text())
    queues = [source["queue"] for source in source_entries(data)]
    exchanges: list[str] = []
    for target in [*data.get("targets", {}).values(), data["rejected"]]:
        if target.get("exchange"):
            exchanges.append(target["exchange"])
        queues.extend(q["name"] for q in target.get("queues", []))
    return sorted(set(queues)), sorted(set(exchanges))


async def _delete_queue(channel: Any, name: str) -> Any:
    return await channel.queue_delete(name)


async def _delete_exchange(channel: Any, name: str) -> Any:
    return await channel.exchange_delete(name)


class Broker:
    """The test's own AMQP connection, and cleanup of whatever the test tracked."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()
        self._conn: Any = None
        self._pub: Any = None

    async def __aenter__(self) -> Broker:
        self._conn = await aiormq.connect(self.url, client_properties={"connection_name": "tests"})
        self._pub = await self._conn.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.move_on_after(20, shield=True):
            await self.cleanup()
            with suppress(Exception):
                await self._conn.close()

    async def reconnect(self) -> None:
        """A fresh connection, after the broker was restarted under the old one."""
        with suppress(Exception):
            await self._conn.close()
        await self.__aenter__()

    def track(self, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
        self.queues.update(queues)
        self.exchanges.update(exchanges)

    def track_config(self, config: Path) -> None:
        queues, exchanges = topology(config)
        self.track(queues, exchanges)

    async def cleanup(self) -> None:
        """Delete every tracked queue and exchange; a missing one is fine."""
        for queue in sorted(self.queues):
            await self._on_fresh_channel(partial(_delete_queue, name=queue))
        for exchange in sorted(self.exchanges):
            await self._on_fresh_channel(partial(_delete_exchange, name=exchange))

    async def _on_fresh_channel(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        # A failed passive declare or delete closes its channel, so each gets its own.
        channel = await self._conn.channel(publisher_confirms=False)
        try:
            return await op(channel)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelClosed):
            return None
        finally:
            if not channel.is_closed:
                with suppress(Exception):
                    await channel.close()

    async def declare_queue(self, name: str, *, quorum: bool = True) -> None:
        args = {"x-queue-type": "quorum"} if quorum else {}
        channel = await self._conn.channel(publisher_confirms=False)
        await channel.queue_declare(name, durable=True, arguments=args)
        await channel.close()
        self.track(queues=[name])

    async def declare_config(self, config: Path) -> None:
        """Every queue and exchange `config` names, declared as routerd declares them, so a
        test can queue a backlog before the daemon starts."""
        self.track_config(config)
        await declare_topology(self._conn, load(config))

    async def bind_queue(
        self, queue: str, exchange: str, key: str, *, exchange_type: str = "topic"
    ) -> None:
        channel = await self._conn.channel(publisher_confirms=False)
        await channel.exchange_declare(exchange, exchange_type=exchange_type, durable=True)
        await channel.queue_bind(queue, exchange, routing_key=key)
        await channel.close()
        self.track(exchanges=[exchange])

    async def _declared(self, queue: str) -> Any:
        """`queue`'s Queue.DeclareOk (a passive declare), or None if it does not exist."""
        return await self._on_fresh_channel(lambda ch: ch.queue_declare(queue, passive=True))

    async def depth(self, queue: str) -> int | None:
        """Ready messages in `queue` (unacked ones not counted); None if it does not exist."""
        ok = await self._declared(queue)
        return None if ok is None else int(ok.message_count)

    async def consumers(self, queue: str) -> int | None:
        """Consumers on `queue`; None if it does not exist."""
        ok = await self._declared(queue)
        return None if ok is None else int(ok.consumer_count)

    async def depths(self, queues: Iterable[str]) -> dict[str, int]:
        return {q: (await self.depth(q)) or 0 for q in queues}

    async def publish(
        self,
        routing_key: str,
        items: Iterable[bytes | Outgoing],
        *,
        exchange: str = "",
        window: int = 500,
    ) -> int:
        """Publish persistent, mandatory, with confirms, `window` at a time; count acked."""
        batch: list[Outgoing] = []
        sent = 0
        for item in items:
            batch.append(item if isinstance(item, Outgoing) else Outgoing(item))
            if len(batch) >= window:
                sent += await self._publish_batch(exchange, routing_key, batch)
                batch = []
        if batch:
            sent += await self._publish_batch(exchange, routing_key, batch)
        return sent

    async def _publish_batch(self, exchange: str, routing_key: str, batch: list[Outgoing]) -> int:
        async def one(item: Outgoing) -> None:
            props = Basic.Properties(
                delivery_mode=2, headers=dict(item.headers or {}), **dict(item.properties)
            )
            confirm = await self._pub.basic_publish(
                item.body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=True,
                timeout=30,
            )
            if not isinstance(confirm, Basic.Ack):
                raise AssertionError(f"broker did not confirm a test publish: {confirm!r}")

        async with anyio.create_task_group() as tg:
            for item in batch:
                tg.start_soon(one, item)
        return len(batch)

    async def try_publish(self, routing_key: str, body: bytes, *, exchange: str = "") -> bool:
        """One persistent publish: True when the broker acked it, False when it nacked it."""
        try:
            confirm = await self._pub.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=Basic.Properties(delivery_mode=2),
                timeout=30,
            )
        except aiormq.exceptions.DeliveryError:
            return False
        return isinstance(confirm, Basic.Ack)

    async def delete_queue(self, name: str) -> None:
        await self._on_fresh_channel(partial(_delete_queue, name=name))

    async def drain(
        self, queue: str, count: int | None = None, *, within: float = 60.0
    ) -> list[Received]:
        """Consume `count` messages (default: the queue's whole depth now) and return them.

        Meant for queues nobody else consumes any more (the daemon has stopped), so the depth
        is exact and nothing can hide behind it; the queue is checked empty afterwards.
        """
        if count is None:
            count = await self.depth(queue) or 0
        got: list[Received] = []
        if count == 0:
            return got
        enough = anyio.Event()
        channel = await self._conn.channel(publisher_confirms=False)

        async def on_message(message: Any) -> None:
            got.append(_received(queue, message))
            if len(got) >= count:
                enough.set()

        try:
            await channel.basic_qos(prefetch_count=2000)
            ok = await channel.basic_consume(queue, on_message, no_ack=True)
            with anyio.move_on_after(within):
                await enough.wait()
            with suppress(Exception):
                await channel.basic_cancel(ok.consumer_tag)
        finally:
            with suppress(Exception):
                await channel.close()
        if len(got) < count:
            raise AssertionError(f"drained {len(got)} of {count} from {queue} in {within}s")
        return got
