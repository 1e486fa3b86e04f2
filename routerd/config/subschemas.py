"""Walking a JSON Schema: its subschemas, `$ref`s and regexes, and values JSON cannot hold.

Only places that hold schemas are walked, never data (`enum`, `const`, `examples`, `default`)
nor names (the keys of `properties`), so a property called `$ref` is not taken for a reference.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

PathKey = tuple[str | int, ...]

_ONE_SCHEMA = (
    "additionalItems",
    "additionalProperties",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def iter_subschemas(node: Any, path: PathKey) -> Iterator[tuple[PathKey, dict[str, Any]]]:
    """Every subschema of a schema with its path, skipping data (`enum`, `examples`, ...)
    and names (the keys of `properties`), so a property named `$ref` is not a reference."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key in _ONE_SCHEMA:
        if isinstance(node.get(key), dict):
            yield from iter_subschemas(node[key], (*path, key))
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, item in enumerate(node[key]):
                yield from iter_subschemas(item, (*path, key, i))
    for key in (*_SCHEMA_MAPS, "dependencies"):
        if isinstance(node.get(key), dict):
            for name, item in node[key].items():
                yield from iter_subschemas(item, (*path, key, name))


def iter_refs(node: Any, path: PathKey) -> Iterator[tuple[PathKey, str]]:
    for where, schema in iter_subschemas(node, path):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            yield where, ref


def patterns(data: Any) -> Iterator[tuple[PathKey, str]]:
    for path, schema in iter_subschemas(data, ()):
        if isinstance(schema.get("pattern"), str):
            yield (*path, "pattern"), schema["pattern"]
        if isinstance(schema.get("patternProperties"), dict):
            for regex in schema["patternProperties"]:
                if isinstance(regex, str):
                    yield (*path, "patternProperties", regex), regex


def non_json_values(node: Any, path: PathKey) -> Iterator[tuple[PathKey, Any]]:
    # YAML turns unquoted 2024-01-01 into a date and !!binary into bytes; JSON has neither,
    # and the fast validator refuses them.
    if isinstance(node, dict):
        for key, value in node.items():
            yield from non_json_values(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from non_json_values(value, (*path, i))
    elif isinstance(node, datetime.date | bytes | set):
        yield path, node
