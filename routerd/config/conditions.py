"""Compiling a rule's `when` into predicates, with errors that name the key and the value.

A condition is `all: [...]`, `any: [...]`, `not: {...}`, `schema_version: 2 | [1, 2]`, or a
leaf: one subject (`field`, `header`, `property`, `count`) and one or more operators, all
of which must hold. Values are compared strictly by type: `true` never equals `1`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from routerd.config.hints import did_you_mean
from routerd.config.model import Condition, Location, MatchContext, Problem
from routerd.config.paths import MISSING, parse_path, resolve
from routerd.config.regex import RegexError, compile_regex

SUBJECTS = ("field", "header", "property", "count")
OPERATORS = (
    "equals",
    "in",
    "exists",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "length",
    "contains",
    "contains_any",
)
COMPARISONS = ("equals", "gt", "gte", "lt", "lte")
COMBINATORS = ("all", "any", "not", "schema_version")

Locate = Callable[[tuple[str | int, ...]], Location]
Getter = Callable[[MatchContext], Any]
Test = Callable[[Any], bool]


class ConditionError(Exception):
    def __init__(self, path: tuple[str | int, ...], message: str, code: str) -> None:
        self.path, self.message, self.code = path, message, code
        super().__init__(message)


def compile_condition(
    raw: Any, path: tuple[str | int, ...], locate: Locate, problems: list[Problem]
) -> Condition | None:
    """Compile one `when`; on errors append problems and return None."""
    try:
        return _compile(raw, path, locate)
    except ConditionError as exc:
        problems.append(Problem(locate(exc.path), "error", exc.message, exc.code))
        return None


def always(location: Location) -> Condition:
    return Condition("always", "always (no `when`)", location, canonical="always")


def same(a: Any, b: Any) -> bool:
    """Equality without Python's `True == 1` and `1 == 1.0` surprises across types."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _compile(raw: Any, path: tuple[str | int, ...], locate: Locate) -> Condition:
    location = locate(path)
    if not isinstance(raw, Mapping) or not raw:
        raise ConditionError(path, "a condition must be a non-empty mapping", "condition-invalid")
    canonical = json.dumps(raw, sort_keys=True, default=str)
    for combinator in ("all", "any"):
        if combinator in raw:
            _only(raw, path, {combinator})
            items = raw[combinator]
            if not isinstance(items, list) or not items:
                raise ConditionError(
                    (*path, combinator),
                    f"`{combinator}` takes a non-empty list of conditions",
                    "condition-invalid",
                )
            children = tuple(
                _compile(item, (*path, combinator, i), locate) for i, item in enumerate(items)
            )
            return Condition(combinator, combinator, location, children, canonical=canonical)
    if "not" in raw:
        _only(raw, path, {"not"})
        child = _compile(raw["not"], (*path, "not"), locate)
        return Condition("not", "not", location, (child,), canonical=canonical)
    if "schema_version" in raw:
        _only(raw, path, {"schema_version"})
        return _schema_version_leaf(raw["schema_version"], path, location, canonical)
    return _leaf(raw, path, location, canonical)


def _only(raw: Mapping[str, Any], path: tuple[str | int, ...], allowed: set[str]) -> None:
    extra = sorted(str(k) for k in raw if k not in allowed)
    if extra:
        (key,) = allowed
        raise ConditionError(
            (*path, extra[0]),
            f"`{key}` cannot be combined with `{extra[0]}` in the same condition; "
            f"nest it inside `all`",
            "condition-invalid",
        )


def _schema_version_leaf(
    value: Any, path: tuple[str | int, ...], location: Location, canonical: str
) -> Condition:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int | str) for v in values):
        raise ConditionError(
            (*path, "schema_version"),
            f"`schema_version` takes a version or a list of versions, got {value!r}",
            "condition-invalid",
        )
    wanted = frozenset(str(v) for v in values)
    shown = ", ".join(sorted(wanted))
    return Condition(
        "leaf",
        f"schema_version in [{shown}]",
        location,
        predicate=lambda ctx: ctx.schema_version in wanted,
        canonical=canonical,
    )


def _leaf(
    raw: Mapping[str, Any], path: tuple[str | int, ...], location: Location, canonical: str
) -> Condition:
    unknown = [k for k in raw if k not in SUBJECTS and k not in OPERATORS]
    if unknown:
        raise ConditionError(
            (*path, unknown[0]),
            f"unknown condition key `{unknown[0]}`; expected a subject "
            f"({', '.join(SUBJECTS)}), an operator ({', '.join(OPERATORS)}), "
            f"or all/any/not/schema_version"
            + did_you_mean(str(unknown[0]), [*SUBJECTS, *OPERATORS, *COMBINATORS]),
            "condition-invalid",
        )
    subjects = [k for k in raw if k in SUBJECTS]
    if len(subjects) != 1:
        raise ConditionError(
            path,
            "a condition needs exactly one subject: field, header, property or count"
            + (
                f" (found {', '.join(subjects)}); to test each, give each its own condition "
                f"under `all`"
                if subjects
                else ""
            ),
            "condition-invalid",
        )
    subject = subjects[0]
    operators = [k for k in raw if k in OPERATORS]
    if not operators:
        raise ConditionError(
            path,
            f"the condition on {subject} `{raw[subject]}` needs an operator "
            f"({', '.join(OPERATORS)})",
            "condition-invalid",
        )
    getter, subject_text = _subject(subject, raw[subject], (*path, subject))
    tests = [(op, _operator(op, raw[op], (*path, op))) for op in operators]
    description = subject_text + " " + " and ".join(f"{op} {_show(raw[op])}" for op in operators)

    def predicate(ctx: MatchContext) -> bool:
        value = getter(ctx)
        return all(test(value) for _, test in tests)

    return Condition("leaf", description, location, predicate=predicate, canonical=canonical)


