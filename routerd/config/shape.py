"""The config's own JSON Schema (routes.schema.yaml) and readable messages for its errors.

jsonschema's messages are written for people who know JSON Schema; ops editing routes.yaml
get the key, the value, what was expected and, for a likely typo, the likely intent.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs
import yaml

from routerd.config.hints import did_you_mean
from routerd.config.model import Location, Problem
from routerd.config.paths import FieldPath, pointer
from routerd.config.source import Document

_JSON_TYPES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


@cache
def _config_schema_document() -> dict[str, Any]:
    text = resources.files("routerd.config").joinpath("routes.schema.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@cache
def config_schema() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(_config_schema_document())


@cache
def _fast_check() -> Any:
    # jsonschema-rs says "valid?" many times faster; the Python validator words the errors.
    return jsonschema_rs.validator_for(_config_schema_document(), validate_formats=False)


def check_shape(doc: Document) -> list[Problem]:
    """Every way the config breaks its own schema, each at the key or value concerned."""
    try:
        if _fast_check().is_valid(doc.data):
            return []
    except (ValueError, TypeError):
        pass  # a value jsonschema-rs cannot take (a YAML date): the reference says why
    problems = []
    for error in _leaves(config_schema().iter_errors(doc.data)):
        where = tuple(error.absolute_path)
        location, message = _explain(doc, error, where)
        shown = f"{pointer(where) or '/'}{_named(doc.data, where)}"
        problems.append(Problem(location, "error", f"{shown}: {message}", "config-schema"))
    return problems


def _named(data: Any, where: FieldPath) -> str:
    """ " (rule 'bulk')" for a path into a list entry that has a name: /rules/2 alone does not
    say which rule to look at."""
    if (
        len(where) >= 2
        and where[0] in ("rules", "schemas", "sources")
        and isinstance(where[1], int)
    ):
        entry = data[where[0]][where[1]]
        key = "queue" if where[0] == "sources" else "name"
        name = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(name, str):
            return f" ({where[0].removesuffix('s')} {name!r})"
    return ""


def _empty_sibling(value: Any) -> str:
    """ "; indented under 'when'?" when a mapping with an unknown key also has a key with
    nothing under it: the usual slip of indentation."""
    if isinstance(value, dict):
        empty = [str(k) for k, v in value.items() if v is None]
        if len(empty) == 1:
            return f"; indented under {empty[0]!r}?"
    return ""


def _leaves(
    errors: Iterator[jsonschema.ValidationError],
) -> Iterator[jsonschema.ValidationError]:
    # The config schema has no anyOf/oneOf of its own; should one appear, say what its best
    # branch wanted rather than "is not valid under any of the given schemas".
    for error in errors:
        yield jsonschema.exceptions.best_match(error.context) if error.context else error


def _explain(
    doc: Document, error: jsonschema.ValidationError, where: FieldPath
) -> tuple[Location, str]:
    value, schema = error.instance, error.schema if isinstance(error.schema, dict) else {}
    keyword = error.validator
    if keyword == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(str(k) for k in value if k not in allowed)
        if extra and allowed:
            return doc.locate_key((*where, extra[0])), (
                f"unknown key {extra[0]!r}; expected one of: {', '.join(allowed)}"
                + (did_you_mean(extra[0], allowed) or _empty_sibling(value))
            )
    expected: Any = error.validator_value
    if keyword == "required":
        names = [str(n) for n in expected]
        # One error per missing key, each naming it first ("'source' is a required ...").
        missing = next(
            (n for n in names if error.message.startswith(repr(n))),
            next((n for n in names if isinstance(value, dict) and n not in value), names[0]),
        )
        return doc.locate_key(where), f"missing required key {missing!r}"
    if keyword == "type":
        empty = " (nothing is indented under it)" if value is None else ""
        return doc.locate(where), f"expected {_types(expected)}, got {_show(value)}{empty}"
    if keyword == "enum":
        choices = [str(c) for c in expected]
        return doc.locate(where), (
            f"{_show(value)} is not one of: {', '.join(choices)}"
            + (did_you_mean(value, choices) if isinstance(value, str) else "")
        )
    if keyword == "const":
        return doc.locate(where), f"must be {expected!r}, got {_show(value)}"
    if keyword in ("minItems", "minProperties", "minLength") and expected == 1:
        return doc.locate_key(where), "must not be empty"
    if "propertyNames" in error.schema_path and isinstance(value, str):
        # jsonschema reports a bad key at its mapping; point at the key itself.
        return doc.locate_key((*where, value)), (
            f"{value!r} is not a valid name: use letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit"
        )
    if keyword == "pattern" and where and where[-1] == "file":
        return doc.locate(where), "a file path cannot contain a NUL character"
    if keyword == "pattern" and where and where[-1] in ("by", "field"):
        return doc.locate(where), (
            f"{_show(value)} is not a field path: write names joined by dots, like "
            f"recipients.to or to.0.email"
        )
    if keyword == "pattern":
        return doc.locate(where), (
            f"{_show(value)} is not a valid name: use letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit"
        )
    return doc.locate(where), error.message


def _types(expected: Any) -> str:
    names = expected if isinstance(expected, list) else [expected]
    return " or ".join(_JSON_TYPES.get(str(n), str(n)) for n in names)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}"
    return repr(value)
