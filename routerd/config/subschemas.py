"""Walking a JSON Schema: its subschemas, `$ref`s and regexes, and values JSON cannot hold.

Only places that hold schemas are walked, never data (`enum`, `const`, `examples`, `default`)
nor names (the keys of `properties`), so a property called `$ref` is not taken for a reference.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import referencing.jsonschema
from referencing import Specification

from routerd.config.paths import FieldPath

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


def iter_subschemas(node: Any, path: FieldPath) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    """Every subschema of a schema with its path, skipping data (`enum`, `examples`, ...)
    and names (the keys of `properties`), so a property named `$ref` is not a reference."""
    if not isinstance(node, dict):
        return
    yield path, node
    for child_path, child in _children(node, path):
        yield from iter_subschemas(child, child_path)


def iter_refs(node: Any, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    for where, schema in iter_subschemas(node, path):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            yield where, ref


@dataclass(frozen=True, slots=True)
class ScopedRef:
    """A `$ref` or `$dynamicRef`, with the base URI it resolves against."""

    path: FieldPath  # of the subschema that holds it
    keyword: str
    ref: str
    base: str
    # urljoin(base, ref), worked out once: the loader and lint each ask it of every `$ref`.
    target: str


def iter_scoped_refs(
    node: Any, path: FieldPath, base: str, specification: Specification[Any]
) -> Iterator[ScopedRef]:
    """Every reference in a schema with the base URI in force where it stands: an `$id`
    (`id` in draft 4) starts a new base for everything under it, as the draft says."""
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$schema"), str):
        specification = referencing.jsonschema.specification_with(
            node["$schema"], default=specification
        )
    declared = specification.id_of(node)
    if declared is not None:
        base = urljoin(base, declared)
    for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
        if isinstance(node.get(keyword), str):
            ref = node[keyword]
            yield ScopedRef(path, keyword, ref, base, urljoin(base, ref))
    for child_path, child in _children(node, path):
        yield from iter_scoped_refs(child, child_path, base, specification)


def _children(node: dict[str, Any], path: FieldPath) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    for key in _ONE_SCHEMA:
        if isinstance(node.get(key), dict):
            yield (*path, key), node[key]
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, item in enumerate(node[key]):
                if isinstance(item, dict):
                    yield (*path, key, i), item
    for key in (*_SCHEMA_MAPS, "dependencies"):
        if isinstance(node.get(key), dict):
            for name, item in node[key].items():
                if isinstance(item, dict):
                    yield (*path, key, name), item


def patterns(data: Any) -> Iterator[tuple[FieldPath, str]]:
    for path, schema in iter_subschemas(data, ()):
        if isinstance(schema.get("pattern"), str):
            yield (*path, "pattern"), schema["pattern"]
        if isinstance(schema.get("patternProperties"), dict):
            for regex in schema["patternProperties"]:
                if isinstance(regex, str):
                    yield (*path, "patternProperties", regex), regex


def non_json_values(node: Any, path: FieldPath) -> Iterator[tuple[FieldPath, Any]]:
    # YAML's explicit tags (!!timestamp, !!binary, !!set) and `.inf`/`.nan` make values
    # that JSON cannot hold, and the validator refuses them.
    if isinstance(node, dict):
        for key, value in node.items():
            yield from non_json_values(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from non_json_values(value, (*path, i))
    elif isinstance(node, datetime.date | bytes | set) or (
        isinstance(node, float) and not math.isfinite(node)
    ):
        yield path, node