def _subject(kind: str, value: Any, path: tuple[str | int, ...]) -> tuple[Getter, str]:
    if kind == "field":
        parsed = _path(value, path)
        return (lambda ctx: resolve(ctx.body, parsed)), f"field {value}"
    if kind == "header":
        if not isinstance(value, str) or not value:
            raise ConditionError(path, "`header` takes a header name", "condition-invalid")
        return (lambda ctx: _text(ctx.headers.get(value, MISSING))), f"header {value}"
    if kind == "property":
        if not isinstance(value, str):
            raise ConditionError(
                path, "`property` takes an AMQP property name", "condition-invalid"
            )
        return (lambda ctx: _text(ctx.properties.get(value, MISSING))), f"property {value}"
    if not isinstance(value, list) or not value:
        raise ConditionError(path, "`count` takes a list of field paths", "condition-invalid")
    paths = tuple(_path(p, (*path, i)) for i, p in enumerate(value))

    def count(ctx: MatchContext) -> int:
        total = 0
        for p in paths:
            found = resolve(ctx.body, p)
            if isinstance(found, list):
                total += len(found)
        return total

    return count, f"count of {' + '.join(str(v) for v in value)}"


def _path(value: Any, path: tuple[str | int, ...]) -> tuple[str | int, ...]:
    if not isinstance(value, str) or not value:
        raise ConditionError(path, f"a field path must be text, got {value!r}", "condition-invalid")
    return parse_path(value)


def _operator(op: str, arg: Any, path: tuple[str | int, ...]) -> Test:
    if op in ("equals", "in", "contains", "contains_any"):
        _json_only(arg, path)
    if op == "equals":
        return lambda v: v is not MISSING and same(v, arg)
    if op == "in":
        if not isinstance(arg, list) or not arg:
            raise ConditionError(path, "`in` takes a non-empty list of values", "condition-invalid")
        return lambda v: v is not MISSING and any(same(v, a) for a in arg)
    if op == "exists":
        if not isinstance(arg, bool):
            raise ConditionError(
                path, f"`exists` takes true or false, got {arg!r}", "condition-invalid"
            )
        return lambda v: (v is not MISSING and v is not None) is arg
    if op == "regex":
        if not isinstance(arg, str):
            raise ConditionError(path, f"`regex` takes a pattern, got {arg!r}", "condition-invalid")
        try:
            search = compile_regex(arg).search
        except RegexError as exc:
            raise ConditionError(path, f"regex {arg!r} {exc}", "regex-invalid") from None
        return lambda v: isinstance(v, str) and search(v)
    if op in ("gt", "gte", "lt", "lte"):
        return _numeric(op, arg, path)
    if op == "length":
        if not isinstance(arg, Mapping) or not arg:
            raise ConditionError(
                path, "`length` takes comparisons, for example {gt: 50}", "condition-invalid"
            )
        checks: list[Test] = []
        for key, bound in arg.items():
            if key not in COMPARISONS:
                raise ConditionError(
                    (*path, key),
                    f"`length` compares with {', '.join(COMPARISONS)}, not `{key}`",
                    "condition-invalid",
                )
            checks.append(
                _numeric(key, bound, (*path, key))
                if key != "equals"
                else _operator(key, bound, path)
            )
        return lambda v: isinstance(v, list | str | dict) and all(c(len(v)) for c in checks)
    if op == "contains":
        return lambda v: isinstance(v, list) and any(same(item, arg) for item in v)
    # contains_any
    if not isinstance(arg, list) or not arg:
        raise ConditionError(path, "`contains_any` takes a non-empty list", "condition-invalid")
    return lambda v: isinstance(v, list) and any(same(item, a) for item in v for a in arg)


def _json_only(value: Any, path: tuple[str | int, ...]) -> None:
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


def _numeric(op: str, bound: Any, path: tuple[str | int, ...]) -> Test:
    if isinstance(bound, bool) or not isinstance(bound, int | float):
        raise ConditionError(path, f"`{op}` takes a number, got {bound!r}", "condition-invalid")
    compare: Callable[[float], bool] = {
        "gt": lambda v: v > bound,
        "gte": lambda v: v >= bound,
        "lt": lambda v: v < bound,
        "lte": lambda v: v <= bound,
    }[op]
    return lambda v: not isinstance(v, bool) and isinstance(v, int | float) and compare(v)


def _text(value: Any) -> Any:
    # AMQP long strings can arrive as bytes; rules are written against text.
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _show(value: Any) -> str:
    return json.dumps(value, default=str)
