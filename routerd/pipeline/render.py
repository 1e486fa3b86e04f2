"""Rendering a target's routing key: literal text, request fields, and the partition."""

from __future__ import annotations

import zlib
from typing import Any

from routerd.config.model import Target
from routerd.config.paths import MISSING, FieldPath, resolve

MAX_ROUTING_KEY_BYTES = 255


class RenderError(Exception):
    pass


def partition_of(value: str, count: int) -> int:
    """Stable across processes and languages: crc32 of the UTF-8 text, modulo count."""
    return zlib.crc32(value.encode("utf-8")) % count


def render_routing_key(
    target: Target, body: dict[str, Any], category: str, rule: str, version: str
) -> str:
    out: list[str] = []
    for part in target.routing_key.parts:
        if isinstance(part, str):
            out.append(part)
        elif part == ("$partition",):
            assert target.partition is not None
            out.append(str(partition_of(_field(body, target.partition.by), target.partition.count)))
        elif part == ("$category",):
            out.append(category)
        elif part == ("$rule",):
            out.append(rule)
        elif part == ("$schema_version",):
            out.append(version)
        else:
            out.append(_field(body, part))
    key = "".join(out)
    if len(key.encode("utf-8")) > MAX_ROUTING_KEY_BYTES:
        raise RenderError(f"routing key for target {target.name!r} is longer than 255 bytes")
    return key


def _field(body: dict[str, Any], path: FieldPath) -> str:
    value = resolve(body, path)
    name = ".".join(map(str, path))
    if value is MISSING or value is None:
        raise RenderError(f"field {name} is needed for the routing key but is missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RenderError(
            f"field {name} must be text or a whole number to be used in a routing key"
        )
    return str(value)
