"""Sinks of decisions: what else learns how each send request was settled.

The daemon builds the tuple of sinks once and the handler calls each with the
`Settlement` of every delivery, after its outcome is known and before its ack is sent.
Metrics are the first sink; the rejections recorder is the next. Adding one is a change
where the daemon builds the tuple, nowhere else.

A sink is called on the event loop, once per delivery, at thousands of deliveries per
second: it must return quickly and never block. One that does I/O queues the work and
does it in a task of its own. Delivery is at-least-once, so a sink sees a request again
when it is redelivered (`Settlement.delivery.redelivered`). A sink that raises is logged
and counted; the delivery is settled exactly as if it had not raised.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from routerd.delivery.outcome import Settlement

log = logging.getLogger(__name__)


class DecisionSink(Protocol):
    """Receives the settlement of each delivery; must not block (see the module's note)."""

    def settled(self, settlement: Settlement) -> None: ...


def sink_name(sink: DecisionSink) -> str:
    """The name a sink goes by in logs and in the `routerd_sink_errors_total` metric."""
    return type(sink).__name__


class Sinks:
    """The daemon's sinks, called in order; a failing sink neither stops the others nor the ack."""

    __slots__ = ("_failed", "_sinks")

    def __init__(
        self,
        sinks: tuple[DecisionSink, ...] = (),
        failed: Callable[[str], None] | None = None,
    ) -> None:
        self._sinks = sinks
        # Told the sink's name when it raised: the daemon counts it in a metric.
        self._failed = failed

    def __bool__(self) -> bool:
        return bool(self._sinks)

    def __len__(self) -> int:
        return len(self._sinks)

    def settled(self, settlement: Settlement) -> None:
        for sink in self._sinks:
            try:
                sink.settled(settlement)
            except Exception:
                # Swallowed on purpose: the outcome is already decided, and a sink's bug
                # must neither lose the request nor settle it twice.
                name = sink_name(sink)
                log.exception(
                    "a decision sink failed; the send request is settled regardless",
                    extra={"sink": name, "message_id": settlement.delivery.message_id},
                )
                if self._failed is not None:
                    with contextlib.suppress(Exception):
                        self._failed(name)
