"""Why the broker did not confirm a publish: the two errors a publisher raises, and their causes.

A publisher (today `routerd.amqp.publisher`) turns whatever its client library reports into
one of these, so the request handler decides ack, requeue or rejected without knowing the
broker client: `Unroutable` when a mandatory publish came back (no queue is bound for the
routing key), `PublishFailed` when the broker did not take it (nack, timeout, closed
channel, or an error before the frame was sent).
"""

from __future__ import annotations

import enum


class PublishFailure(enum.Enum):
    """The cause of a publish the broker did not confirm; the value is the metric label."""

    # basic.return of a mandatory publish: no queue is bound for the routing key.
    UNROUTABLE = "unroutable"
    # basic.nack: the broker refused the message (a queue limit, an internal error).
    NACK = "nack"
    # No confirm within the publish timeout.
    TIMEOUT = "timeout"
    # The channel or connection closed before the confirm came; the session is ending.
    CHANNEL_CLOSED = "channel_closed"
    # The publish failed before its frame was sent, or routerd itself failed.
    ERROR = "error"


class NotConfirmed(Exception):
    """A publish the broker did not confirm; `cause` says why."""

    cause: PublishFailure

    def __init__(self, exchange: str, routing_key: str) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        super().__init__(str(self))


class Unroutable(NotConfirmed):
    """The broker returned a mandatory publish: no queue is bound for its routing key."""

    cause = PublishFailure.UNROUTABLE

    def __init__(self, exchange: str, routing_key: str, reply: str) -> None:
        self.reply = reply
        super().__init__(exchange, routing_key)

    def __str__(self) -> str:
        where = f"exchange {self.exchange!r}" if self.exchange else "the default exchange"
        return f"{where} has no queue bound for routing key {self.routing_key!r} ({self.reply})"


class PublishFailed(NotConfirmed):
    """The broker did not take a publish: nack, timeout, closed channel, or an error."""

    def __init__(
        self, cause: PublishFailure, exchange: str, routing_key: str, detail: str = ""
    ) -> None:
        if cause is PublishFailure.UNROUTABLE:
            # A returned publish goes to rejected, a failed one is retried: the two must
            # not be confused, so a return has its own class.
            raise ValueError("a returned publish is Unroutable, not PublishFailed")
        self.cause = cause
        self.detail = detail
        super().__init__(exchange, routing_key)

    def __str__(self) -> str:
        where = f"{self.exchange or '(default exchange)'}/{self.routing_key}"
        text = f"publish to {where} failed: {self.cause.value}"
        return f"{text} ({self.detail})" if self.detail else text
