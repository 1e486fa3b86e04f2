"""`Analysis.verdicts` evaluates a condition once per group of versions that answer its
questions alike; the verdicts must be exactly those of evaluating every version on its own.

The schema versions here differ where `same` tells values apart and Python's `==` does not
(`1`, `1.0`, `true`, `"1"`, `null`), where a field is forbidden, required or optional, and
two of them are the same schema under another version, so groups form and split.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given

from routerd.config import coverage
from routerd.config.conditions import compile_condition
from routerd.config.coverage import Analysis, SchemaFacts, _exact
from routerd.config.fields import FieldOracle
from routerd.config.model import Problem
from routerd.config.paths import MISSING
from routerd.config.schemas import load_schema_set
from tests.unit.test_rule_index import SETTINGS, conditions, locate

ANY_FIELDS = {"type": "object"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "1": {
        "type": "object",
        "required": ["customer_id"],
        "properties": {
            "schema_version": {"const": 1},
            "customer_id": {"type": "string"},
            "stream": {"enum": ["big-1", "big-2"]},
        },
        "additionalProperties": False,
    },
    "2": {
        "type": "object",
        "required": ["stream"],
        "properties": {"stream": {"const": 1}, "n": {"type": "integer"}, "account": ANY_FIELDS},
    },
    "3": {"type": "object", "properties": {"stream": {"const": True}, "tags": {"type": "array"}}},
    "4": {
        "type": "object",
        "required": ["stream", "n"],
        "properties": {"stream": {"enum": [1.0, 2.5]}, "n": {"enum": [0, 1]}},
    },
    "5": {"$ref": "v1.yaml"},  # version 1's schema again
    "6": {
        "type": "object",
        "properties": {
            "stream": {"enum": ["1", None]},
            "account": {
                "type": "object",
                "properties": {"id": {"enum": [1, True]}},
                "additionalProperties": False,
            },
        },
    },
}


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    folder = tmp_path_factory.mktemp("schemas")
    files = []
    for version, schema in SCHEMAS.items():
        path = folder / f"v{version}.yaml"
        path.write_text(yaml.safe_dump(schema))
        files.append(path)
    problems: list[Problem] = []
    schema_set = load_schema_set(files, problems)
    assert not problems
    oracles = {v: FieldOracle(schema_set, (folder / f"v{v}.yaml").as_uri()) for v in SCHEMAS}
    return Analysis(list(SCHEMAS), oracles)


@SETTINGS
@given(raw=conditions)
def test_grouped_verdicts_are_each_versions_own(analysis: Analysis, raw: dict[str, Any]) -> None:
    problems: list[Problem] = []
    cond = compile_condition(raw, ("when",), locate, problems)
    assert cond is not None, problems
    assert analysis.verdicts(cond) == {v: analysis.verdict(cond, v) for v in analysis.versions}


def evaluations(
    analysis: Analysis, monkeypatch: pytest.MonkeyPatch, raw: dict[str, Any]
) -> list[str]:
    """The versions `verdicts` evaluated the condition `raw` on (each gets a recorder)."""
    evaluated: list[str] = []

    class Counting(coverage._Recorder):
        def __init__(self, facts: SchemaFacts) -> None:
            super().__init__(facts)
            evaluated.append(facts.version)

    monkeypatch.setattr(coverage, "_Recorder", Counting)
    problems: list[Problem] = []
    cond = compile_condition(raw, ("when",), locate, problems)
    assert cond is not None, problems
    assert analysis.verdicts(cond) == {v: analysis.verdict(cond, v) for v in analysis.versions}
    return evaluated


def test_versions_that_answer_alike_are_evaluated_once(
    analysis: Analysis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No schema forbids customer_id or lists its values: every version answers alike.
    assert evaluations(analysis, monkeypatch, {"field": "customer_id", "equals": "x"}) == ["1"]
    # Each restricts stream differently, but 5 is 1's schema again.
    by_stream = evaluations(analysis, monkeypatch, {"field": "stream", "equals": "big-1"})
    assert sorted(by_stream) == ["1", "2", "3", "4", "6"]
    # A condition on the version itself asks for it: one evaluation per version.
    by_version = evaluations(analysis, monkeypatch, {"schema_version": 1})
    assert sorted(by_version) == sorted(SCHEMAS)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0, False),
        ("1", 1),
        (None, MISSING),
        ([1], [True]),
        ({"a": 1}, {"a": 1.0}),
    ],
)
def test_exact_keys_tell_apart_what_conditions_tell_apart(a: Any, b: Any) -> None:
    assert _exact(a) != _exact(b)
    assert _exact(a) == _exact(a)
