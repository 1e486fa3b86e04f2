"""Acks and requeues of source deliveries: settled in any order, sent in delivery order.

Publishes confirm out of order, but acks must leave from one place, in order: a pipelined
consumer that acked with `multiple=True` from many tasks acked tags the broker no longer
knew, got PRECONDITION_FAILED and lost its channel. So every delivery gets an entry in an
`AckLedger` when it arrives, its handler settles the entry when the outcome is known, and
one `Acker` task per consumer channel sends what the settled head of the ledger allows,
collapsing a run of acks into one `basic.ack(multiple=True)`.

A ledger belongs to exactly one channel: delivery tags die with their channel, so a new
channel gets a new ledger and nothing is ever acked on a channel that did not deliver it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from routerd.delivery.outcome import Outcome

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    tag: int
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One frame to send: ack `tag` (and, with `multiple`, every earlier tag) or requeue it."""

    outcome: Outcome
    tag: int
    multiple: bool
    count: int


class LedgerError(RuntimeError):
    def __init__(self, tag: int, last: int) -> None:
        self.tag = tag
        self.last = last
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"delivery tag {self.tag} arrived after tag {self.last}: tags must increase"


class AckLedger:
    """The deliveries of one channel not yet acked or requeued, in delivery order."""

    __slots__ = ("_contiguous", "_last_added", "_pending")

    def __init__(self) -> None:
        self._pending: deque[Entry] = deque()
        self._last_added = 0
        # Every tag up to this one has been acked or requeued. `multiple=True` is only
        # safe right after it: a tag the client never saw (a delivery aiormq dropped)
        # must not be acked by a later multiple-ack.
        self._contiguous = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, tag: int) -> Entry:
        if tag <= self._last_added:
            raise LedgerError(tag, self._last_added)
        self._last_added = tag
        entry = Entry(tag)
        self._pending.append(entry)
        return entry

    def settle(self, entry: Entry, outcome: Outcome) -> bool:
        """Record the outcome; True when the head became sendable, so the acker must wake."""
        if outcome is Outcome.LEAVE:
            # Nothing is sent for it: the entry stays unsettled until its channel closes.
            raise ValueError("Outcome.LEAVE is not sent: leave the entry unsettled instead")
        entry.outcome = outcome
        return bool(self._pending) and self._pending[0] is entry

    def take(self) -> list[Action]:
        """Remove the settled head of the ledger and say what to send for it, in order."""
        actions: list[Action] = []
        pending = self._pending
        run_end = 0
        run_len = 0
        while pending and pending[0].outcome is not None:
            entry = pending.popleft()
            if entry.outcome is Outcome.ACK and run_len and entry.tag == run_end + 1:
                run_end, run_len = entry.tag, run_len + 1
                continue
            if run_len:
                actions.append(self._ack_run(run_end, run_len))
                run_len = 0
            if entry.outcome is Outcome.ACK and entry.tag == self._contiguous + 1:
                run_end, run_len = entry.tag, 1
                continue
            assert entry.outcome is not None
            actions.append(Action(entry.outcome, entry.tag, False, 1))
            if entry.tag == self._contiguous + 1:
                self._contiguous = entry.tag
        if run_len:
            actions.append(self._ack_run(run_end, run_len))
        return actions

    def _ack_run(self, end: int, length: int) -> Action:
        self._contiguous = end
        return Action(Outcome.ACK, end, length > 1, length)


class AckChannel(Protocol):
    """What the acker needs of the consumer channel (an aiormq Channel has it)."""

    def basic_ack(
        self, delivery_tag: int, multiple: bool = ..., wait: bool = ...
    ) -> Awaitable[None]: ...

    def basic_reject(
        self, delivery_tag: int, *, requeue: bool = ..., wait: bool = ...
    ) -> Awaitable[None]: ...


class Acker:
    """The one place acks and requeues of one consumer channel leave from."""

    def __init__(
        self,
        channel: AckChannel,
        on_sent: Callable[[Action], None] | None = None,
    ) -> None:
        self._channel = channel
        self._ledger = AckLedger()
        self._on_sent = on_sent
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sending = False
        self.failed: BaseException | None = None

    def __len__(self) -> int:
        return len(self._ledger)

    def add(self, tag: int) -> Entry:
        self._idle.clear()
        return self._ledger.add(tag)

    def settle(self, entry: Entry, outcome: Outcome) -> None:
        if self._ledger.settle(entry, outcome):
            self._wake.set()

    async def wait_idle(self) -> None:
        """Return once every delivery seen so far was acked or requeued, or acks failed."""
        await self._idle.wait()

    async def run(self) -> None:
        """Send settled outcomes until cancelled or the channel fails."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                for action in self._ledger.take():
                    await self._send(action)
            except Exception as exc:
                # The channel is gone and its tags with it; the broker requeues every
                # delivery not acked. The connection watcher starts the reconnect.
                self.failed = exc
                log.warning("acks stopped: consumer channel failed", extra={"error": repr(exc)})
                # Nothing more can be sent: a graceful stop must not wait for it.
                self._idle.set()
                return
            if not self._ledger:
                self._idle.set()

    async def _send(self, action: Action) -> None:
        # wait=True: the frame reaches the socket before the next one is built, which also
        # lets more confirms pile up meanwhile and makes the next ack run longer. On close,
        # the writer drops what is still queued, so a final ack must have been drained.
        send: Awaitable[None]
        if action.outcome is Outcome.ACK:
            send = self._channel.basic_ack(action.tag, multiple=action.multiple, wait=True)
        else:
            # basic.reject, not basic.nack: since RabbitMQ 4.3 only reject counts as a failed
            # delivery in a quorum queue's x-delivery-count, which bounds the redeliveries.
            send = self._channel.basic_reject(action.tag, requeue=True, wait=True)
        await send
        if self._on_sent is not None:
            self._on_sent(action)
