"""The node classes of a compiled condition: `all`, `any`, `not`, a leaf, `schema_version`,
and the condition of a rule without `when`.

Each class answers for itself (see `Condition`): `matches` for the pipeline, `trace` for
explain, `verdict`, `why_false`, `guarantees` and `branches` for lint. Walkers call these
methods and never ask which class a node is, so a new kind of node is one class here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from routerd.config.fields import same_key
from routerd.config.model import (
    SCHEMA_VERSION,
    Condition,
    ConditionKind,
    MatchContext,
    Requirements,
    Seen,
    TraceNode,
    Verdict,
    VersionFacts,
)
from routerd.config.operators import Check, Test
from routerd.config.paths import MISSING, FieldPath
from routerd.config.subjects import VARIES, Subject

# Plain loops rather than all()/any() over a generator in every `matches`: it runs for every
# rule tried on every request, and a generator per node is a measurable share of that.


@dataclass(frozen=True, slots=True, kw_only=True)
class AllOf(Condition):
    kind = ConditionKind.ALL
    children: tuple[Condition, ...]

    def matches(self, ctx: MatchContext) -> bool:
        for child in self.children:  # noqa: SIM110
            if not child.matches(ctx):
                return False
        return True

    def trace(self, ctx: MatchContext) -> TraceNode:
        children = tuple(child.trace(ctx) for child in self.children)
        matched = all(child.matched for child in children)
        return TraceNode(self.kind, self.description, matched, children=children)

    def verdict(self, facts: VersionFacts) -> Verdict:
        verdicts = [child.verdict(facts) for child in self.children]
        if False in verdicts:
            return False
        return True if all(verdicts) else None

    def why_false(self, facts: VersionFacts) -> str:
        for child in self.children:
            if child.verdict(facts) is False:
                return child.why_false(facts)
        return Condition.why_false(self, facts)

    def guarantees(self, path: FieldPath) -> bool:
        return any(child.guarantees(path) for child in self.children)

    def requires(self) -> Requirements:
        # Every child must hold: each one's needs hold, and two on one key both hold.
        needs: dict[Hashable, frozenset[Hashable]] = {}
        for child in self.children:
            for key, allowed in child.requires().items():
                needs[key] = needs[key] & allowed if key in needs else allowed
        return needs

    def branches(self) -> tuple[tuple[FieldPath, Condition], ...]:
        return tuple(((self.kind.value, i), child) for i, child in enumerate(self.children))


@dataclass(frozen=True, slots=True, kw_only=True)
class AnyOf(Condition):
    kind = ConditionKind.ANY
    children: tuple[Condition, ...]

    def matches(self, ctx: MatchContext) -> bool:
        for child in self.children:  # noqa: SIM110
            if child.matches(ctx):
                return True
        return False

    def trace(self, ctx: MatchContext) -> TraceNode:
        children = tuple(child.trace(ctx) for child in self.children)
        matched = any(child.matched for child in children)
        return TraceNode(self.kind, self.description, matched, children=children)

    def verdict(self, facts: VersionFacts) -> Verdict:
        verdicts = [child.verdict(facts) for child in self.children]
        if True in verdicts:
            return True
        return False if all(v is False for v in verdicts) else None

    def why_false(self, facts: VersionFacts) -> str:
        return " and ".join(child.why_false(facts) for child in self.children)

    def guarantees(self, path: FieldPath) -> bool:
        return all(child.guarantees(path) for child in self.children)

    def requires(self) -> Requirements:
        # One child holds, which one is open: only keys every child needs remain, with
        # any value one of them allows.
        first, *rest = [child.requires() for child in self.children]
        return {
            key: allowed.union(*(other[key] for other in rest))
            for key, allowed in first.items()
            if all(key in other for other in rest)
        }

    def branches(self) -> tuple[tuple[FieldPath, Condition], ...]:
        return tuple(((self.kind.value, i), child) for i, child in enumerate(self.children))


@dataclass(frozen=True, slots=True, kw_only=True)
class Not(Condition):
    kind = ConditionKind.NOT
    child: Condition

    def matches(self, ctx: MatchContext) -> bool:
        return not self.child.matches(ctx)

    def trace(self, ctx: MatchContext) -> TraceNode:
        child = self.child.trace(ctx)
        return TraceNode(self.kind, self.description, not child.matched, children=(child,))

    def verdict(self, facts: VersionFacts) -> Verdict:
        inner = self.child.verdict(facts)
        return None if inner is None else not inner

    def why_false(self, facts: VersionFacts) -> str:
        return f"`not` of `{self.child.description}`, which always holds"

    def branches(self) -> tuple[tuple[FieldPath, Condition], ...]:
        return (((self.kind.value,), self.child),)


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf(Condition):
    """One subject and one or more operators, all of which must hold for its value."""

    kind = ConditionKind.LEAF
    tests_request = True
    subject: Subject
    checks: tuple[Check, ...]
    # Taken apart once, for `matches`.
    _read: Callable[[MatchContext], Any] = field(init=False, repr=False, compare=False)
    _tests: tuple[Test, ...] = field(init=False, repr=False, compare=False)
    _when_missing: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_read", self.subject.read)
        object.__setattr__(self, "_tests", tuple(check.test for check in self.checks))
        object.__setattr__(self, "_when_missing", all(c.missing for c in self.checks))

    def matches(self, ctx: MatchContext) -> bool:
        value = self._read(ctx)
        if value is MISSING:
            return self._when_missing
        for test in self._tests:  # noqa: SIM110
            if not test(value):
                return False
        return True

    def answer(self, value: Any) -> bool:
        """Whether every operator holds for `value` (MISSING when there is none)."""
        if value is MISSING:
            return self._when_missing
        return all(test(value) for test in self._tests)

    def trace(self, ctx: MatchContext) -> TraceNode:
        value = self._read(ctx)
        seen = Seen(self.subject.text, value)
        return TraceNode(self.kind, self.description, self.answer(value), seen)

    def verdict(self, facts: VersionFacts) -> Verdict:
        value = self.subject.fixed(facts)
        if value is not VARIES:
            return self.answer(value)
        # The schema may hold the value to a short list (enum, const): then the answer for
        # every value it allows is the answer for every valid request.
        possible = self.subject.possible(facts)
        if possible is None:
            return None
        answers = {self.answer(v) for v in possible}
        return answers.pop() if len(answers) == 1 else None

    def why_false(self, facts: VersionFacts) -> str:
        if self.subject.fixed(facts) is VARIES and (possible := self.subject.possible(facts)):
            shown = ["missing" if v is MISSING else json.dumps(v) for v in possible]
            listed = ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else shown[0]
            return f"{self.subject.text} can only be {listed} (the schema's enum or const)"
        return self.subject.why_fixed() or Condition.why_false(self, facts)

    def guarantees(self, path: FieldPath) -> bool:
        return self.subject.is_field(path) and any(c.guarantees_value() for c in self.checks)

    def requires(self) -> Requirements:
        key = self.subject.index_key
        if key is None:
            return {}
        allowed: frozenset[Hashable] | None = None
        for check in self.checks:
            values = check.only
            if values is None:
                continue
            keys = {same_key(v) for v in values}
            if None in keys:
                continue  # a value no key stands for: claim nothing from this check
            allowed = frozenset(keys) if allowed is None else allowed & keys
        return {} if allowed is None else {key: allowed}


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaVersionIn(Condition):
    """`schema_version: 2` or `[1, 2]`: versions compare as text."""

    kind = ConditionKind.SCHEMA_VERSION
    tests_request = True
    versions: frozenset[str]

    def matches(self, ctx: MatchContext) -> bool:
        return ctx.schema_version in self.versions

    def trace(self, ctx: MatchContext) -> TraceNode:
        seen = Seen("schema_version", ctx.schema_version)
        return TraceNode(self.kind, self.description, self.matches(ctx), seen)

    def verdict(self, facts: VersionFacts) -> Verdict:
        return facts.version in self.versions

    def requires(self) -> Requirements:
        return {SCHEMA_VERSION: frozenset(self.versions)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Always(Condition):
    """A rule without `when`: the catch-all."""

    kind = ConditionKind.ALWAYS

    def matches(self, ctx: MatchContext) -> bool:
        return True

    def trace(self, ctx: MatchContext) -> TraceNode:
        return TraceNode(self.kind, self.description, True)

    def verdict(self, facts: VersionFacts) -> Verdict:
        return True
