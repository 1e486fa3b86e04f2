"""Decoding a send request's body: content type, size, UTF-8, JSON, nesting depth."""

from __future__ import annotations

from typing import Any

import orjson

from routerd.config.model import Limits
from routerd.pipeline.envelope import Envelope, Reason

JSON_TYPES = frozenset({"application/json", "text/json"})
IDENTITY_ENCODINGS = frozenset({"", "identity", "utf-8", "utf8"})


class DecodeError(Exception):
    def __init__(self, reason: Reason) -> None:
        self.reason = reason
        super().__init__(reason.message)


def decode(envelope: Envelope, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object, or DecodeError with the reason it cannot be one."""
    body = envelope.body
    if len(body) > limits.max_body_bytes:
        raise DecodeError(
            Reason("too_large", f"body is {len(body)} bytes, the limit is {limits.max_body_bytes}")
        )
    content_type = envelope.properties.get("content_type")
    if content_type:
        media_type = str(content_type).split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            raise DecodeError(
                Reason(
                    "unsupported_content_type",
                    f"content type {content_type!r} is not supported; send application/json",
                )
            )
    encoding = envelope.properties.get("content_encoding")
    if encoding and str(encoding).lower() not in IDENTITY_ENCODINGS:
        raise DecodeError(
            Reason(
                "unsupported_content_encoding",
                f"content encoding {encoding!r} is not supported; send plain UTF-8 JSON",
            )
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(_why_not_json(body, exc)) from None
    if not isinstance(data, dict):
        raise DecodeError(
            Reason("not_an_object", f"body is a JSON {_json_type(data)}, expected an object")
        )
    # Counting brackets is a cheap upper bound on depth; only walk when it could be too deep.
    if body.count(b"{") + body.count(b"[") > limits.max_depth:
        depth = _depth(data)
        if depth > limits.max_depth:
            raise DecodeError(
                Reason(
                    "too_deep", f"body nests {depth} levels deep, the limit is {limits.max_depth}"
                )
            )
    return data


def _why_not_json(body: bytes, exc: orjson.JSONDecodeError) -> Reason:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        return Reason("invalid_utf8", f"body is not UTF-8: invalid byte at offset {err.start}")
    if not body.strip():
        return Reason("invalid_json", "body is empty; expected a JSON object")
    if "recursion" in exc.msg:
        return Reason("too_deep", "body nests too deep to decode")
    return Reason(
        "invalid_json", f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    )


def _depth(data: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


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
