"""A broker link that consumes one queue and publishes nothing: the rejections recorder's.

It is `BrokerLink` with a simpler session: the same reconnect loop with backoff and jitter,
the same graceful stop (`_drain`), the same `Consumer` and its one in-order `Acker`; only
there is no publisher channel, and each delivery goes to the handle function given, whose
`Outcome` settles it. The route table's topology is declared at every connect, so the
queue exists even when the recorder starts before any `routerd serve`.
"""

from __future__ import annotations

import asyncio
import logging

from aiormq.channel import Channel

from routerd.amqp.connection import connect
from routerd.amqp.consumer import Consumer
from routerd.amqp.link import SHUTDOWN_TIMEOUT, BrokerLink, _close
from routerd.amqp.options import BrokerOptions
from routerd.amqp.topology import declare_topology
from routerd.delivery import TableSource
from routerd.delivery.handler import Handle, TaskHandler
from routerd.observe.health import Health
from routerd.observe.metrics import Metrics

log = logging.getLogger(__name__)


class QueueLink(BrokerLink):
    """Keeps handing deliveries of `queue` to `handle` until `stop()`; reconnects after losses."""

    def __init__(
        self,
        broker: BrokerOptions,
        tables: TableSource,
        queue: str,
        handle: Handle,
        metrics: Metrics,
        health: Health,
        *,
        prefetch: int = 256,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        super().__init__(broker, tables, metrics, health, shutdown_timeout=shutdown_timeout)
        self.queue = queue
        self.prefetch = prefetch
        self._handler = TaskHandler(handle)

    async def _session(self) -> None:
        # Why each step, in order:
        # 1. connect; a failure here is the common case while the broker is down.
        connection = await connect(self.broker)
        self._connection = connection
        self._health.connected = True
        consumer: Consumer | None = None
        try:
            # 2. declare the table's topology: the queue may not exist yet.
            await declare_topology(connection, self._tables.table)
            channel = await connection.channel(publisher_confirms=False)
            # The concrete class: the consumer reads deliveries on its reader.
            assert isinstance(channel, Channel)
            consumer = Consumer(channel, self.queue, self.prefetch, self._handler, self._metrics)
            acker = asyncio.create_task(consumer.acker.run(), name="routerd-queue-acker")
            try:
                # 3. consume; deliveries are acked only once `handle` answered ACK.
                await consumer.start()
                self._consuming_began()
                lost = await self._watch(connection, None, [consumer], [acker])
                if lost is not None:
                    log.warning("lost the broker", extra={"reason": lost})
                    return
                # 4. a stop: the same bounded drain as `routerd serve`.
                await self._drain(consumer)
            finally:
                acker.cancel()
                await asyncio.wait({acker})
        finally:
            self._session_ended()
            if consumer is not None:
                consumer.abandon()
            # Closing returns every unacked delivery to the queue.
            await _close(connection)
