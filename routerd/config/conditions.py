"""Compiling a rule's `when` into a tree of condition nodes, with errors that name the key
and the value.

A condition is `all: [...]`, `any: [...]`, `not: {...}`, `schema_version: 2 | [1, 2]`, or a
leaf: one subject (`field`, `header`, `property`, `count`) and one or more operators, all
of which must hold. Subjects live in `routerd.config.subjects`, operators in
`routerd.config.operators`, the node classes in `routerd.config.nodes`; this module only
reads the syntax.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from routerd.config.hints import did_you_mean
from routerd.config.model import Condition, Location, Problem
from routerd.config.nodes import AllOf, Always, AnyOf, Leaf, Not, SchemaVersionIn
from routerd.config.operators import OPERATORS, Check, ConditionError, Operator
from routerd.config.paths import FieldPath
from routerd.config.subjects import SUBJECTS

COMBINATORS = ("all", "any", "not", "schema_version")

Locate = Callable[[FieldPath], Location]


def compile_condition(
    raw: Any,
    path: FieldPath,
    locate: Locate,
    problems: list[Problem],
    *,
    operators: Mapping[str, Operator] = OPERATORS,
) -> Condition | None:
    """Compile one `when`; on errors append problems and return None."""
    try:
        return _Compiler(locate, operators).node(raw, path)
    except ConditionError as exc:
        problems.append(Problem(locate(exc.path), "error", exc.message, exc.code))
        return None


def always(location: Location) -> Condition:
    return Always(description="always (no `when`)", location=location, canonical="always")


class _Compiler:
    def __init__(self, locate: Locate, operators: Mapping[str, Operator]) -> None:
        self.locate = locate
        self.operators = operators

    def node(self, raw: Any, path: FieldPath) -> Condition:
        location = self.locate(path)
        if not isinstance(raw, Mapping) or not raw:
            raise ConditionError(
                path, "a condition must be a non-empty mapping", "condition-invalid"
            )
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
                    self.node(item, (*path, combinator, i)) for i, item in enumerate(items)
                )
                node_class = AllOf if combinator == "all" else AnyOf
                return node_class(
                    description=combinator,
                    location=location,
                    canonical=canonical,
                    source=raw,
                    children=children,
                )
        if "not" in raw:
            _only(raw, path, {"not"})
            child = self.node(raw["not"], (*path, "not"))
            return Not(
                description="not", location=location, canonical=canonical, source=raw, child=child
            )
        if "schema_version" in raw:
            _only(raw, path, {"schema_version"})
            versions = _versions(raw["schema_version"], (*path, "schema_version"))
            return SchemaVersionIn(
                description=f"schema_version in [{', '.join(sorted(versions))}]",
                location=location,
                canonical=canonical,
                source=raw,
                versions=versions,
            )
        return self.leaf(raw, path, location, canonical)

    def leaf(
        self, raw: Mapping[str, Any], path: FieldPath, location: Location, canonical: str
    ) -> Condition:
        names = list(self.operators)
        unknown = [k for k in raw if k not in SUBJECTS and k not in self.operators]
        if unknown:
            raise ConditionError(
                (*path, unknown[0]),
                f"unknown condition key `{unknown[0]}`; expected a subject "
                f"({', '.join(SUBJECTS)}), an operator ({', '.join(names)}), "
                f"or all/any/not/schema_version"
                + did_you_mean(str(unknown[0]), [*SUBJECTS, *names, *COMBINATORS]),
                "condition-invalid",
            )
        subjects = [k for k in raw if k in SUBJECTS]
        if len(subjects) != 1:
            raise ConditionError(
                path,
                f"a condition needs exactly one subject: {_either(list(SUBJECTS))}"
                + (
                    f" (found {', '.join(subjects)}); to test each, give each its own "
                    f"condition under `all`"
                    if subjects
                    else ""
                ),
                "condition-invalid",
            )
        name = subjects[0]
        used = [k for k in raw if k in self.operators]
        if not used:
            raise ConditionError(
                path,
                f"the condition on {name} `{raw[name]}` needs an operator ({', '.join(names)})",
                "condition-invalid",
            )
        subject = SUBJECTS[name](raw[name], (*path, name))
        checks = tuple(
            Check(self.operators[op], raw[op], self.operators[op].compile(raw[op], (*path, op)))
            for op in used
        )
        return Leaf(
            description=f"{subject.text} {' and '.join(c.description for c in checks)}",
            location=location,
            canonical=canonical,
            source=raw,
            subject=subject,
            checks=checks,
        )


def _either(names: list[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _only(raw: Mapping[str, Any], path: FieldPath, allowed: set[str]) -> None:
    extra = sorted(str(k) for k in raw if k not in allowed)
    if extra:
        (key,) = allowed
        raise ConditionError(
            (*path, extra[0]),
            f"`{key}` cannot be combined with `{extra[0]}` in the same condition; "
            f"nest it inside `all`",
            "condition-invalid",
        )


def _versions(value: Any, path: FieldPath) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int | str) for v in values):
        raise ConditionError(
            path,
            f"`schema_version` takes a version or a list of versions, got {value!r}",
            "condition-invalid",
        )
    return frozenset(str(v) for v in values)
