"""The operators of a leaf condition, each stated once with everything routerd knows about it.

An `Operator` compiles its argument into a test of a present value. What it answers when
the subject has no value (a missing field or header) and what lint may conclude when it
holds are properties of the operator, kept beside it. So a new operator is one entry in
`OPERATORS`: the compiler, the error messages, `explain` and lint's analyses read them here.
Values are compared strictly by type: `true` never equals `1`, `"2"` never equals `2`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from routerd.config.fields import ALL_TYPES, json_type, same
from routerd.config.paths import FieldPath
from routerd.config.regex import RegexError, compile_regex

# A compiled operator: answers for one present value (never MISSING).
Test = Callable[[Any], bool]
# What the comparisons inside `length` may use.
COMPARISONS = ("equals", "gt", "gte", "lt", "lte")
NUMBER_TYPES = frozenset({"integer", "number"})


class ConditionError(Exception):
    """A `when` that cannot be compiled; `path` is the config key to blame."""

    def __init__(self, path: FieldPath, message: str, code: str) -> None:
        self.path, self.message, self.code = path, message, code
        super().__init__(message)


def _never(argument: Any) -> bool:
    return False


def _no_claim(argument: Any) -> frozenset[str] | None:
    return None


def _any_value(argument: Any) -> list[Any] | None:
    return None


@dataclass(frozen=True, slots=True)
class Operator:
    """One operator: its name in `routes.yaml` and how routerd treats it everywhere."""

    name: str
    # Checks the argument (raising ConditionError at `path`) and returns the test of a
    # present value.
    compile: Callable[[Any, FieldPath], Test]
    # The answer for a subject with no value, given the argument: a missing field is not
    # null, and only `exists: false` holds for it.
    missing: Callable[[Any], bool] = _never
    # What lint may conclude when it holds, given the argument: the value is present and has
    # one of these JSON types. None: no claim (it can hold with the value missing or null).
    implies: Callable[[Any], frozenset[str] | None] = _no_claim
    # The only values it can hold for, given the argument (compared with `same`), or None
    # when it is not held to a list: the rule index files a rule under these values.
    only: Callable[[Any], list[Any] | None] = _any_value


@dataclass(frozen=True, slots=True)
class Check:
    """An operator applied to its argument, as one leaf runs it."""

    operator: Operator
    argument: Any
    test: Test

    @property
    def description(self) -> str:
        return f"{self.operator.name} {json.dumps(self.argument, default=str)}"

    @property
    def missing(self) -> bool:
        return self.operator.missing(self.argument)

    @property
    def only(self) -> list[Any] | None:
        return self.operator.only(self.argument)

    def guarantees_value(self) -> bool:
        """Whether a value it holds for is always there and not null."""
        types = self.operator.implies(self.argument)
        return types is not None and "null" not in types


def _types_of(values: list[Any]) -> frozenset[str]:
    # `same` compares numbers as numbers, so 2 also matches 2.0.
    types = {json_type(v) for v in values}
    return frozenset(types | NUMBER_TYPES if types & NUMBER_TYPES else types)


def _json_only(value: Any, path: FieldPath) -> None:
    # YAML reads an unquoted 2024-01-01 as a date; a JSON body never holds one, so the
    # condition could never match.
    values = value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str | int | float | bool | list | dict) and item is not None:
            raise ConditionError(
                path,
                f"{item!s} is a YAML {type(item).__name__}, which a JSON request never holds; "
                f"quote it to compare text",
                "condition-invalid",
            )


def _non_empty_list(name: str, argument: Any, path: FieldPath, what: str) -> list[Any]:
    if not isinstance(argument, list) or not argument:
        raise ConditionError(path, f"`{name}` takes {what}", "condition-invalid")
    return argument


def _equals(argument: Any, path: FieldPath) -> Test:
    _json_only(argument, path)
    return lambda value: same(value, argument)


def _in(argument: Any, path: FieldPath) -> Test:
    _json_only(argument, path)
    wanted = _non_empty_list("in", argument, path, "a non-empty list of values")

    def test(value: Any) -> bool:
        for item in wanted:  # noqa: SIM110 - a loop, not a generator: this runs per request
            if same(value, item):
                return True
        return False

    return test


def _exists(argument: Any, path: FieldPath) -> Test:
    if not isinstance(argument, bool):
        raise ConditionError(
            path, f"`exists` takes true or false, got {argument!r}", "condition-invalid"
        )
    # null counts as absent.
    return lambda value: (value is not None) is argument


def _regex(argument: Any, path: FieldPath) -> Test:
    if not isinstance(argument, str):
        raise ConditionError(
            path, f"`regex` takes a pattern, got {argument!r}", "condition-invalid"
        )
    try:
        search = compile_regex(argument).search
    except RegexError as exc:
        raise ConditionError(path, f"regex {argument!r} {exc}", "regex-invalid") from None
    return lambda value: isinstance(value, str) and search(value)


def _numeric(name: str) -> Callable[[Any, FieldPath], Test]:
    def compile_bound(bound: Any, path: FieldPath) -> Test:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConditionError(
                path, f"`{name}` takes a number, got {bound!r}", "condition-invalid"
            )
        compare: Callable[[float], bool] = {
            "gt": lambda v: v > bound,
            "gte": lambda v: v >= bound,
            "lt": lambda v: v < bound,
            "lte": lambda v: v <= bound,
        }[name]
        return lambda v: not isinstance(v, bool) and isinstance(v, int | float) and compare(v)

    return compile_bound


def _length(argument: Any, path: FieldPath) -> Test:
    if not isinstance(argument, Mapping) or not argument:
        raise ConditionError(
            path, "`length` takes comparisons, for example {gt: 50}", "condition-invalid"
        )
    checks: list[Test] = []
    for key, bound in argument.items():
        if key not in COMPARISONS:
            raise ConditionError(
                (*path, key),
                f"`length` compares with {', '.join(COMPARISONS)}, not `{key}`",
                "condition-invalid",
            )
        if key == "equals":
            checks.append(_equals(bound, path))
        else:
            checks.append(_numeric(key)(bound, (*path, key)))

    def test(value: Any) -> bool:
        if not isinstance(value, list | str | dict):
            return False
        size = len(value)
        for check in checks:  # noqa: SIM110 - a loop, not a generator: this runs per request
            if not check(size):
                return False
        return True

    return test


def _contains(argument: Any, path: FieldPath) -> Test:
    _json_only(argument, path)
    return lambda value: isinstance(value, list) and any(same(item, argument) for item in value)


def _contains_any(argument: Any, path: FieldPath) -> Test:
    _json_only(argument, path)
    wanted = _non_empty_list("contains_any", argument, path, "a non-empty list")
    return lambda value: (
        isinstance(value, list) and any(same(item, w) for item in value for w in wanted)
    )


def _exists_missing(argument: Any) -> bool:
    return argument is False


def _exists_implies(argument: Any) -> frozenset[str] | None:
    return ALL_TYPES - {"null"} if argument else None


def _fixed(types: frozenset[str]) -> Callable[[Any], frozenset[str]]:
    return lambda argument: types


OPERATORS: Mapping[str, Operator] = MappingProxyType(
    {
        op.name: op
        for op in (
            Operator(
                "equals",
                _equals,
                implies=lambda argument: _types_of([argument]),
                only=lambda argument: [argument],
            ),
            Operator("in", _in, implies=_types_of, only=list),
            Operator("exists", _exists, missing=_exists_missing, implies=_exists_implies),
            Operator("regex", _regex, implies=_fixed(frozenset({"string"}))),
            *(
                Operator(name, _numeric(name), implies=_fixed(NUMBER_TYPES))
                for name in ("gt", "gte", "lt", "lte")
            ),
            Operator("length", _length, implies=_fixed(frozenset({"array", "string", "object"}))),
            Operator("contains", _contains, implies=_fixed(frozenset({"array"}))),
            Operator("contains_any", _contains_any, implies=_fixed(frozenset({"array"}))),
        )
    }
)
