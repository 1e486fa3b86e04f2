"""Publishing decisions on a confirm-mode channel: persistent, mandatory, confirmed.

aiormq's `basic_publish` on a confirm channel waits for the broker's answer and turns it
into one of: the Basic.Ack frame (confirmed), `PublishError` (a mandatory publish came back
as basic.return: no queue was bound for it; the broker returns it before its ack),
`DeliveryError` (basic.nack), `TimeoutError`, or the channel's close exception set on every
pending confirm when the channel or connection closes. `Publisher` maps those onto two
domain errors the request handler understands (`routerd.delivery.errors`): `Unroutable`
and `PublishFailed` with its `PublishFailure` cause. `Publisher.open` publishes through a
`ConfirmWindow` per channel, which gives the same answers for less CPU per publish.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from random import getrandbits
from typing import Any

import pamqp.frame
from aiormq.abc import AbstractConnection, ChannelFrame, ConfirmationFrameType
from aiormq.channel import Channel
from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    DeliveryError,
    PublishError,
)
from pamqp import encode
from pamqp.commands import Basic
from pamqp.constants import FRAME_BODY, FRAME_END, FRAME_HEADER

from routerd.amqp.flow import BlockWatch
from routerd.delivery.errors import NotConfirmed, PublishFailed, PublishFailure, Unroutable
from routerd.pipeline.envelope import AMQP_PROPERTIES, Decision

# Envelope property name (AMQP's) -> pamqp's attribute, for every basic property.
PAMQP_NAMES = {name: "message_type" if name == "type" else name for name in AMQP_PROPERTIES}
# Not republished: the broker refuses (and closes the channel on) a user_id that is not
# the publishing connection's user, and the API's user is not routerd's; delivery_mode is
# always 2 and headers come from the decision.
_DROPPED = frozenset({"user_id", "headers", "delivery_mode"})
# Republished property -> its pamqp keyword.
_REPUBLISHED = {name: PAMQP_NAMES[name] for name in AMQP_PROPERTIES - _DROPPED}


# Encoded header tables by their items. Most decisions carry one of a few tables (the
# rule's category, name and schema version over the API's usual headers), which pamqp
# would otherwise encode afresh for every publish. Only all-text tables are kept: text
# compares and hashes exactly as it encodes, where `True == 1 == 1.0` do not.
TABLE_CACHE_SIZE = 1024
_tables: dict[tuple[tuple[str, str], ...], bytes] = {}


def encoded_table(headers: dict[str, Any]) -> bytes:
    """`pamqp.encode.field_table(headers)`, from the cache when the table is all text."""
    for value in headers.values():
        if type(value) is not str:
            return encode.field_table(headers)
    key = tuple(headers.items())
    data = _tables.get(key)
    if data is None:
        data = encode.field_table(headers)
        if len(_tables) >= TABLE_CACHE_SIZE:
            # Tables that vary per request (a trace id header, say) must not grow it.
            _tables.clear()
        _tables[key] = data
    return data


class _Properties(Basic.Properties):
    """Basic.Properties whose header table is encoded through `encoded_table`."""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers" and type(value) is dict:
            return encoded_table(value)
        return super().encode_property(name, value)


def basic_properties(decision: Decision) -> Basic.Properties:
    """The decision's properties and headers as pamqp wants them, always persistent."""
    kwargs: dict[str, Any] = {}
    for name, value in decision.properties.items():
        pamqp_name = _REPUBLISHED.get(name)
        if pamqp_name is not None and value is not None:
            kwargs[pamqp_name] = value
    headers = decision.headers
    # The pipeline builds a fresh dict per decision and nothing changes it once sent:
    # only another kind of mapping needs a copy.
    return _Properties(
        **kwargs,
        delivery_mode=2,
        headers=headers if type(headers) is dict else dict(headers),
    )


# The republished properties in wire order, as (envelope name, flag, pamqp type); pamqp's
# `Basic.Properties.__slots__` order is the wire order and its `flags` the property bits.
_WIRE_ORDER = tuple(
    (
        "type" if attr == "message_type" else attr,
        Basic.Properties.flags[attr],
        getattr(Basic.Properties, "_" + attr),
    )
    for attr in Basic.Properties.__slots__
)
_PERSISTENT = encode.octet(2)
_SHORT_STRING = struct.Struct("B")
_BODY_FRAME_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_FRAME_END = bytes([FRAME_END])
# frame type, channel, payload size; then class id, weight, body size (ContentHeader).
_HEADER_FRAME = struct.Struct(">BHIHHQ")
_FLAGS = struct.Struct(">H")


