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
            if rule.when.matches(ctx):
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
