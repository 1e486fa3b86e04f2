"""The rules compiled for categorizing: only the rules that can match a request are tried,
still in their order, so the first match is the one plain in-order evaluation finds.

Ops add hundreds of per-customer rules (`customer_id equals X`) before the shipped ones. Tried
one by one, each request would pay for all of them. Instead each rule states what it needs
of a request (`Condition.requires`): a schema version among a set, a body field equal to one
of some values. Per schema version the index keeps the rules that can apply to it, files
those that need one value of the most used field under that value, and for a request tries
the rules filed under its value merged, in their order, with the rules that could not be
filed. A rule is only ever left out for a request it cannot match, so the answer is the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from routerd.config.fields import same_key
from routerd.config.model import SCHEMA_VERSION, MatchContext, Requirements, Rule
from routerd.config.paths import MISSING, FieldPath, resolve


@dataclass(slots=True)
class _Plan:
    """The rules to try for requests of one schema version."""

    # Every rule that can apply to the version, in order, for a request whose value is
    # filed under nothing.
    unfiled: tuple[Rule, ...]
    # The body field rules are filed by (None: no field is worth it).
    path: FieldPath | None = None
    # Filed rules, as positions in the config's order, per `same_key` of the field's value.
    filed: dict[Hashable, tuple[int, ...]] = field(default_factory=dict)
    # Positions of the rules that apply to the version but are not filed.
    unfiled_at: tuple[int, ...] = ()
    rules: tuple[Rule, ...] = ()
    # The merged list per value, built on first use: memory grows with the values requests
    # actually carry, never with values times unfiled rules up front.
    merged: dict[Hashable, tuple[Rule, ...]] = field(default_factory=dict)

    def candidates(self, ctx: MatchContext) -> tuple[Rule, ...]:
        if self.path is None:
            return self.unfiled
        value = resolve(ctx.body, self.path)
        if value is MISSING:
            return self.unfiled
        key = same_key(value)
        if key is None:
            return self.unfiled
        found = self.merged.get(key)
        if found is not None:
            return found
        positions = self.filed.get(key)
        if positions is None:
            return self.unfiled
        found = tuple(self.rules[i] for i in sorted((*positions, *self.unfiled_at)))
        self.merged[key] = found
        return found


class RuleIndex:
    """The ordered rules of one route table, compiled; built once per table."""

    __slots__ = ("_other", "_plans")

    def __init__(self, rules: Sequence[Rule]) -> None:
        rules = tuple(rules)
        needs = [rule.when.requires() for rule in rules]
        versions = {v for need in needs for v in need.get(SCHEMA_VERSION, ())}
        self._plans = {str(v): _plan(rules, needs, str(v)) for v in versions}
        # A version no rule names: only rules that name no version can apply.
        self._other = _plan(rules, needs, None)

    def first_match(self, ctx: MatchContext) -> Rule | None:
        """The first rule, in config order, whose condition matches the request."""
        plan = self._plans.get(ctx.schema_version, self._other)
        for rule in plan.candidates(ctx):
            if rule.when.matches(ctx):
                return rule
        return None

    def tried(self, ctx: MatchContext) -> tuple[Rule, ...]:
        """The rules `first_match` tries for this request, in order (for tests and bench)."""
        return self._plans.get(ctx.schema_version, self._other).candidates(ctx)


def _plan(rules: tuple[Rule, ...], needs: list[Requirements], version: str | None) -> _Plan:
    applies = [
        i
        for i, need in enumerate(needs)
        if SCHEMA_VERSION not in need or version in need[SCHEMA_VERSION]
    ]
    # File by the field the most rules need a value of; the others are tried every time.
    counts = Counter(key for i in applies for key in needs[i] if _field_path(key) is not None)
    if not counts:
        return _Plan(unfiled=tuple(rules[i] for i in applies))
    key, filed_count = counts.most_common(1)[0]
    path = _field_path(key)
    if path is None or filed_count < 2:
        return _Plan(unfiled=tuple(rules[i] for i in applies))
    filed: dict[Hashable, list[int]] = {}
    unfiled_at: list[int] = []
    for i in applies:
        allowed = needs[i].get(key)
        if allowed is None:
            unfiled_at.append(i)
            continue
        # A rule needing a value no request can have (an empty set) is filed nowhere.
        for value in allowed:
            filed.setdefault(value, []).append(i)
    return _Plan(
        unfiled=tuple(rules[i] for i in unfiled_at),
        path=path,
        filed={value: tuple(at) for value, at in filed.items()},
        unfiled_at=tuple(unfiled_at),
        rules=rules,
    )


def _field_path(key: Hashable) -> FieldPath | None:
    """The body path of a ("field", path) requirement key."""
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "field":
        path: FieldPath = key[1]
        return path
    return None
