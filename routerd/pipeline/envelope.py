"""The send request as it arrived, and the decision the pipeline made about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from routerd.config.model import Target

# The AMQP basic properties by their AMQP names, as `Envelope.properties` keys them
# (pamqp calls `type` `message_type`; the consumer and publisher translate).
AMQP_PROPERTIES = frozenset(
    {
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    }
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One send request: body bytes plus the AMQP properties and headers it came with.

    `properties` holds the basic properties other than headers, by their AMQP names
    (`content_type`, `message_id`, `priority`, `app_id`, `type`, ...), omitting unset ones.
    """

    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a request was rejected, in a form a customer's code can branch on."""

    code: str
    message: str
    pointer: str | None = None
    keyword: str | None = None

    def as_dict(self) -> dict[str, str]:
        d = {"code": self.code, "message": self.message}
        if self.pointer is not None:
            d["pointer"] = self.pointer
        if self.keyword is not None:
            d["keyword"] = self.keyword
        return d


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule `explain` tried: whether it matched and, per condition, what it saw."""

    rule: str
    matched: bool
    conditions: tuple[tuple[str, bool], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one send request goes and what it carries; the publisher sends exactly this."""

    target: Target
    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    properties: Mapping[str, Any]
    category: str | None = None
    rule: str | None = None
    schema_version: str | None = None
    reasons: tuple[Reason, ...] = ()
    # Filled only when asked for (explain); the hot path leaves it empty.
    trace: tuple[RuleTrace, ...] = ()

    @property
    def rejected(self) -> bool:
        return bool(self.reasons)
