"""A send request made ready to publish: message_id, JSON body, properties, headers; and,
with a route table, routerd's own verdict on it before anything is sent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from routerd.client.errors import RequestInvalid
from routerd.config.model import RouteTable
from routerd.config.paths import MISSING, FieldPath, resolve
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope, Reason, ReasonCode
from routerd.pipeline.sources import source_queue

CONTENT_TYPE = "application/json"
# Without a route table: the names the shipped config uses.
DEFAULT_VERSION_HEADER = "x-schema-version"
DEFAULT_VERSION_FIELD: FieldPath = ("schema_version",)
MESSAGE_ID = "message_id"


@dataclass(frozen=True, slots=True)
class Prepared:
    """What goes on the wire for one send request."""

    message_id: str
    body: bytes
    headers: Mapping[str, Any]
    properties: Mapping[str, Any]
    # The source queue the route table puts it on; None without a table.
    queue: str | None = None


def prepare(
    request: Mapping[str, Any],
    table: RouteTable | None,
    *,
    headers: Mapping[str, Any] | None = None,
    app_id: str | None = None,
    check: bool = True,
) -> Prepared:
    """The request ready to publish, and the table's source for it; raises RequestInvalid
    when `table` rejects it (with `check=False` such a request goes to the catch-all source,
    where routerd rejects it with its reasons).

    The caller's mapping is not changed: a missing message_id is filled in a copy.
    """
    if not isinstance(request, Mapping):
        raise TypeError(f"a send request is a mapping (the JSON body), got {type(request)!r}")
    message_id = request.get(MESSAGE_ID)
    body_fields = dict(request)
    if not isinstance(message_id, str) or not message_id:
        if message_id not in (None, ""):
            # A message_id of another type is the schema's to reject, with its own reason.
            message_id = None
        else:
            message_id = uuid.uuid4().hex
            body_fields[MESSAGE_ID] = message_id
    try:
        body = orjson.dumps(body_fields)
    except TypeError as exc:
        reason = Reason(ReasonCode.INVALID_JSON, f"the request cannot be written as JSON: {exc}")
        raise RequestInvalid(None, (reason,)) from None
    properties: dict[str, Any] = {"content_type": CONTENT_TYPE, "delivery_mode": 2}
    if message_id is not None:
        properties["message_id"] = message_id
    if app_id is not None:
        properties["app_id"] = app_id
    all_headers = dict(headers or {})
    header, field = _version_source(table)
    version = _version_text(resolve(body_fields, field)) if field is not None else None
    if header is not None and version is not None:
        all_headers[header] = version
    queue = None
    if table is not None:
        envelope = Envelope(body, all_headers, properties)
        decision = decide(table, envelope)
        if decision.rejected and check:
            raise RequestInvalid(message_id, decision.reasons)
        queue = source_queue(table, envelope, decision)
    if message_id is None:
        # Only reached without a table, or with schemas that let any message_id through.
        reason = Reason(
            ReasonCode.SCHEMA_VIOLATION,
            f"message_id must be text, got {request.get(MESSAGE_ID)!r:.60}",
            pointer="/message_id",
            keyword="type",
        )
        raise RequestInvalid(None, (reason,))
    return Prepared(message_id, body, all_headers, properties, queue)


def _version_source(table: RouteTable | None) -> tuple[str | None, FieldPath | None]:
    if table is None:
        return DEFAULT_VERSION_HEADER, DEFAULT_VERSION_FIELD
    return table.schema_version.header, table.schema_version.field


def _version_text(value: Any) -> str | None:
    """The version as header text, only when the body states it unambiguously.

    Anything else is left out, so that routerd reads the body field and gives its own
    reason for it (the header would win over the field and hide the problem).
    """
    if value is MISSING or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None
