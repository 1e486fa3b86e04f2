"""One delivery of a send request and what became of it.

`Delivery` is what the broker handed over; `Outcome` is how the handler settles it;
`Settlement` is the record decision sinks receive: the delivery, every publish tried for
it (the decision, then rejected when the target returned it or the redelivery limit was
reached) and the outcome.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from routerd.delivery.errors import NotConfirmed
from routerd.pipeline.envelope import Decision, Envelope


@dataclass(frozen=True, slots=True)
class Delivery:
    envelope: Envelope
    # Set by the broker when the delivery was delivered before (to anyone).
    redelivered: bool
    # Earlier failed deliveries as the broker counts them (`x-delivery-count`, quorum
    # queues only); None when the queue does not count.
    delivery_count: int | None

    @property
    def message_id(self) -> str:
        """The API's message_id, or "" when the request has none (for logs)."""
        value = self.envelope.properties.get("message_id")
        return value if isinstance(value, str) else ""


class Outcome(enum.Enum):
    """How a delivery is settled with the source."""

    # A decision was confirmed by the broker (its target's or rejected's): the source
    # delivery may go.
    ACK = "ack"
    # Not confirmed: give the delivery back to the source queue, as a failed delivery.
    REQUEUE = "requeue"
    # Neither: the publisher's channel is gone and the session with it. Closing the
    # consumer channel gives the delivery back without counting it against the request.
    LEAVE = "leave"


@dataclass(frozen=True, slots=True)
class Published:
    """One publish of a decision and its result: None when the broker confirmed it."""

    decision: Decision
    failure: NotConfirmed | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What happened to one delivery, as decision sinks see it."""

    delivery: Delivery
    # The pipeline's decision for the send request.
    decision: Decision
    # Every publish tried for it, in order: the decision's, then rejected's when the target
    # returned it or the redelivery limit was reached. Empty only when routerd failed
    # before its first publish had a result (logged as a bug; the request is requeued).
    publishes: tuple[Published, ...]
    outcome: Outcome

    @property
    def confirmed(self) -> Decision | None:
        """The decision the broker confirmed (the target's or rejected's), if any."""
        if not self.publishes:
            return None
        last = self.publishes[-1]
        return last.decision if last.failure is None else None
