"""Schemas behave as the JSON Schema standard says: references, regex dialect, odd names.

Each case is one the official test suite showed routerd getting wrong (see
scripts/jsonschema_conformance.py, which runs the whole suite).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from routerd.config.loader import load
from routerd.config.model import ConfigError
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope
from tests.unit.test_decide import small_table
from tests.unit.test_hostile_regex import regex_rule_table
from tests.unit.test_loader import CONFIG, SCHEMA, config, problems_of

D2020 = "https://json-schema.org/draft/2020-12/schema"


def loads(tmp_path: Path, schema: dict[str, Any], name: str = "v1.json") -> Any:
    """The configured schema's `is_valid`, loaded through the loader from a JSON file."""
    text = CONFIG.replace("schemas/v1.yaml", f"schemas/{name}")
    path = config(tmp_path, text, **{f"schemas/{name}": json.dumps(schema)})
    return load(path).schemas["1"].is_valid


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        # A relative `$id` inside the schema is the base its `$ref`s resolve against.
        (
            {
                "$id": "http://example.com/root.json",
                "$defs": {"a": {"$id": "nested/a.json", "type": "integer"}},
                "properties": {"x": {"$ref": "nested/a.json"}},
            },
            {"x": 1},
            {"x": "1"},
        ),
        # A URN `$id`, with a pointer into it.
        (
            {
                "$id": "urn:uuid:deadbeef-1234-ffff-ffff-4321feebdaed",
                "$defs": {"bar": {"type": "string"}},
                "properties": {
                    "x": {"$ref": "urn:uuid:deadbeef-1234-ffff-ffff-4321feebdaed#/$defs/bar"}
                },
            },
            {"x": "a"},
            {"x": 1},
        ),
        # `$anchor` and `$dynamicAnchor`.
        (
            {
                "$defs": {"a": {"$anchor": "pos", "minimum": 0}},
                "properties": {"x": {"$ref": "#pos"}},
            },
            {"x": 1},
            {"x": -1},
        ),
        (
            {
                "$dynamicAnchor": "node",
                "$defs": {"n": {"$dynamicAnchor": "items", "type": "string"}},
                "properties": {"x": {"$dynamicRef": "#items"}},
            },
            {"x": "a"},
            {"x": 1},
        ),
        # A standard meta-schema, which needs no network.
        ({"properties": {"x": {"$ref": D2020}}}, {"x": {"type": "string"}}, {"x": {"type": 1}}),
    ],
)
def test_references_resolve_as_the_standard_says(
    tmp_path: Path, schema: dict[str, Any], good: Any, bad: Any
) -> None:
    is_valid = loads(tmp_path, {"$schema": D2020, **schema})
    assert is_valid(good)
    assert not is_valid(bad)


def test_a_reference_to_nowhere_is_still_refused(tmp_path: Path) -> None:
    schema = {"$id": "http://example.com/root.json", "properties": {"x": {"$ref": "#nope"}}}
    text = CONFIG.replace("schemas/v1.yaml", "schemas/v1.json")
    path = config(tmp_path, text, **{"schemas/v1.json": json.dumps(schema)})
    ((_, _, code, message),) = problems_of(path)
    assert code == "schema-ref-unresolved"
    assert message == (
        "$ref '#nope' does not resolve: no `$anchor` or `$dynamicAnchor` 'nope' in "
        "http://example.com/root.json"
    )


def test_a_json_schema_file_is_read_as_json(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-8 as text, and the meta-schema refused the schema.
    is_valid = loads(tmp_path, {"$schema": D2020, "properties": {"x": {"multipleOf": 1e-8}}})
    assert is_valid({"x": 0.00000003})
    assert not is_valid({"x": 0.000000035})


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^abc$", "abc\n", False),  # `$` is the end of the text, not before a final newline
        (r"^\d+$", "১২৩", False),  # `\d` is ASCII digits
        (r"^\w+$", "été", False),  # `\w` is ASCII word characters
        (r"^\s$", "\ufeff", True),  # `\s` includes the byte order mark
        (r"^\p{Letter}+$", "été", True),  # Unicode properties
    ],
)
def test_one_regex_dialect_in_pattern_pattern_properties_and_rules(
    tmp_path: Path, pattern: str, text: str, matches: bool
) -> None:
    in_pattern = {"properties": {"p": {"type": "string", "pattern": pattern}}}
    assert loads(tmp_path, in_pattern)({"p": text}) is matches
    in_names = {"patternProperties": {pattern: {"const": "named"}}}
    assert loads(tmp_path, in_names, "v2.json")({text: "other"}) is not matches
    table = regex_rule_table(tmp_path, "name", pattern, schema={"type": "object"})
    decision = decide(table, Envelope(orjson.dumps({"v": 1, "name": text})))
    assert decision.headers["x-category"] == ("hit" if matches else "miss")


def test_an_empty_property_name_is_rejected_with_its_violations(tmp_path: Path) -> None:
    # The error listing for such a body once fell back to a validator that raised on the
    # schema's `\p{...}` regex: the request was rejected as `internal_error`.
    schema = {
        "$schema": D2020,
        "type": "object",
        "properties": {"v": {"const": 1}, "": {"type": "integer"}, "a/b": {"type": "string"}},
        "patternProperties": {r"^\p{Lu}": {"type": "string"}},
    }
    table = small_table(tmp_path, schema=schema)
    body = orjson.dumps({"v": 1, "": "x", "a/b": 2, "Émile": 3})
    decision = decide(table, Envelope(body))
    assert decision.rejected
    assert sorted((r.code, r.pointer, r.keyword) for r in decision.reasons) == [
        ("schema_violation", "/", "type"),
        ("schema_violation", "/a~1b", "type"),
        ("schema_violation", "/Émile", "type"),
    ]


def test_yaml_and_json_schemas_cannot_smuggle_non_json_values(tmp_path: Path) -> None:
    path = config(tmp_path, schema=SCHEMA.replace("{type: string}", "{maximum: .nan}"))
    with pytest.raises(ConfigError, match="nan is a YAML float, which JSON cannot hold"):
        load(path)
