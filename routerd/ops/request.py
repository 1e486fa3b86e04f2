"""Building a send request from command-line input: a body, headers and AMQP properties.

`explain` builds one from a file and `-H`/`-P` options, `test` from a route test case; both
start from the same default properties and accept the same names and value forms.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from routerd.pipeline.envelope import AMQP_PROPERTIES

DEFAULT_PROPERTIES: Mapping[str, Any] = {"content_type": "application/json"}
# AMQP basic properties a send request can carry (headers are given apart).
PROPERTY_NAMES = AMQP_PROPERTIES
_INTEGER_PROPERTIES = frozenset({"delivery_mode", "priority", "timestamp"})


class UsageError(Exception):
    """A command-line value that cannot be used; the message says which and why."""


def parse_assignments(items: Sequence[str], what: str) -> dict[str, Any]:
    """`NAME=VALUE` gives text, `NAME:=VALUE` gives a JSON value (`x-retries:=3`)."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or name == ":":
            raise UsageError(f"{what} {item!r} must be written NAME=VALUE or NAME:=JSON")
        if name.endswith(":"):
            name = name[:-1]
            try:
                parsed[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{what} {name}: {value!r} is not JSON ({exc.msg})") from None
        else:
            parsed[name] = value
    return parsed


def parse_properties(items: Sequence[str]) -> dict[str, Any]:
    """AMQP properties over the defaults; an empty value removes one (`content_type=`)."""
    properties = dict(DEFAULT_PROPERTIES)
    for name, value in parse_assignments(items, "property").items():
        if name not in PROPERTY_NAMES:
            known = ", ".join(sorted(PROPERTY_NAMES))
            raise UsageError(f"unknown AMQP property {name!r} (properties: {known})")
        if value == "":
            properties.pop(name, None)
        elif name in _INTEGER_PROPERTIES and isinstance(value, str):
            try:
                properties[name] = int(value)
            except ValueError:
                raise UsageError(f"property {name} takes a whole number, got {value!r}") from None
        else:
            properties[name] = value
    return properties


def read_body(source: str, stdin: BinaryIO | None = None) -> bytes:
    """The bytes of a request body from a file, or from standard input for `-`."""
    if source == "-":
        return (stdin or sys.stdin.buffer).read()
    return Path(source).read_bytes()
