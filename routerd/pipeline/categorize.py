"""Categorizing: the first rule whose condition matches wins."""

from __future__ import annotations

from collections.abc import Sequence

from routerd.config.model import Condition, MatchContext, Rule
from routerd.pipeline.envelope import RuleTrace


def categorize(
    rules: Sequence[Rule], ctx: MatchContext, explain: bool = False
) -> tuple[Rule | None, tuple[RuleTrace, ...]]:
    if not explain:
        for rule in rules:
            if holds(rule.when, ctx):
                return rule, ()
        return None, ()
    trace: list[RuleTrace] = []
    for rule in rules:
        leaves: list[tuple[str, bool]] = []
        matched = _traced(rule.when, ctx, leaves)
        trace.append(RuleTrace(rule.name, matched, tuple(leaves)))
        if matched:
            return rule, tuple(trace)
    return None, tuple(trace)


def holds(condition: Condition, ctx: MatchContext) -> bool:
    """`condition.matches(ctx)` with plain loops instead of a generator per `all`/`any` node:
    it runs for every rule tried on every request."""
    kind = condition.kind
    if kind == "leaf" and condition.predicate is not None:
        return condition.predicate(ctx)
    if kind == "always":
        return True
    if kind == "all":
        for child in condition.children:  # noqa: SIM110 - all() would build a generator
            if not holds(child, ctx):
                return False
        return True
    if kind == "any":
        for child in condition.children:  # noqa: SIM110 - any() would build a generator
            if holds(child, ctx):
                return True
        return False
    if kind == "not":
        return not holds(condition.children[0], ctx)
    return condition.matches(ctx)


def _traced(condition: Condition, ctx: MatchContext, leaves: list[tuple[str, bool]]) -> bool:
    """Evaluate every leaf (no short-circuit) so explain can show each one's answer."""
    if condition.kind in ("always", "leaf"):
        result = condition.matches(ctx)
        leaves.append((condition.description, result))
        return result
    results = [_traced(child, ctx, leaves) for child in condition.children]
    if condition.kind == "all":
        return all(results)
    if condition.kind == "any":
        return any(results)
    return not results[0]
