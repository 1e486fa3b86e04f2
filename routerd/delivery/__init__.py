"""Delivery: one send request from its delivery to its settlement, independent of the broker.

The broker adapter (`routerd.amqp`) hands a `Delivery` to the `RequestHandler`, publishes
through the `Publish` function it was given (raising `Unroutable` or `PublishFailed`), and
settles the source as the returned `Outcome` says. The handler tells the daemon's decision
sinks (`DecisionSink`) how each delivery was settled. Nothing here imports a broker client.
"""

from __future__ import annotations

from routerd.delivery.attempts import AttemptCounter
from routerd.delivery.errors import NotConfirmed, PublishFailed, PublishFailure, Unroutable
from routerd.delivery.handler import Publish, RequestHandler, TableSource, retry_pause
from routerd.delivery.outcome import Delivery, Outcome, Published, Settlement
from routerd.delivery.sinks import DecisionSink, Sinks, sink_name

__all__ = [
    "AttemptCounter",
    "DecisionSink",
    "Delivery",
    "NotConfirmed",
    "Outcome",
    "Publish",
    "PublishFailed",
    "PublishFailure",
    "Published",
    "RequestHandler",
    "Settlement",
    "Sinks",
    "TableSource",
    "Unroutable",
    "retry_pause",
    "sink_name",
]
