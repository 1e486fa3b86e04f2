"""A rejected send request as a row: what the rejected queue carries, turned into a `Rejection`.

Pure: no broker, no database, no clock (the caller passes `now`). routerd publishes a
rejected request with its body byte for byte, its original headers, `x-rejected-reason`
(the first reason's code) and `x-rejected-reasons` (every reason: `code`, `message`, and
`pointer` / `keyword` when known); this module reads exactly that.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from routerd.api.customer import CUSTOMER_FIELDS
from routerd.config.model import SchemaVersionSource
from routerd.config.paths import MISSING, resolve
from routerd.pipeline.decide import REASON_HEADER, REASONS_HEADER, RULE_HEADER
from routerd.pipeline.envelope import Envelope, ReasonCode

# Bodies are kept up to this size; the size and hash always describe the whole body.
DEFAULT_BODY_LIMIT = 64 * 1024
# The keys a reason may carry, as `Reason.as_dict()` writes them.
REASON_KEYS = ("code", "message", "pointer", "keyword")
# What the shipped routes.yaml says: the header first, then the body's field.
DEFAULT_VERSION_SOURCE = SchemaVersionSource("x-schema-version", ("schema_version",))
# Text fields longer than this are cut: a reason message quotes request values.
MAX_TEXT = 4096


@dataclass(frozen=True, slots=True)
class Rejection:
    """One recorded rejection; `key` makes a redelivered one the same row."""

    key: str
    message_id: str | None
    customer_id: str | None
    schema_version: str | None
    reasons: tuple[Mapping[str, str], ...]
    rule: str | None
    recorded_at: datetime
    published_at: datetime | None
    body: bytes
    body_size: int
    body_sha256: str

    @property
    def reason(self) -> str:
        """The first reason's code, as `x-rejected-reason` says it."""
        return self.reasons[0]["code"]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r["code"] for r in self.reasons)

    @property
    def body_truncated(self) -> bool:
        return len(self.body) < self.body_size


def request_key(message_id: str | None, body_sha256: str) -> str:
    """The idempotency key: the API's message_id, else the body's hash."""
    return f"id:{message_id}" if message_id else f"sha256:{body_sha256}"


def rejection_of(
    envelope: Envelope,
    now: datetime,
    *,
    versions: SchemaVersionSource = DEFAULT_VERSION_SOURCE,
    body_limit: int = DEFAULT_BODY_LIMIT,
) -> Rejection:
    """The row for one rejected delivery; total: any headers and any body make a row."""
    body = envelope.body
    digest = hashlib.sha256(body).hexdigest()
    message_id = _text(envelope.properties.get("message_id"))
    request = _json_object(body)
    version = _version(envelope.headers, request, versions)
    return Rejection(
        key=request_key(message_id, digest),
        message_id=message_id,
        customer_id=_customer(request, version),
        schema_version=version,
        reasons=reasons_of(envelope.headers),
        rule=_text(envelope.headers.get(RULE_HEADER)),
        recorded_at=now.astimezone(UTC),
        published_at=_timestamp(envelope.properties.get("timestamp")),
        body=body[:body_limit],
        body_size=len(body),
        body_sha256=digest,
    )


def reasons_of(headers: Mapping[str, Any]) -> tuple[Mapping[str, str], ...]:
    """`x-rejected-reasons` as plain dicts of text, never empty.

    A message someone put on the rejected queue by hand may lack the header; it is still
    recorded, with the single reason its `x-rejected-reason` names, or `internal_error`.
    """
    reasons: list[Mapping[str, str]] = []
    raw = headers.get(REASONS_HEADER)
    if isinstance(raw, list | tuple):
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            reason = {}
            for key in REASON_KEYS:
                # "" is a value here: the pointer of the whole body.
                value = _text(item.get(key), empty=True)
                if value is not None:
                    reason[key] = value
            if reason.get("code"):
                reason.setdefault("message", "")
                reasons.append(reason)
    if reasons:
        return tuple(reasons)
    code = _text(headers.get(REASON_HEADER)) or str(ReasonCode.INTERNAL_ERROR)
    return ({"code": code, "message": f"the rejected message carried no {REASONS_HEADER}"},)


def body_json(body: bytes, size: int, sha256: str) -> dict[str, Any]:
    """The stored body as JSON: text when it is UTF-8, else base64."""
    try:
        content, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(body).decode("ascii"), "base64"
    return {
        "size": size,
        "sha256": sha256,
        "truncated": len(body) < size,
        "encoding": encoding,
        "content": content,
    }


def _json_object(body: bytes) -> Mapping[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _version(
    headers: Mapping[str, Any], request: Mapping[str, Any] | None, source: SchemaVersionSource
) -> str | None:
    # The same precedence as the pipeline: the header wins over the body's field.
    if source.header is not None and source.header in headers:
        return _scalar(headers[source.header])
    if request is not None and source.field is not None:
        value = resolve(request, source.field)
        return None if value is MISSING else _scalar(value)
    return None


def _customer(request: Mapping[str, Any] | None, version: str | None) -> str | None:
    path = CUSTOMER_FIELDS.get(version or "")
    node: Any = request
    for name in path or ():
        if not isinstance(node, Mapping):
            return None
        node = node.get(name)
    # Only a text id is a customer's: the API always writes the key's customer as text.
    return _text(node) if path and isinstance(node, str) else None


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return _text(value)


def _text(value: Any, *, empty: bool = False) -> str | None:
    """Header and property values as clean text: AMQP may hand over bytes; PostgreSQL
    refuses NUL in text, so it becomes U+FFFD rather than failing the whole batch."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str) or (value == "" and not empty):
        return None
    return value[:MAX_TEXT].replace("\x00", "\ufffd")


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def rejection_json(rejection: Rejection, row_id: int) -> dict[str, Any]:
    """A recorded rejection as `rejections list --format json` and the API show it
    (schemas/rejections/rejection.json)."""
    return {
        "id": row_id,
        "message_id": rejection.message_id,
        "customer_id": rejection.customer_id,
        "schema_version": rejection.schema_version,
        "reason": rejection.reason,
        "reasons": [dict(reason) for reason in rejection.reasons],
        "rule": rejection.rule,
        "recorded_at": _rfc3339(rejection.recorded_at),
        "published_at": _rfc3339(rejection.published_at) if rejection.published_at else None,
        "body": body_json(rejection.body, rejection.body_size, rejection.body_sha256),
    }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
