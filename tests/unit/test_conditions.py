"""Rule conditions: every operator, strict typing, missing vs null, the errors, each node
class, and the operator registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from routerd.config.conditions import compile_condition
from routerd.config.model import (
    Condition,
    ConditionKind,
    Location,
    MatchContext,
    Problem,
    Seen,
    TraceNode,
)
from routerd.config.nodes import AllOf, Always, AnyOf, Leaf, Not, SchemaVersionIn
from routerd.config.operators import OPERATORS, Operator
from routerd.config.paths import MISSING

FILE = Path("routes.yaml")


def locate(path: tuple[str | int, ...]) -> Location:
    # A stand-in for the document's positions: the line says how deep the path goes.
    return Location(FILE, len(path), 1)


def compiled(raw: Any) -> Condition:
    problems: list[Problem] = []
    condition = compile_condition(raw, ("when",), locate, problems)
    assert problems == []
    assert condition is not None
    return condition


def matches(
    raw: Any,
    body: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    version: str = "1",
) -> bool:
    ctx = MatchContext(body or {}, headers or {}, properties or {}, version)
    return compiled(raw).matches(ctx)


def problem(raw: Any) -> Problem:
    problems: list[Problem] = []
    assert compile_condition(raw, ("when",), locate, problems) is None
    (found,) = problems
    return found


@pytest.mark.parametrize(
    ("value", "wanted", "expected"),
    [
        ("eu", "eu", True),
        ("EU", "eu", False),
        (1, 1, True),
        (1.0, 1, True),  # numbers compare as numbers
        (True, 1, False),  # but true is not 1
        (1, True, False),
        (True, True, True),
        ("1", 1, False),
        (None, None, True),
        ([1, 2], [1, 2], True),
        ({"a": 1}, {"a": 1}, True),
    ],
)
def test_equals_is_strict_about_types(value: Any, wanted: Any, expected: bool) -> None:
    assert matches({"field": "x", "equals": wanted}, {"x": value}) is expected


def test_equals_null_needs_a_null_not_a_missing_field() -> None:
    assert matches({"field": "x", "equals": None}, {"x": None})
    assert not matches({"field": "x", "equals": None}, {})


@pytest.mark.parametrize(
    ("body", "exists", "expected"),
    [
        ({"x": 0}, True, True),
        ({"x": ""}, True, True),
        ({"x": False}, True, True),
        ({"x": None}, True, False),  # null counts as absent
        ({}, True, False),
        ({}, False, True),
        ({"x": None}, False, True),
        ({"x": 1}, False, False),
    ],
)
def test_exists(body: dict[str, Any], exists: bool, expected: bool) -> None:
    assert matches({"field": "x", "exists": exists}, body) is expected


def test_in_is_strict_about_types() -> None:
    condition = {"field": "x", "in": ["a", 2, None]}
    assert matches(condition, {"x": "a"})
    assert matches(condition, {"x": 2.0})
    assert matches(condition, {"x": None})
    assert not matches(condition, {"x": True})
    assert not matches(condition, {"x": "2"})
    assert not matches(condition, {})


def test_regex_searches_text_only() -> None:
    condition = {"field": "id", "regex": "^cus-[0-9]+$"}
    assert matches(condition, {"id": "cus-42"})
    assert not matches(condition, {"id": "cus-x"})
    assert not matches(condition, {"id": 42})
    assert not matches(condition, {})
    assert matches({"field": "id", "regex": "42"}, {"id": "cus-42-b"})  # search, not match


@pytest.mark.parametrize(
    ("op", "bound", "value", "expected"),
    [
        ("gt", 5, 6, True),
        ("gt", 5, 5, False),
        ("gte", 5, 5, True),
        ("lt", 5, 4.5, True),
        ("lt", 5, 5, False),
        ("lte", 5, 5, True),
        ("gt", 0, True, False),  # a boolean is not a number
        ("gt", 0, "7", False),  # nor is text
        ("lt", 10, None, False),
    ],
)
def test_numeric_comparisons(op: str, bound: int, value: Any, expected: bool) -> None:
    assert matches({"field": "n", op: bound}, {"n": value}) is expected


def test_numeric_comparison_on_a_missing_field_is_false() -> None:
    assert not matches({"field": "n", "lt": 10}, {})


def test_length_of_lists_text_and_mappings() -> None:
    condition = {"field": "to", "length": {"gt": 1, "lte": 3}}
    assert not matches(condition, {"to": [1]})
    assert matches(condition, {"to": [1, 2]})
    assert matches(condition, {"to": "abc"})
    assert matches(condition, {"to": {"a": 1, "b": 2}})
    assert not matches(condition, {"to": [1, 2, 3, 4]})
    assert not matches(condition, {"to": 12})
    assert not matches(condition, {})
    assert matches({"field": "to", "length": {"equals": 0}}, {"to": []})


def test_contains_and_contains_any() -> None:
    assert matches({"field": "tags", "contains": "2fa"}, {"tags": ["a", "2fa"]})
    assert not matches({"field": "tags", "contains": "2fa"}, {"tags": "2fa"})
    assert not matches({"field": "tags", "contains": 1}, {"tags": [True]})
    condition = {"field": "tags", "contains_any": ["password-reset", "2fa"]}
    assert matches(condition, {"tags": ["x", "2fa"]})
    assert not matches(condition, {"tags": ["x"]})
    assert not matches(condition, {})


def test_count_adds_up_lists_across_fields() -> None:
    condition = {"count": ["to", "cc", "bcc"], "gt": 3}
    assert matches(condition, {"to": [1, 2], "cc": [3], "bcc": [4]})
    assert not matches(condition, {"to": [1, 2], "cc": [3]})
    # Missing fields and fields that are not lists count for nothing.
    assert matches({"count": ["to", "cc"], "equals": 2}, {"to": [1, 2], "cc": "x"})
    assert matches({"count": ["to", "cc"], "equals": 0}, {})


def test_nested_paths_and_list_indexes() -> None:
    assert matches({"field": "to.0.email", "regex": "@example"}, {"to": [{"email": "a@example"}]})
    assert not matches({"field": "to.1.email", "exists": True}, {"to": [{"email": "a@x"}]})
    assert matches({"field": "account.id", "equals": "a"}, {"account": {"id": "a"}})


def test_headers_and_properties() -> None:
    assert matches({"header": "x-tenant", "equals": "acme"}, headers={"x-tenant": b"acme"})
    assert not matches({"header": "x-tenant", "exists": True})
    assert matches(
        {"property": "content_type", "equals": "application/json"},
        properties={"content_type": "application/json"},
    )


def test_all_any_not() -> None:
    eu = {"field": "region", "equals": "eu"}
    vip = {"field": "tags", "contains": "vip"}
    body = {"region": "eu", "tags": ["x"]}
    assert not matches({"all": [eu, vip]}, body)
    assert matches({"any": [eu, vip]}, body)
    assert matches({"not": vip}, body)
    assert matches({"all": [eu, {"not": vip}]}, body)
    assert not matches({"any": [{"not": eu}, vip]}, body)


def test_schema_version() -> None:
    assert matches({"schema_version": 2}, version="2")
    assert matches({"schema_version": [1, "2"]}, version="2")
    assert not matches({"schema_version": 1}, version="2")


def test_a_missing_when_is_always_true_and_a_catch_all() -> None:
    from routerd.config.conditions import always

    condition = always(Location(FILE, 3, 5))
    assert condition.matches(MatchContext({}, {}, {}, "1"))
    assert condition.canonical == "always"


def test_canonical_form_ignores_key_order() -> None:
    a = compiled({"field": "region", "equals": "eu"})
    b = compiled({"equals": "eu", "field": "region"})
    c = compiled({"field": "region", "equals": "us"})
    assert a.canonical == b.canonical != c.canonical


def test_descriptions_say_what_is_tested() -> None:
    condition = compiled({"all": [{"schema_version": 2}, {"count": ["to", "cc"], "gt": 50}]})
    assert [c.description for c in condition.children] == [
        "schema_version in [2]",
        "count of to + cc gt 50",
    ]


@pytest.mark.parametrize(
    ("raw", "code", "message", "line"),
    [
        (
            {"field": "tags", "contain": "x"},
            "condition-invalid",
            "unknown condition key `contain`; expected a subject (field, header, property, "
            "count), an operator (equals, in, exists, regex, gt, gte, lt, lte, length, "
            "contains, contains_any), or all/any/not/schema_version; did you mean 'contains'?",
            2,
        ),
        (
            {"field": "tags", "header": "x-tags", "contains": "x"},
            "condition-invalid",
            "a condition needs exactly one subject: field, header, property or count (found "
            "field, header); to test each, give each its own condition under `all`",
            1,
        ),
        (
            {"equals": 1},
            "condition-invalid",
            "a condition needs exactly one subject: field, header, property or count",
            1,
        ),
        (
            {"field": "x"},
            "condition-invalid",
            "the condition on field `x` needs an operator (equals, in, exists, regex, gt, gte, "
            "lt, lte, length, contains, contains_any)",
            1,
        ),
        (
            {"field": "x", "regex": "(a"},
            "regex-invalid",
            "regex '(a' is not a valid ECMA-262 regular expression (the dialect JSON Schema "
            "specifies): missing ), unterminated subpattern at position 0",
            2,
        ),
        (
            {"all": {"field": "x", "exists": True}},
            "condition-invalid",
            "`all` takes a non-empty list of conditions",
            2,
        ),
        (
            {"not": {"field": "x", "exists": True}, "field": "y"},
            "condition-invalid",
            "`not` cannot be combined with `field` in the same condition; nest it inside `all`",
            2,
        ),
        (
            {"schema_version": True},
            "condition-invalid",
            "`schema_version` takes a version or a list of versions, got True",
            2,
        ),
        (
            {"field": "n", "gt": "5"},
            "condition-invalid",
            "`gt` takes a number, got '5'",
            2,
        ),
        (
            {"field": "n", "exists": "yes"},
            "condition-invalid",
            "`exists` takes true or false, got 'yes'",
            2,
        ),
        (
            {"field": "n", "length": {"more": 1}},
            "condition-invalid",
            "`length` compares with equals, gt, gte, lt, lte, not `more`",
            3,
        ),
        (
            {"field": 3, "exists": True},
            "condition-invalid",
            "a field path must be text, got 3",
            2,
        ),
        ([], "condition-invalid", "a condition must be a non-empty mapping", 1),
        (
            {"any": [{"field": "x", "exists": True}, {"field": "y", "in": []}]},
            "condition-invalid",
            "`in` takes a non-empty list of values",
            4,
        ),
    ],
)
def test_errors_name_the_key_and_the_value(raw: Any, code: str, message: str, line: int) -> None:
    found = problem(raw)
    assert (found.code, found.message) == (code, message)
    # The location is that of the offending key: `locate` above encodes its depth.
    assert found.location.line == line


def test_a_yaml_date_is_not_a_json_value() -> None:
    import datetime

    found = problem({"field": "send_at", "equals": datetime.date(2024, 1, 1)})
    assert found.message == (
        "2024-01-01 is a YAML date, which a JSON request never holds; quote it to compare text"
    )


# -- the node classes: each answers for itself ------------------------------------------------


def ctx_of(body: dict[str, Any] | None = None, version: str = "1") -> MatchContext:
    return MatchContext(body or {}, {}, {}, version)


@dataclass(frozen=True)
class Facts:
    """A schema version whose valid requests never have the fields in `forbidden`, and
    whose fields in `only` can hold just those values."""

    version: str = "1"
    forbidden: frozenset[tuple[str | int, ...]] = frozenset()
    only: tuple[tuple[tuple[str | int, ...], tuple[Any, ...]], ...] = ()

    def never_has(self, path: tuple[str | int, ...]) -> bool:
        return path in self.forbidden

    def possible_values(self, path: tuple[str | int, ...]) -> list[Any] | None:
        return next((list(values) for at, values in self.only if at == path), None)


EU = {"field": "region", "equals": "eu"}
VIP = {"field": "tags", "contains": "vip"}


def test_a_leaf_matches_and_traces_with_the_value_it_saw() -> None:
    leaf = compiled({"count": ["to", "cc"], "gt": 2})
    assert isinstance(leaf, Leaf)
    body = {"to": [1, 2], "cc": [3]}
    assert leaf.matches(ctx_of(body))
    assert leaf.trace(ctx_of(body)) == TraceNode(
        ConditionKind.LEAF, "count of to + cc gt 2", True, Seen("count of to + cc", 3)
    )
    missing = compiled(EU).trace(ctx_of())
    assert (missing.matched, missing.seen) == (False, Seen("field region", MISSING))
    assert missing.seen is not None and not missing.seen.present


def test_all_of_short_circuits_but_traces_every_child() -> None:
    node = compiled({"all": [EU, VIP]})
    assert isinstance(node, AllOf)
    body = {"region": "us", "tags": ["vip"]}
    assert not node.matches(ctx_of(body))
    assert node.trace(ctx_of(body)) == TraceNode(
        ConditionKind.ALL,
        "all",
        False,
        children=(
            TraceNode(
                ConditionKind.LEAF, 'field region equals "eu"', False, Seen("field region", "us")
            ),
            TraceNode(
                ConditionKind.LEAF, 'field tags contains "vip"', True, Seen("field tags", ["vip"])
            ),
        ),
    )


def test_any_of_and_not() -> None:
    body = {"region": "us", "tags": ["vip"]}
    any_of = compiled({"any": [EU, VIP]})
    assert isinstance(any_of, AnyOf)
    assert any_of.matches(ctx_of(body))
    traced = any_of.trace(ctx_of(body))
    assert (traced.kind, traced.matched) == (ConditionKind.ANY, True)
    assert [child.matched for child in traced.children] == [False, True]

    not_vip = compiled({"not": VIP})
    assert isinstance(not_vip, Not)
    assert not not_vip.matches(ctx_of(body))
    traced = not_vip.trace(ctx_of(body))
    assert (traced.kind, traced.description, traced.matched) == (ConditionKind.NOT, "not", False)
    assert [child.matched for child in traced.children] == [True]


def test_schema_version_and_always_trace() -> None:
    from routerd.config.conditions import always

    version = compiled({"schema_version": [2, 3]})
    assert isinstance(version, SchemaVersionIn)
    assert version.trace(ctx_of(version="1")) == TraceNode(
        ConditionKind.SCHEMA_VERSION, "schema_version in [2, 3]", False, Seen("schema_version", "1")
    )
    catch_all = always(Location(FILE, 3, 5))
    assert isinstance(catch_all, Always)
    assert catch_all.trace(ctx_of()) == TraceNode(ConditionKind.ALWAYS, "always (no `when`)", True)


def test_trace_leaves_are_what_each_test_answered_in_order() -> None:
    node = compiled({"all": [{"schema_version": 1}, {"any": [EU, {"not": VIP}]}]})
    leaves = node.trace(ctx_of({"region": "eu"})).leaves()
    assert [(n.description, n.matched) for n in leaves] == [
        ("schema_version in [1]", True),
        ('field region equals "eu"', True),
        ('field tags contains "vip"', False),
    ]


def test_what_lint_may_conclude_per_node() -> None:
    node = compiled({"all": [{"schema_version": 1}, {"any": [EU, {"count": ["to"], "gt": 0}]}]})
    open_v1 = Facts("1")
    no_fields = Facts("1", frozenset({("region",), ("to",)}))
    assert node.verdict(open_v1) is None  # depends on the request
    assert node.verdict(Facts("2")) is False
    assert node.why_false(Facts("2")) == "`schema_version in [1]` is false"
    assert node.verdict(no_fields) is False
    assert node.why_false(no_fields) == (
        "field region never exists and fields to never exist, so their count is 0"
    )
    assert compiled({"not": EU}).verdict(no_fields) is True
    assert compiled({"field": "region", "exists": False}).verdict(no_fields) is True
    assert compiled({"header": "x", "exists": False}).verdict(no_fields) is None


def test_guarantees_come_from_what_each_operator_implies() -> None:
    region = ("region",)
    assert compiled(EU).guarantees(region)
    assert not compiled({"field": "region", "equals": None}).guarantees(region)
    assert not compiled({"field": "region", "in": ["eu", None]}).guarantees(region)
    assert not compiled({"field": "region", "exists": False}).guarantees(region)
    assert compiled({"all": [VIP, {"field": "region", "exists": True}]}).guarantees(region)
    assert not compiled({"any": [VIP, EU]}).guarantees(region)
    assert not compiled({"not": {"field": "region", "exists": False}}).guarantees(region)


def test_walk_gives_each_node_its_config_path() -> None:
    node = compiled({"all": [EU, {"not": {"any": [VIP, {"schema_version": 2}]}}]})
    tests = [(n.description, at) for n, at in node.walk(("w",)) if n.tests_request]
    assert tests == [
        ('field region equals "eu"', ("w", "all", 0)),
        ('field tags contains "vip"', ("w", "all", 1, "not", "any", 0)),
        ("schema_version in [2]", ("w", "all", 1, "not", "any", 1)),
    ]


# -- the operator registry --------------------------------------------------------------------


def test_each_operator_states_how_it_treats_a_missing_value() -> None:
    assert OPERATORS["exists"].missing(False) is True
    assert OPERATORS["exists"].missing(True) is False
    for name, operator in OPERATORS.items():
        if name != "exists":
            assert operator.missing("x") is False, name


@pytest.mark.parametrize(
    ("name", "argument", "types"),
    [
        ("equals", "eu", {"string"}),
        ("equals", 2, {"integer", "number"}),  # 2.0 equals 2 too
        ("equals", None, {"null"}),
        ("in", ["a", True], {"string", "boolean"}),
        ("exists", True, {"string", "integer", "number", "boolean", "object", "array"}),
        ("exists", False, None),
        ("regex", "x", {"string"}),
        ("gt", 1, {"integer", "number"}),
        ("length", {"gt": 1}, {"array", "string", "object"}),
        ("contains", "x", {"array"}),
        ("contains_any", ["x"], {"array"}),
    ],
)
def test_what_lint_may_conclude_from_an_operator(
    name: str, argument: Any, types: set[str] | None
) -> None:
    implied = OPERATORS[name].implies(argument)
    assert implied == (None if types is None else frozenset(types))


def test_the_registry_answers_for_a_missing_value_not_the_test() -> None:
    def never_called(argument: Any, path: tuple[str | int, ...]) -> Callable[[Any], bool]:
        def test(value: Any) -> bool:
            raise AssertionError(f"the test saw {value!r}")

        return test

    absent = Operator("absent", never_called, missing=lambda argument: True)
    operators = {**OPERATORS, "absent": absent}
    problems: list[Problem] = []
    leaf = compile_condition(
        {"field": "x", "absent": True}, ("when",), locate, problems, operators=operators
    )
    assert problems == [] and leaf is not None
    assert leaf.matches(ctx_of())
    assert leaf.verdict(Facts("1", frozenset({("x",)}))) is True


def test_a_toy_operator_in_a_copy_of_the_registry_compiles_and_is_named_in_errors() -> None:
    ends_with = Operator(
        "ends_with",
        lambda suffix, path: lambda value: isinstance(value, str) and value.endswith(suffix),
        implies=lambda suffix: frozenset({"string"}),
    )
    operators = {**OPERATORS, "ends_with": ends_with}
    problems: list[Problem] = []
    leaf = compile_condition(
        {"field": "to.0.email", "ends_with": ".org"},
        ("when",),
        locate,
        problems,
        operators=operators,
    )
    assert problems == [] and leaf is not None
    assert leaf.description == 'field to.0.email ends_with ".org"'
    assert leaf.matches(ctx_of({"to": [{"email": "a@b.org"}]}))
    assert not leaf.matches(ctx_of({"to": [{"email": "a@b.com"}]}))
    assert leaf.guarantees(("to", 0, "email"))
    compile_condition(
        {"field": "x", "end_with": "y"}, ("when",), locate, problems, operators=operators
    )
    assert problems[0].message.endswith(
        "contains, contains_any, ends_with), or all/any/not/schema_version; "
        "did you mean 'ends_with'?"
    )
    # The shipped registry is left as it was.
    assert "ends_with" not in OPERATORS


def test_a_leaf_is_decided_by_the_values_the_schema_allows() -> None:
    stream = compile_condition({"field": "stream", "equals": "broadcst"}, ("when",), locate, [])
    known = compile_condition(
        {"field": "stream", "in": ["transactional", "broadcast"]}, ("when",), locate, []
    )
    assert stream is not None and known is not None
    required = Facts(only=((("stream",), ("transactional", "broadcast")),))
    optional = Facts(only=((("stream",), ("transactional", "broadcast", MISSING)),))
    assert stream.verdict(required) is False
    assert stream.why_false(required) == (
        'field stream can only be "transactional" or "broadcast" (the schema\'s enum or const)'
    )
    assert known.verdict(required) is True
    assert known.verdict(optional) is None  # a request without it does not match
    assert stream.verdict(Facts()) is None
