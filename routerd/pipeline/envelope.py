"""The send request as it arrived, and the decision the pipeline made about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from routerd.config.model import Target, TraceNode

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


class Stage(StrEnum):
    """Where in the life of a send request a rejection was decided."""

    DECODE = "decode"
    VALIDATE = "validate"
    CATEGORIZE = "categorize"
    RENDER = "render"
    DELIVER = "deliver"
    ANY = "any"


class ReasonCode(StrEnum):
    """Why a request was rejected: the `code` of `x-rejected-reasons`, a customer's code
    branches on it. The values are a public contract: add codes, never rename one."""

    TOO_LARGE = "too_large"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    TOO_DEEP = "too_deep"
    MISSING_SCHEMA_VERSION = "missing_schema_version"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_MANY_ERRORS = "too_many_errors"
    UNMATCHED = "unmatched"
    ROUTING_KEY_UNRENDERABLE = "routing_key_unrenderable"
    UNROUTABLE = "unroutable"
    REDELIVERY_LIMIT = "redelivery_limit"
    INTERNAL_ERROR = "internal_error"

    @property
    def stage(self) -> Stage:
        return _STAGES[self]


_STAGES: Mapping[ReasonCode, Stage] = {
    **dict.fromkeys(
        (
            ReasonCode.TOO_LARGE,
            ReasonCode.UNSUPPORTED_CONTENT_TYPE,
            ReasonCode.UNSUPPORTED_CONTENT_ENCODING,
            ReasonCode.INVALID_UTF8,
            ReasonCode.INVALID_JSON,
            ReasonCode.NOT_AN_OBJECT,
            ReasonCode.TOO_DEEP,
        ),
        Stage.DECODE,
    ),
    **dict.fromkeys(
        (
            ReasonCode.MISSING_SCHEMA_VERSION,
            ReasonCode.UNKNOWN_SCHEMA_VERSION,
            ReasonCode.SCHEMA_VIOLATION,
            ReasonCode.TOO_MANY_ERRORS,
        ),
        Stage.VALIDATE,
    ),
    ReasonCode.UNMATCHED: Stage.CATEGORIZE,
    ReasonCode.ROUTING_KEY_UNRENDERABLE: Stage.RENDER,
    ReasonCode.UNROUTABLE: Stage.DELIVER,
    ReasonCode.REDELIVERY_LIMIT: Stage.DELIVER,
    ReasonCode.INTERNAL_ERROR: Stage.ANY,
}


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

    code: ReasonCode
    message: str
    pointer: str | None = None
    keyword: str | None = None

    def as_dict(self) -> dict[str, str]:
        d = {"code": str(self.code), "message": self.message}
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
    # Each test's description and answer, in evaluation order: the tree's leaves.
    conditions: tuple[tuple[str, bool], ...]
    # The whole evaluated condition, with the value each test saw. Left out of equality:
    # `conditions` already says what matched, and a trace written by hand has no tree.
    tree: TraceNode | None = field(default=None, compare=False)

    @classmethod
    def of(cls, rule: str, tree: TraceNode) -> RuleTrace:
        leaves = tuple((node.description, node.matched) for node in tree.leaves())
        return cls(rule, tree.matched, leaves, tree)


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
