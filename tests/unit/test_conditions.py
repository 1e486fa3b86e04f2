"""Rule conditions: every operator, strict typing, missing vs null, and the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routerd.config.conditions import compile_condition
from routerd.config.model import Condition, Location, MatchContext, Problem

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
