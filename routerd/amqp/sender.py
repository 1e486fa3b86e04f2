"""Publishing send requests to the source for `routerd.client`: one reconnecting confirm channel.

The daemon's `Publisher` already publishes exactly as the reliability rules ask (persistent,
mandatory, confirmed, a basic.return or nack turned into `routerd.delivery` errors, publishes
sharing a message_id kept apart); the sender reuses it by wrapping each send request in a
decision whose target is the source queue on the default exchange. What the sender adds is
the client's connection lifecycle: connect with backoff and jitter until a deadline, and open
a fresh session when the one in use was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiormq.abc import AbstractConnection

from routerd.amqp.connection import Backoff, BrokerUnavailable, connect
from routerd.amqp.options import BrokerOptions
from routerd.amqp.publisher import Publisher
from routerd.config.model import Location, RoutingKeyTemplate, Target
from routerd.delivery.errors import PublishFailed, PublishFailure
from routerd.pipeline.envelope import Decision

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
# Publish failures worth one more try on a fresh session.
_SEND_AGAIN = frozenset({PublishFailure.CHANNEL_CLOSED, PublishFailure.NACK})


def source_target(queue: str) -> Target:
    """The source queue as a publish target: the default exchange routes by queue name."""
    return Target(
        name=f"source {queue}",
        exchange="",
        exchange_type="direct",
        declare=False,
        routing_key=RoutingKeyTemplate(queue, (queue,)),
        partition=None,
        queues=(),
        location=Location(Path("<client>")),
    )


class SourceSender:
    """Publishes bodies to queues through the default exchange (to `queue` unless a publish
    names another: one session serves every source queue); reconnects when needed.

    Safe for many concurrent `publish` calls on one event loop: they share the session, and
    only one of them reconnects when it is lost.
    """

    def __init__(self, options: BrokerOptions, queue: str, *, ready_timeout: float) -> None:
        self.options = options
        self.queue = queue
        # How long a caller waits for a session (connecting, reconnecting) before
        # BrokerUnavailable: one connect attempt's timeout is options.connect_timeout.
        self.ready_timeout = ready_timeout
        self._targets = {queue: source_target(queue)}
        self._backoff = Backoff(options.reconnect_min, options.reconnect_max)
        self._connection: AbstractConnection | None = None
        self._publisher: Publisher | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether a session is open now (a send would not have to connect first)."""
        publisher = self._publisher
        return publisher is not None and _alive(self._connection, publisher)

    async def open(self) -> None:
        """Connect now, so that a broker that cannot be reached is known before the first send."""
        await self._ready()

    async def publish(
        self,
        body: bytes,
        headers: Mapping[str, Any],
        properties: Mapping[str, Any],
        *,
        queue: str | None = None,
    ) -> None:
        """Return once the broker confirmed; raise Unroutable, PublishFailed or BrokerUnavailable.

        A publish whose channel closed before the confirm, or that the broker nacked, is
        sent once more on a fresh session: the broker may have taken the first copy, so the
        request can arrive twice (at-least-once; the message_id tells the copies apart).
        """
        queue = queue or self.queue
        target = self._targets.get(queue)
        if target is None:
            target = self._targets.setdefault(queue, source_target(queue))
        decision = Decision(
            target=target,
            routing_key=queue,
            body=body,
            headers=headers,
            properties=properties,
        )
        for attempt in (1, 2):
            publisher = await self._ready()
            try:
                await publisher.publish(decision)
                return
            except PublishFailed as exc:
                if exc.cause not in _SEND_AGAIN or attempt == 2:
                    raise
                if exc.cause is PublishFailure.NACK:
                    # RabbitMQ 3.10 can leave a channel opened while a quorum queue elected
                    # a new leader nacking every publish for as long as the dead node stays
                    # away; a fresh channel is acked. A nack that persists is still raised.
                    await self._renew(publisher)
                    log.warning("the broker nacked a publish, sending it again on a new session")
                else:
                    log.warning("lost the broker during a publish, sending it again")

    async def _renew(self, publisher: Publisher) -> None:
        """Drop the session `publisher` belongs to, unless another caller already did."""
        async with self._lock:
            if self._publisher is publisher:
                await self._drop()

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            await self._drop()

    async def _ready(self) -> Publisher:
        publisher = self._publisher
        if publisher is not None and _alive(self._connection, publisher):
            return publisher
        async with self._lock:
            publisher = self._publisher
            if publisher is not None and _alive(self._connection, publisher):
                return publisher
            if self._closed:
                raise BrokerUnavailable(self.options.url, "the publisher is closed")
            await self._drop()
            return await self._connect_within_deadline()

    async def _connect_within_deadline(self) -> Publisher:
        # Why a deadline over the attempts rather than one attempt: a broker restart takes
        # seconds, and a caller prefers a late confirm to an error; but a broker that stays
        # away must be reported, not waited on forever.
        deadline = time.monotonic() + self.ready_timeout
        last: BaseException | str = f"no answer within {self.ready_timeout:g}s"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(
                    self.options.url, f"gave up after {self.ready_timeout:g}s: {_text(last)}"
                )
            try:
                async with asyncio.timeout(remaining):
                    connection = await connect(self.options)
                    try:
                        publisher = await Publisher.open(connection, self.options.publish_timeout)
                    except BaseException:
                        await _close(connection)
                        raise
            except BrokerUnavailable as exc:
                last = exc.cause
            except TimeoutError:
                last = f"no answer within {self.ready_timeout:g}s"
            except Exception as exc:
                last = exc
            else:
                self._connection, self._publisher = connection, publisher
                self._backoff.reset()
                return publisher
            delay = min(self._backoff.next(), max(0.0, deadline - time.monotonic()))
            log.info("cannot reach the broker", extra={"error": _text(last), "retry_in": delay})
            await asyncio.sleep(delay)

    async def _drop(self) -> None:
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None:
            await _close(connection)


def _alive(connection: AbstractConnection | None, publisher: Publisher) -> bool:
    return connection is not None and not connection.is_closed and not publisher.channel.is_closed


def _text(cause: BaseException | str) -> str:
    return cause if isinstance(cause, str) else (str(cause) or repr(cause))


async def _close(connection: AbstractConnection) -> None:
    if connection.is_closed:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await connection.close()
