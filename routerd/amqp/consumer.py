"""Consuming the source on one channel: prefetch, manual acks, one acker.

aiormq would put every frame of a delivery through the channel's frame queue and run a
consumer callback as a new task per delivery. Instead, the consumer takes a delivery as
the connection's reader hands its frames to the channel (`_put_frame`), or, when frames are
queued ahead of it, from the channel's own reader (`_on_deliver_frame`), and hands it to
the handler there, in delivery order: it registers the delivery with the acker (which
keeps the ledger in delivery order), and the handler settles the outcome later, from the
publish confirm's callback or from a task when it has to wait (`RequestHandler.begin`);
the acker sends it. Tasks are the consumer's and are cancelled when the channel closes, as
aiormq's would be. Measured against the task per delivery: 1.13x the rate at 0.89x the CPU
per request; without the frame queue, 0.85x the CPU again (`scripts/bench_serve.py
--baseline`). In-flight work is bounded by the prefetch: the broker sends no more than
`prefetch` unacked deliveries, so neither tasks nor the ledger can grow past it. The link
passes the source's window (`Source.window`), the prefetch lowered so that bodies at the
size limit stay within the source's byte budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from random import getrandbits
from typing import Any

from aiormq.abc import DeliveredMessage
from aiormq.channel import Channel
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from routerd.amqp.acker import Acker, Action
from routerd.amqp.publisher import PAMQP_NAMES
from routerd.delivery.handler import Handler
from routerd.delivery.outcome import Delivery, Outcome
from routerd.observe.metrics import Metrics
from routerd.pipeline.envelope import Envelope

log = logging.getLogger(__name__)

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
        channel: Channel,
        queue: str,
        prefetch: int,
        handler: Handler,
        metrics: Metrics,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.prefetch = prefetch
        self._handler = handler
        self._metrics = metrics
        self.acker = Acker(channel, on_sent=self._on_sent)
        self.consumer_tag: str | None = None
        # Chosen here rather than by aiormq: deliveries can be read before basic_consume
        # returns the tag, and each must be told from a stray one.
        self._tag = f"routerd.{channel.number}.{getrandbits(64):016x}"
        # Deliveries consumed and not yet acked or requeued, mirrored in the gauge.
        self.in_flight = 0
        # Bodies of deliveries not yet settled, mirrored in the in-flight bytes gauge.
        self._held_bytes = 0
        self._abandoned = False
        # Deliveries whose handling had to wait; cancelled with the channel, as aiormq's
        # consumer tasks are (their requests come back from the broker anyway).
        self._tasks: set[asyncio.Task[None]] = set()
        channel.closing.add_done_callback(self._cancel_tasks)
        # Set when the broker cancels the consumer (the queue was deleted, for one).
        self.cancelled_by_broker = asyncio.Event()
        # A delivery being taken off the connection's reader (`_put_frame`): its method and
        # header frames, then its body frames so far.
        self._deliver: Basic.Deliver | None = None
        self._header: ContentHeader | None = None
        self._parts: list[bytes] = []
        self._received = 0
        self._queue_put: Callable[[Any], Awaitable[None]] | None = None

    async def start(self) -> None:
        await self.channel.basic_qos(prefetch_count=self.prefetch)
        self.channel.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        # Deliveries are taken as the connection's reader hands their frames over
        # (`_put_frame`), or from the channel's reader when frames are queued ahead of them
        # (`_on_deliver_frame`); never by aiormq's consumer callback, a task per delivery.
        self.channel._on_deliver_frame = self._on_deliver_frame  # type: ignore[method-assign]
        self._queue_put = self.channel.frames.put
        self.channel.frames.put = self._put_frame  # type: ignore[method-assign]
        ok = await self.channel.basic_consume(
            self.queue, _never_called, no_ack=False, consumer_tag=self._tag
        )
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
        self._abandoned = True
        self._metrics.in_flight.dec(self.in_flight)
        self.in_flight = 0
        self._metrics.in_flight_bytes.dec(self._held_bytes)
        self._held_bytes = 0

    async def _put_frame(self, item: tuple[int, Any]) -> None:
        """Every frame of the channel, as the connection's reader hands it over.

        A delivery for this consumer is assembled here and handled at once: no queue put
        and get per frame, no wake-up of the channel's reader (measured: 0.85x the CPU per
        request, and the broker's less too). Only while the channel's queue is empty, so
        that a delivery is never handled before frames that came ahead of it; any other
        frame, and a delivery behind queued frames, takes aiormq's way
        (`_on_deliver_frame` then reads it from the queue).
        """
        _, frame = item
        if self._deliver is None:
            if (
                type(frame) is Basic.Deliver
                and frame.consumer_tag == self._tag
                and self.channel.frames.empty()
            ):
                self._deliver = frame
                return
            assert self._queue_put is not None
            await self._queue_put(item)
            return
        # A broken frame sequence raises here, in the connection's reader: the connection
        # closes (aiormq would close the channel) and the broker requeues all the same.
        if self._header is None:
            self._header = _content_header(frame)
            if self._header.body_size == 0:
                self._assembled(b"")
            return
        part = _body_part(frame)
        self._parts.append(part)
        self._received += len(part)
        if self._received >= self._header.body_size:
            self._assembled(_joined(self._parts))

    def _assembled(self, body: bytes) -> None:
        deliver, header = self._deliver, self._header
        assert deliver is not None and header is not None
        self._deliver = self._header = None
        self._parts = []
        self._received = 0
        self._on_message(
            DeliveredMessage(delivery=deliver, header=header, body=body, channel=self.channel)
        )

    async def _on_deliver_frame(self, frame: Basic.Deliver) -> None:
        channel = self.channel
        # A broken frame sequence raises, as aiormq's own reader does: the channel closes.
        header = _content_header(await channel._get_frame())
        body = await self._read_body(header.body_size)
        message = DeliveredMessage(delivery=frame, header=header, body=body, channel=channel)
        if frame.consumer_tag != self._tag:
            log.warning("a delivery for an unknown consumer", extra={"queue": self.queue})
            return
        self._on_message(message)

    async def _read_body(self, size: int) -> bytes:
        """The body frames' content, read from the channel's queue."""
        parts: list[bytes] = []
        received = 0
        while received < size:
            parts.append(_body_part(await self.channel._get_frame()))
            received += len(parts[-1])
        return _joined(parts)

    def _on_message(self, message: DeliveredMessage) -> None:
        started = time.perf_counter()
        tag = message.delivery_tag
        assert tag is not None
        entry = self.acker.add(tag)
        metrics = self._metrics
        metrics.consumed.inc()
        metrics.in_flight.inc()
        self.in_flight += 1
        size = len(message.body)
        metrics.in_flight_bytes.inc(size)
        self._held_bytes += size
        settled = False

        def settle(outcome: Outcome) -> None:
            nonlocal settled
            if settled:
                log.error("a delivery was settled twice", extra={"queue": self.queue})
                return
            settled = True
            if self._abandoned:
                return  # its tag died with the channel; abandon() counted it out
            # The body is let go with the delivery here, before its ack goes out.
            metrics.in_flight_bytes.dec(size)
            self._held_bytes -= size
            if outcome is not Outcome.LEAVE:
                self.acker.settle(entry, outcome)
                metrics.processing_seconds.observe(time.perf_counter() - started)

        try:
            self._handler.begin(delivery_of(message), settle, self._spawn)
        except Exception:
            # A bug in routerd, not in the request: give it back rather than lose it.
            log.exception("handling a send request failed; requeueing it")
            settle(Outcome.REQUEUE)

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.channel.is_closed:
            return  # the delivery is back in the queue; abandon() counts it out
        task = asyncio.ensure_future(work())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a send request failed", exc_info=task.exception())

    def _cancel_tasks(self, _: asyncio.Future[Any]) -> None:
        for task in self._tasks:
            task.cancel()

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


def _content_header(frame: Any) -> ContentHeader:
    if not isinstance(frame, ContentHeader):
        raise ValueError(f"Unexpected frame {frame!r} instead of ContentHeader", frame)
    return frame


def _body_part(frame: Any) -> bytes:
    if not isinstance(frame, ContentBody):
        raise ValueError(f"Unexpected frame {frame!r}", frame)
    return frame.value


def _joined(parts: list[bytes]) -> bytes:
    """A body from its frames: the one frame's own bytes when it fits in one (nearly always:
    frame_max is 128 KiB), else one join. aiormq copies every body into a BytesIO and out
    again. (1 MiB bodies peaked as high either way in `bench_big_bodies`: 147-149 against
    152-167 MiB, within its noise.)"""
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


async def _never_called(message: DeliveredMessage) -> None:
    # Consumer._on_deliver_frame takes the channel's deliveries before aiormq would call it.
    raise AssertionError("aiormq's consumer callback was called instead of routerd's")