def encoded_properties(decision: Decision, message_id: str) -> bytes:
    """What `basic_properties(decision).marshal()` gives with `message_id`, for less CPU.

    pamqp's marshal walks all 14 properties through its generic type dispatch for every
    publish (7% of routerd's CPU in a drain, scripts/bench_profile.py). Text, the common
    case, is encoded here; any other value goes through pamqp's own encoder, which also
    raises what pamqp raises for a value it cannot encode.
    """
    properties = decision.properties
    if properties.get("cluster_id") not in (None, ""):
        # Deprecated in AMQP 0-9-1: pamqp's Basic.Properties refuses any value.
        raise ValueError("cluster_id must be empty")
    flags = 0
    parts: list[bytes] = []
    for name, flag, kind in _WIRE_ORDER:
        if name == "headers":
            headers = decision.headers
            flags |= flag
            parts.append(encoded_table(headers if type(headers) is dict else dict(headers)))
            continue
        if name == "delivery_mode":
            flags |= flag
            parts.append(_PERSISTENT)
            continue
        if name == "message_id":
            value: Any = message_id
        elif name in _DROPPED:
            continue
        else:
            value = properties.get(name)
        if value is None or value == "":
            continue
        flags |= flag
        if kind == "shortstr" and type(value) is str:
            data = value.encode()
            if len(data) > 255:
                raise TypeError("string exceeds maximum length of 255 bytes")
            parts.append(_SHORT_STRING.pack(len(data)) + data)
        else:
            parts.append(encode.by_type(value, kind))
    parts.insert(0, _FLAGS.pack(flags))
    return b"".join(parts)


def new_message_id() -> str:
    # aiormq matches a basic.return to its publish by message_id: every publish needs one.
    return f"{getrandbits(128):032x}"


def content_header_frame(channel: int, body_size: int, properties: bytes) -> bytes:
    """The content header frame pamqp marshals for `properties` (already encoded)."""
    size = 12 + len(properties)
    return b"".join(
        (
            _HEADER_FRAME.pack(FRAME_HEADER, channel, size, Basic.frame_id, 0, body_size),
            properties,
            _FRAME_END,
        )
    )


log = logging.getLogger(__name__)

# Encoded basic.publish method frames by (channel, exchange, routing key): a config has a
# few targets and keys, and the frame is the same bytes for every request sent with them.
METHOD_CACHE_SIZE = 1024
MAX_ROUTING_KEY = 255


def body_frames(body: bytes, channel: int, max_size: int) -> list[bytes | memoryview]:
    """`body` as AMQP body frames, in parts that point into it: what `pamqp.frame.marshal`
    gives for each piece, without a copy of a 1 MiB body before the one that joins the
    frames for the writer."""
    parts: list[bytes | memoryview] = []
    view = memoryview(body)
    for start in range(0, len(body), max_size):
        chunk = view[start : start + max_size]
        parts += (_BODY_FRAME_HEADER.pack(FRAME_BODY, channel, len(chunk)), chunk, _FRAME_END)
    return parts


# Told the seconds from each publish to reading the broker's confirm, nack or return (or
# its timeout): the broker's write plus both sides' socket turns
# (routerd_publish_confirm_seconds).
ConfirmTime = Callable[[float], None]


