"""Consuming the source on one channel: prefetch, manual acks, one acker.

aiormq runs the consumer callback as a new task per delivery, in delivery order, owned by
the channel: when the channel or connection closes, those tasks are cancelled. So the
callback registers the delivery with the acker before its first await (which keeps the
ledger in delivery order), runs the request handler, and settles the outcome; the acker
sends it. In-flight work is bounded by the prefetch: the broker sends no more than
`prefetch` unacked deliveries, so neither tasks nor the ledger can grow past it. The link
passes the source's window (`Source.window`), the prefetch lowered so that bodies at the
size limit stay within the source's byte budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from routerd.amqp.acker import Acker, Action
from routerd.amqp.publisher import PAMQP_NAMES
from routerd.delivery.outcome import Delivery, Outcome
from routerd.observe.metrics import Metrics
from routerd.pipeline.envelope import Envelope

log = logging.getLogger(__name__)

Handle = Callable[[Delivery], Awaitable[Outcome]]

CANCEL_TIMEOUT = 10.0
# Broker-owned headers: read here, not passed on. Republishing x-delivery-count would
# make a downstream quorum queue's consumer believe the request failed there already.
DELIVERY_COUNT = "x-delivery-count"
# (pamqp attribute, envelope property name) for every basic property.
_PROPERTIES = tuple((attr, name) for name, attr in PAMQP_NAMES.items())


def delivery_of(message: DeliveredMessage) -> Delivery:
    """The send request as the API published it, plus what the broker says about it."""
    props = message.header.properties
    properties: dict[str, Any] = {}
    for attr, name in _PROPERTIES:
        value = getattr(props, attr, None)
        if value is not None:
            properties[name] = value
    headers: dict[str, Any] = dict(props.headers) if props.headers else {}
    count = headers.pop(DELIVERY_COUNT, None)
    frame = message.delivery
    redelivered = bool(getattr(frame, "redelivered", False))
    return Delivery(
        envelope=Envelope(message.body, headers, properties),
        redelivered=redelivered,
        delivery_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
    )


class Consumer:
    """The source consumer of one channel; a new channel gets a new Consumer."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: str,
        prefetch: int,
        handle: Handle,
        metrics: Metrics,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.prefetch = prefetch
        self._handle = handle
        self._metrics = metrics
        self.acker = Acker(channel, on_sent=self._on_sent)
        self.consumer_tag: str | None = None
        # Deliveries consumed and not yet acked or requeued, mirrored in the gauge.
        self.in_flight = 0
        # Set when the broker cancels the consumer (the queue was deleted, for one).
        self.cancelled_by_broker = asyncio.Event()

    async def start(self) -> None:
        await self.channel.basic_qos(prefetch_count=self.prefetch)
        self.channel.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        ok = await self.channel.basic_consume(self.queue, self._on_message, no_ack=False)
        self.consumer_tag = ok.consumer_tag
        log.info("consuming", extra={"queue": self.queue, "prefetch": self.prefetch})

    async def cancel(self) -> None:
        """Ask the broker to stop delivering; deliveries already sent still get handled."""
        if self.consumer_tag is None or self.channel.is_closed:
            return
        # Not nowait: the Cancel-Ok comes after every delivery the broker sent before it,
        # so once it is here no further delivery can arrive.
        await self.channel.basic_cancel(self.consumer_tag, timeout=CANCEL_TIMEOUT)
        self.consumer_tag = None

    def abandon(self) -> None:
        """Forget the deliveries still in flight: their channel is gone and so are their tags."""
        self._metrics.in_flight.dec(self.in_flight)
        self.in_flight = 0

    async def _on_message(self, message: DeliveredMessage) -> None:
        started = time.perf_counter()
        tag = message.delivery_tag
        assert tag is not None
        entry = self.acker.add(tag)
        self._metrics.consumed.inc()
        self._metrics.in_flight.inc()
        self.in_flight += 1
        size = len(message.body)
        self._metrics.in_flight_bytes.inc(size)
        try:
            outcome = await self._handle(delivery_of(message))
        except Exception:
            # A bug in routerd, not in the request: give it back rather than lose it.
            log.exception("handling a send request failed; requeueing it")
            outcome = Outcome.REQUEUE
        finally:
            # The body is let go with the delivery here, before its ack goes out.
            self._metrics.in_flight_bytes.dec(size)
        if outcome is not Outcome.LEAVE:
            self.acker.settle(entry, outcome)
            self._metrics.processing_seconds.observe(time.perf_counter() - started)

    def _on_sent(self, action: Action) -> None:
        self.in_flight -= action.count
        self._metrics.in_flight.dec(action.count)
        if action.outcome is Outcome.ACK:
            self._metrics.acked.inc(action.count)
        else:
            self._metrics.nacked.inc(action.count)

    def _on_broker_cancel(self, frame: Basic.Cancel) -> None:
        log.warning("the broker cancelled the consumer", extra={"queue": self.queue})
        self.cancelled_by_broker.set()
