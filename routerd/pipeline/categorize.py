"""Categorizing: the first rule whose condition matches wins."""

from __future__ import annotations

from collections.abc import Sequence

from routerd.config.model import MatchContext, Rule
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
        tried = RuleTrace.of(rule.name, rule.when.trace(ctx))
        trace.append(tried)
        if tried.matched:
            return rule, tuple(trace)
    return None, tuple(trace)