class ConfirmWindow:
    """Publishes on one confirm channel as aiormq's `basic_publish` does, for less per
    message: no lock, no timer and no coroutine per publish.

    A publish is registered in the channel's own confirm tables (so aiormq's reader settles
    it: ack, nack, basic.return, and the channel's close), its frames are marshalled at
    once and handed to the connection's writer queue. When that (bounded) queue is full,
    what follows is collected into one frame that waits for room, and publishers wait in
    `room()` as they would in aiormq: handing every publish of a busy moment to the broker
    at once made consume, publish, confirm and ack go in lock-step batches (measured: a
    lower rate at the same CPU). Confirms time out by one watchdog per channel instead of
    one timer per publish; with `blocks`, the watchdog stops while the broker blocks the
    connection (no confirm can come then) and every confirm waiting gets its whole timeout
    again from the unblock. The delivery tags stay in wire order because every publish on
    the channel goes through here, and the frames leave in that order.
    """

    def __init__(
        self,
        channel: Channel,
        timeout: float | None,
        blocks: BlockWatch | None = None,
        confirm_time: ConfirmTime | None = None,
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        self._blocks = blocks
        self._confirm_time = confirm_time
        self._loop = asyncio.get_running_loop()
        self._frames: list[bytes | memoryview] = []
        # A batch the writer queue (bounded) had no room for; later batches wait for it.
        self._putting: asyncio.Task[None] | None = None
        self._flush_due = False
        # Publishers waiting for room line up here, so each freed slot wakes one of them.
        self._line = asyncio.Lock()
        self._methods: dict[tuple[str, str], bytes] = {}
        # Confirms in publish order with their deadlines (equal timeouts: deadlines rise).
        self._deadlines: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        # aiormq settles a multiple=True confirm by scheduling one callback per publish it
        # covers; under load the broker confirms in runs, so that is a loop callback per
        # message. This settles the run at once, through aiormq's own per-tag step.
        channel._on_confirm_frame = self._on_confirm_frame  # type: ignore[method-assign]
        channel.closing.add_done_callback(self._on_close)
        self._stop_listening = (
            blocks.listen(self._on_block_change)
            if blocks is not None and timeout is not None
            else None
        )

    def publish(
        self, body: bytes, exchange: str, routing_key: str, properties: bytes, message_id: str
    ) -> asyncio.Future[Any]:
        """Send one mandatory publish; the future resolves as aiormq's confirm does.
        `properties` are encoded already (`encoded_properties`), `message_id` among them."""
        channel = self.channel
        if len(routing_key) > MAX_ROUTING_KEY:
            raise ValueError("Routing key too long (max 255 bytes)")
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        number = channel.number
        # Marshalled before anything is registered: a value pamqp cannot encode fails the
        # publish with nothing sent and nothing to undo.
        method = self._methods.get((exchange, routing_key))
        if method is None:
            if len(self._methods) >= METHOD_CACHE_SIZE:
                self._methods.clear()
            method = self._methods[(exchange, routing_key)] = pamqp.frame.marshal(
                Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                number,
            )
        frames: list[bytes | memoryview] = [
            method,
            content_header_frame(number, len(body), properties),
        ]
        frames += body_frames(body, number, channel.max_content_size)

        channel.delivery_tag += 1
        tag = channel.delivery_tag
        confirmation = channel.create_future()
        channel.confirmations[tag] = confirmation
        channel.message_id_delivery_tag[message_id] = tag

        observe = self._confirm_time
        sent = time.perf_counter()

        def on_settled(future: asyncio.Future[Any]) -> None:
            if channel.message_id_delivery_tag.get(message_id) == tag:
                channel.message_id_delivery_tag.pop(message_id)
            if observe is not None and _answered(future):
                observe(time.perf_counter() - sent)

        confirmation.add_done_callback(on_settled)
        self._frames += frames
        if not self._flush_due:
            # Every publish of this loop step leaves in one frame for the writer: one
            # socket write for a burst of deliveries instead of one per publish.
            self._flush_due = True
            self._loop.call_soon(self._flush_step)
        self._watch(confirmation)
        return confirmation

    @property
    def full(self) -> bool:
        """Whether publishes are waiting for room in the writer queue."""
        return self._putting is not None

    async def room(self) -> None:
        """Return once the writer queue takes publishes again (at once when it does)."""
        async with self._line:
            while self._putting is not None:
                # wait(), not await: a put the channel's close cancelled must not raise.
                await asyncio.wait({self._putting})

    async def _on_confirm_frame(self, frame: ConfirmationFrameType) -> None:
        channel = self.channel
        tag = frame.delivery_tag
        if tag not in channel.confirmations:
            log.error("unexpected confirm frame %r from the broker", frame)
            return
        if not getattr(frame, "multiple", False):
            channel._confirm_delivery(tag, frame)
            return
        # Listed first: settling removes entries from the table being read.
        for covered in [t for t in channel.confirmations if t <= tag]:
            channel._confirm_delivery(covered, frame)

    def _flush_step(self) -> None:
        self._flush_due = False
        self._flush()

    def _flush(self) -> None:
        if self._putting is not None or not self._frames:
            return
        payload = b"".join(self._frames)
        self._frames = []
        if self.channel.is_closed:
            return  # its confirms were failed with the close; nothing can be sent
        frame = ChannelFrame(payload=payload, should_close=False)
        queue = self.channel.write_queue
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._putting = self._loop.create_task(queue.put(frame))
            self._putting.add_done_callback(self._put_done)

    def _on_close(self, _: asyncio.Future[Any]) -> None:
        # A dead connection's writer takes nothing more: a batch waiting for room would
        # wait forever. Its confirms fail with the close (the watchdog stays, in case).
        self._frames = []
        if self._stop_listening is not None:
            self._stop_listening()
        if self._putting is not None:
            self._putting.cancel()

    def _put_done(self, task: asyncio.Task[None]) -> None:
        self._putting = None
        if task.cancelled():
            return
        if task.exception() is not None:
            log.debug("handing publishes to the writer failed", exc_info=task.exception())
        self._flush()

    def _watch(self, confirmation: asyncio.Future[Any]) -> None:
        if self.timeout is None:
            return  # the caller times the confirm (Publisher: with the clock stopped while blocked)
        deadlines = self._deadlines
        # Confirms arrive about in order: dropping the settled head keeps this about as
        # long as the publishes in flight.
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        timeout = self.timeout
        deadlines.append((self._loop.time() + timeout, confirmation))
        if self._watchdog is None and not (self._blocks is not None and self._blocks.blocked):
            self._watchdog = self._loop.call_later(timeout, self._expire)

    def _on_block_change(self, blocked: bool) -> None:
        if blocked:
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            return
        assert self.timeout is not None
        deadline = self._loop.time() + self.timeout
        self._deadlines = deque((deadline, f) for _, f in self._deadlines if not f.done())
        if self._deadlines and self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._watchdog = None
        deadlines = self._deadlines
        now = self._loop.time()
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _, confirmation = deadlines.popleft()
            if not confirmation.done():
                confirmation.set_exception(TimeoutError())
        if deadlines:
            self._watchdog = self._loop.call_at(deadlines[0][0], self._expire)


# Seconds between two renewals of the confirm channel while the broker keeps nacking.
RENEW_AFTER = 5.0
CLOSE_TIMEOUT = 5.0


class Publisher:
    """Publishes decisions on a confirm channel, renewed after nacks when it has the connection.

    Why renew: RabbitMQ 3.10's quorum queues remember, per channel, that they refused it with
    `overflow: reject-publish`, and keep nacking that channel's publishes after the queue has
    room again (its limit lifted, its messages consumed); a new channel is accepted at once
    (tests/faults/test_queue_full.py). So after a nack, at most every RENEW_AFTER seconds, new
    publishes go to a new channel; the old one is closed once its publishes are settled.
    """

    def __init__(
        self,
        channel: Channel,
        timeout: float,
        blocks: BlockWatch | None = None,
        connection: AbstractConnection | None = None,
        confirm_time: ConfirmTime | None = None,
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        # Each window's publishes are timed to their confirms for it (not aiormq's path).
        self._confirm_time = confirm_time
        # The connection's connection.blocked state: while the broker blocks it, the
        # confirm clock stands still (see `_confirmed`).
        self.blocks = blocks
        # With the connection (`open`), publishes go through a ConfirmWindow per channel;
        # without, through aiormq's basic_publish.
        self._windows: dict[int, ConfirmWindow] = {}
        if connection is not None:
            self._windows[id(channel)] = self._window_for(channel)
        # Renewals need the connection; without it the first channel is the only one.
        self._connection = connection
        self._opened = asyncio.get_running_loop().time()
        self._renewing = False
        self.renewals = 0
        # Publishes awaiting their confirm, by channel; retired channels close at zero.
        self._pending: dict[int, int] = {}
        self._retired: dict[int, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Done (with the close reason) when the channel in use closed other than by renewal.
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost.add_done_callback(_retrieve)
        if connection is not None:
            self._watch(channel)
        # aiormq matches a basic.return to its publish by message_id, so two publishes
        # in flight with the same message_id could swap outcomes: the returned one
        # confirmed, the routed one reported unroutable. Publishes sharing a message_id
        # therefore wait for each other; other publishes are not slowed down. The value is
        # None until a second publish of the same message_id waits for the first.
        self._busy: dict[str, asyncio.Future[None] | None] = {}

    @classmethod
    async def open(
        cls,
        connection: AbstractConnection,
        confirm_timeout: float,
        blocks: BlockWatch | None = None,
        confirm_time: ConfirmTime | None = None,
    ) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # The concrete class: its basic_publish takes `wait`, the abstract one does not.
        assert isinstance(channel, Channel)
        return cls(channel, confirm_timeout, blocks, connection, confirm_time)

    def _window_for(self, channel: Channel) -> ConfirmWindow:
        # The window's one watchdog times the confirms, stopped while the broker blocks.
        return ConfirmWindow(channel, self.timeout, self.blocks, self._confirm_time)

    def closing(self) -> asyncio.Future[None]:
        """An observer of the loss of the channel in use (a renewal is not a loss)."""
        if self._connection is None:
            return self.channel.closing
        return asyncio.ensure_future(asyncio.shield(self._lost))

    def _watch(self, channel: Channel) -> None:
        def closed(future: asyncio.Future[Any]) -> None:
            if channel is not self.channel or self._lost.done():
                return
            exc = None if future.cancelled() else future.exception()
            if exc is None:
                self._lost.set_result(None)
            else:
                self._lost.set_exception(exc)

        channel.closing.add_done_callback(closed)

    def _nacked(self) -> None:
        """After a nack: start a renewal unless one ran within RENEW_AFTER seconds."""
        now = asyncio.get_running_loop().time()
        if self._connection is None or self._renewing or now - self._opened < RENEW_AFTER:
            return
        self._renewing = True
        self._spawn(self._renew())

    async def _renew(self) -> None:
        assert self._connection is not None
        try:
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        except Exception as exc:
            # The connection is failing: the link notices and starts a new session.
            log.debug("cannot renew the confirm channel", extra={"error": repr(exc)})
            return
        finally:
            self._renewing = False
        assert isinstance(channel, Channel)
        self._windows[id(channel)] = self._window_for(channel)
        old, self.channel = self.channel, channel
        self._opened = asyncio.get_running_loop().time()
        self._watch(channel)
        self.renewals += 1
        log.info("renewed the confirm channel after a nack", extra={"renewals": self.renewals})
        self._retired[id(old)] = old
        if not self._pending.get(id(old)):
            self._retire(old)

    def _retire(self, channel: Channel) -> None:
        self._windows.pop(id(channel), None)
        self._retired.pop(id(channel), None)
        self._pending.pop(id(channel), None)
        self._spawn(_close_channel(channel))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, decision: Decision, then: Callable[[NotConfirmed | None], None]) -> bool:
        """Send the decision now and call `then` once it is settled: None when the broker
        confirmed it, else Unroutable or PublishFailed. False, with nothing sent, when it
        would have to wait (for room in the writer queue, or for an earlier publish of its
        message_id): `publish` waits. Raises the domain error for a publish that failed
        before anything was sent (an encoding error, a closed channel)."""
        message_id = decision.properties.get("message_id")
        busy = self._busy
        channel = self.channel
        window = self._windows.get(id(channel))
        if window is None or window.full or (message_id and message_id in busy):
            return False
        exchange = decision.target.exchange
        key = decision.routing_key
        try:
            confirmation = _send(window, decision, message_id)
        except Exception as exc:
            raise self._failure(exc, exchange, key) from None
        if message_id:
            busy[message_id] = None
        pending = self._pending
        pending[id(channel)] = pending.get(id(channel), 0) + 1

        def settled(future: asyncio.Future[Any]) -> None:
            self._settled(channel, message_id)
            error = asyncio.CancelledError() if future.cancelled() else future.exception()
            then(None if error is None else self._failure(error, exchange, key))

        confirmation.add_done_callback(settled)
        return True

    async def publish(self, decision: Decision) -> None:
        """Return once the broker confirmed the decision; raise Unroutable or PublishFailed."""
        message_id = decision.properties.get("message_id")
        busy = self._busy
        if message_id:
            if message_id in busy:
                await self._wait_turn(message_id)
            # Taken with no await since the check: no other publish of it can be in flight.
            busy[message_id] = None
        exchange = decision.target.exchange
        key = decision.routing_key
        channel = self.channel
        pending = self._pending
        pending[id(channel)] = pending.get(id(channel), 0) + 1
        try:
            window = self._windows.get(id(channel))
            if window is not None:
                if window.full:
                    await window.room()
                confirmation = _send(window, decision, message_id)
                confirmation.add_done_callback(_retrieve)
                # Timed by the window's watchdog: no timer, shield or scope per publish,
                # which were 5% of routerd's CPU in a drain (scripts/bench_profile.py).
                await confirmation
            elif self.blocks is None:
                await channel.basic_publish(
                    decision.body,
                    exchange=exchange,
                    routing_key=key,
                    properties=basic_properties(decision),
                    mandatory=True,
                    timeout=self.timeout,
                    # Do not wait for the socket drain: aiormq holds the channel lock while
                    # it drains, which would serialize every publish behind the network.
                    wait=False,
                )
            else:
                await self._confirmed(
                    self.blocks,
                    channel.basic_publish(
                        decision.body,
                        exchange=exchange,
                        routing_key=key,
                        properties=basic_properties(decision),
                        mandatory=True,
                        timeout=None,
                        wait=False,
                    ),
                )
        except asyncio.CancelledError:
            # A closing channel rejects pending confirms with its close reason, and that
            # reason can be CancelledError itself. Only a real cancellation of this task
            # (one it is still being asked for) propagates.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise PublishFailed(
                PublishFailure.CHANNEL_CLOSED, exchange, key, "channel closed"
            ) from None
        except Exception as exc:
            raise self._failure(exc, exchange, key) from None
        finally:
            self._settled(channel, message_id)

    def _settled(self, channel: Channel, message_id: str | None) -> None:
        """A publish on `channel` has its answer: retire the channel if it was the last,
        and let the next publish of the message_id go."""
        pending = self._pending
        left = pending[id(channel)] = pending[id(channel)] - 1
        if not left and id(channel) in self._retired:
            self._retire(channel)
        if message_id:
            waiting = self._busy.pop(message_id)
            if waiting is not None:
                waiting.set_result(None)

    def _failure(self, exc: BaseException, exchange: str, key: str) -> NotConfirmed:
        """What aiormq's answer (or error) means for the request handler."""
        if isinstance(exc, PublishError):
            return Unroutable(exchange, key, str(exc.args[0]) if exc.args else "NO_ROUTE")
        if isinstance(exc, DeliveryError):
            self._nacked()
            return PublishFailed(PublishFailure.NACK, exchange, key, str(exc))
        if isinstance(exc, TimeoutError):
            return PublishFailed(
                PublishFailure.TIMEOUT, exchange, key, f"no confirm within {self.timeout:g}s"
            )
        if isinstance(exc, AMQPError | ChannelInvalidStateError | ConnectionError):
            return PublishFailed(PublishFailure.CHANNEL_CLOSED, exchange, key, repr(exc))
        if isinstance(exc, asyncio.CancelledError):
            return PublishFailed(PublishFailure.CHANNEL_CLOSED, exchange, key, "channel closed")
        if isinstance(exc, ValueError):
            # aiormq refuses a routing key longer than 255 bytes before sending anything;
            # no retry can fix that, so it is as unroutable as a basic.return.
            return Unroutable(exchange, key[:64], str(exc))
        # Anything else failed before the frame was sent (marshalling, for one): the
        # request goes back to the source and its redelivery bound ends the loop.
        return PublishFailed(PublishFailure.ERROR, exchange, key, repr(exc))

    async def _confirmed(self, blocks: BlockWatch, publish: Awaitable[Any]) -> None:
        """Await the publish's confirm within the timeout, the clock stopped while blocked.

        A broker that blocks the connection (a memory or disk alarm) reads nothing from it,
        so no confirm can come; timing the publish out would requeue every request in flight
        and publish each twice once the alarm clears. While blocked there is no deadline;
        once unblocked, the publish gets its whole timeout again (`BlockWatch` reschedules).
        """
        async with asyncio.timeout(None if blocks.blocked else self.timeout) as deadline:
            blocks.deadlines[deadline] = self.timeout
            try:
                await publish
            finally:
                del blocks.deadlines[deadline]

    async def _wait_turn(self, message_id: str) -> None:
        """Wait until no publish of `message_id` is in flight (rare: a duplicate request)."""
        busy = self._busy
        while message_id in busy:
            waiting = busy[message_id]
            if waiting is None:
                # The first to wait makes the future the publish in flight resolves.
                waiting = busy[message_id] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)


def _send(window: ConfirmWindow, decision: Decision, message_id: str | None) -> asyncio.Future[Any]:
    """The decision through `window`, its properties encoded, its confirm's future."""
    # Not a message_id of "": aiormq matches a basic.return by it.
    sent_id = message_id or new_message_id()
    return window.publish(
        decision.body,
        decision.target.exchange,
        decision.routing_key,
        encoded_properties(decision, sent_id),
        sent_id,
    )


def _answered(confirmation: asyncio.Future[Any]) -> bool:
    """Whether the broker answered the publish (a confirm, a nack, a return) or its time
    ran out; not a channel's close, which says nothing of the broker's pace."""
    if confirmation.cancelled():
        return False
    error = confirmation.exception()
    return error is None or isinstance(error, DeliveryError | TimeoutError)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _close_channel(channel: Channel) -> None:
    if channel.is_closed:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await channel.close()
    except Exception as exc:
        log.debug("closing a retired confirm channel failed", extra={"error": repr(exc)})
