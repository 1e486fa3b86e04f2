"""Decoding a send request: the size of its headers; its body's content type, size, UTF-8,
JSON, nesting depth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from routerd.config.model import Limits
from routerd.pipeline.envelope import Envelope, Reason, ReasonCode

JSON_TYPES = frozenset({"application/json", "text/json"})
# A request's headers travel on with its decision, rejected ones with routerd's reasons
# added, and the broker takes a message's properties in one frame only (RabbitMQ's
# frame_max: 128 KiB): one byte over, and it closes the whole connection, every request in
# flight with it, again at each redelivery. Half of it for the request's own headers
# leaves room for routerd's.
MAX_HEADER_BYTES = 64 * 1024
IDENTITY_ENCODINGS = frozenset({"", "identity", "utf-8", "utf8"})


class DecodeError(Exception):
    def __init__(self, reason: Reason) -> None:
        self.reason = reason
        super().__init__(reason.message)


def decode(envelope: Envelope, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object, or DecodeError with the reason it cannot be one."""
    size = header_bytes(envelope.headers)
    if size > MAX_HEADER_BYTES:
        raise DecodeError(
            Reason(
                ReasonCode.TOO_LARGE,
                f"headers are about {size} bytes, the limit is {MAX_HEADER_BYTES}; "
                f"send large data in the body",
            )
        )
    body = envelope.body
    if len(body) > limits.max_body_bytes:
        raise DecodeError(
            Reason(
                ReasonCode.TOO_LARGE,
                f"body is {len(body)} bytes, the limit is {limits.max_body_bytes}",
            )
        )
    properties = envelope.properties
    content_type = properties.get("content_type")
    # Most requests say exactly "application/json"; only the others are worth parsing.
    if content_type and content_type != "application/json":
        media_type = _text(content_type).split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            raise DecodeError(
                Reason(
                    ReasonCode.UNSUPPORTED_CONTENT_TYPE,
                    f"content type {_text(content_type)[:100]!r} is not supported; "
                    f"send application/json",
                )
            )
    encoding = properties.get("content_encoding")
    if encoding and _text(encoding).lower() not in IDENTITY_ENCODINGS:
        raise DecodeError(
            Reason(
                ReasonCode.UNSUPPORTED_CONTENT_ENCODING,
                f"content encoding {_text(encoding)[:100]!r} is not supported; "
                f"send plain UTF-8 JSON",
            )
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(_why_not_json(body, exc)) from None
    if type(data) is not dict:
        raise DecodeError(
            Reason(
                ReasonCode.NOT_AN_OBJECT, f"body is a JSON {_json_type(data)}, expected an object"
            )
        )
    # Counting brackets is a cheap upper bound on depth (brackets inside strings count too);
    # only walk the decoded value when that bound could be over the limit.
    if body.count(b"{") + body.count(b"[") > limits.max_depth and _deeper_than(
        data, limits.max_depth
    ):
        raise DecodeError(
            Reason(
                ReasonCode.TOO_DEEP,
                f"body nests deeper than the limit of {limits.max_depth} levels",
            )
        )
    return data


def header_bytes(headers: Mapping[str, Any]) -> int:
    """About how many bytes a header table takes on the wire (AMQP 0-9-1 field table
    encoding: a key's length byte and text, a value's type byte and data), counted without
    recursion: a table may nest as deep as a client cared to."""
    total = 0
    stack: list[Any] = [headers]
    while stack:
        value = stack.pop()
        # Text and dicts first, without the ABC check: this runs for every request and
        # decision, and `isinstance(value, Mapping)` costs more than the counting.
        if isinstance(value, str):
            total += 4 + _utf8_length(value)
        elif type(value) is dict or isinstance(value, Mapping):
            total += 4
            for key, item in value.items():
                total += 2 + _utf8_length(key if type(key) is str else str(key))
                stack.append(item)
        elif isinstance(value, list | tuple):
            total += 4 + len(value)
            stack.extend(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            total += 4 + len(value)
        else:
            # Numbers, booleans, timestamps, decimals, void: at most 8 bytes each.
            total += 8
    return total


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def _why_not_json(body: bytes, exc: orjson.JSONDecodeError) -> Reason:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        return Reason(
            ReasonCode.INVALID_UTF8, f"body is not UTF-8: invalid byte at offset {err.start}"
        )
    if not body.strip():
        return Reason(ReasonCode.INVALID_JSON, "body is empty; expected a JSON object")
    # orjson stops at 1024 levels, before our own check could run.
    if "depth limit" in exc.msg or "recursion" in exc.msg:
        return Reason(ReasonCode.TOO_DEEP, "body nests too deep to decode")
    return Reason(
        ReasonCode.INVALID_JSON,
        f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
    )


def _deeper_than(data: dict[str, Any], limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels (the top object is level 1).

    Level by level and stopping at the limit: a long flat list of recipients costs one
    pass over its items, and a deep body never more than `limit` levels of work.
    """
    level: list[Any] = [data]
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


def _text(value: Any) -> str:
    # AMQP short strings normally arrive as str, but a client may hand over bytes.
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    return str(value)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
