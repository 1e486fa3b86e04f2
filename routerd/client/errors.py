"""Every error `routerd.client` raises, under one base, `PublishError`.

A caller that only needs "did the broker take it" catches `PublishError`; one that answers
its own caller (an HTTP API: 400, 503, ...) tells them apart:

- `RequestInvalid`: routerd would reject the request; `reasons` are the very reasons it
  would publish to rejected. Nothing was published. Retrying does not help.
- `Unroutable`: the broker returned the publish, no queue is bound for it (the source
  queue does not exist). Nothing was stored.
- `NotConfirmed`: the broker refused the publish (nack) or did not confirm it in time; it
  may or may not have been stored, so a retry may deliver it twice (same message_id).
- `BrokerUnavailable`: no connection to the broker within the timeout. Nothing was sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from routerd.config.model import ConfigError
from routerd.pipeline.envelope import Reason

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "NotConfirmed",
    "NotConfirmedCause",
    "PublishError",
    "RequestInvalid",
    "Unroutable",
]


class PublishError(Exception):
    """A send request the broker did not confirm; the subclass says why."""


class RequestInvalid(PublishError):
    """routerd would reject this request; nothing was published.

    `reasons` are the `Reason` objects routerd's pipeline gives (`decide`), each with a
    `code`, a `message` and, for schema violations, the JSON `pointer` and `keyword`.
    """

    def __init__(self, message_id: str | None, reasons: Iterable[Reason]) -> None:
        self.message_id = message_id
        self.reasons = tuple(reasons)
        super().__init__(str(self))

    def as_dicts(self) -> list[dict[str, str]]:
        """The reasons as routerd writes them to the `x-rejected-reasons` header."""
        return [reason.as_dict() for reason in self.reasons]

    def __str__(self) -> str:
        count = len(self.reasons)
        shown = "; ".join(_reason_text(reason) for reason in self.reasons[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        which = f"request {self.message_id}" if self.message_id else "request"
        return f"{which} is invalid, routerd would reject it: {shown}{more}"


class Unroutable(PublishError):
    """The broker returned the publish: no queue is bound for it (is the source declared?)."""

    def __init__(self, message_id: str, queue: str, reply: str) -> None:
        self.message_id = message_id
        self.queue = queue
        self.reply = reply
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"request {self.message_id} was returned by the broker ({self.reply}): "
            f"no queue {self.queue!r} to take it; start routerd serve (it declares its "
            f"source) or declare the queue"
        )


class NotConfirmedCause(StrEnum):
    """Why the broker did not confirm a publish."""

    # basic.nack: the broker refused it (a queue length limit, a disk or memory alarm, ...).
    NACK = "nack"
    # No confirm within the publish timeout.
    TIMEOUT = "timeout"
    # The connection closed before the confirm, and the retry on a new one failed too.
    CHANNEL_CLOSED = "channel_closed"
    # The publish failed before its frame was sent.
    ERROR = "error"


class NotConfirmed(PublishError):
    """The broker did not confirm the publish; it may still have stored it."""

    def __init__(self, message_id: str, cause: NotConfirmedCause, detail: str = "") -> None:
        self.message_id = message_id
        self.cause = cause
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"request {self.message_id} was not confirmed by the broker: {self.cause.value}"
        text = f"{text} ({self.detail})" if self.detail else text
        return f"{text}; it may have been stored, a retry may deliver it twice"


class BrokerUnavailable(PublishError):
    """No connection to the broker within the timeout; nothing was sent."""

    def __init__(self, url: str, detail: str) -> None:
        # Already redacted by the caller: never shows a password.
        self.url = url
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"cannot reach the broker at {self.url}: {self.detail}"


def _reason_text(reason: Reason) -> str:
    if reason.pointer is None:
        where = ""
    else:
        # "" is the JSON pointer of the whole body; "/" would name a key "".
        where = f" at {reason.pointer}" if reason.pointer else " at the top level"
    return f"{reason.code.value}{where}: {reason.message}"
