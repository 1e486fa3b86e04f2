"""Comparing a route test's `expect` with the decision, and showing the difference.

Only what a case names is checked. Text values compare as text, so `x-schema-version: 1`
in YAML matches the header "1" the pipeline sets; `reasons` must match the decision's
reasons one to one, in any order, so a rejection passes only for the right reasons.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routerd.config.model import Location

# Checked in this order, which is also the order a failure lists them in.
SIMPLE_FIELDS = (
    "rejected",
    "source",
    "target",
    "exchange",
    "category",
    "rule",
    "routing_key",
    "priority",
    "schema_version",
)
MAX_VALUE = 160


@dataclass(frozen=True, slots=True)
class Mismatch:
    field: str
    expected: Any
    actual: Any


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    location: Location
    mismatches: tuple[Mismatch, ...]
    # decision_summary() of what the pipeline decided, shown when the case fails.
    decision: Mapping[str, Any]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def check(expect: Mapping[str, Any], decision: Mapping[str, Any]) -> tuple[Mismatch, ...]:
    mismatches = [
        Mismatch(name, expect[name], decision[name])
        for name in SIMPLE_FIELDS
        if name in expect and not _same(expect[name], decision[name])
    ]
    if "queue" in expect and expect["queue"] not in decision["queues"]:
        mismatches.append(Mismatch("queue", expect["queue"], decision["queues"]))
    for name, wanted in expect.get("headers", {}).items():
        actual = decision["headers"].get(name)
        if not _same(wanted, actual):
            mismatches.append(Mismatch(f"headers.{name}", wanted, actual))
    if "reasons" in expect:
        missing, unexpected = match_reasons(expect["reasons"], decision["reasons"])
        if missing or unexpected:
            mismatches.append(Mismatch("reasons", missing, unexpected))
    return tuple(mismatches)


def match_reasons(
    expected: Sequence[str | Mapping[str, str]], actual: Sequence[Mapping[str, Any]]
) -> tuple[list[Mapping[str, str]], list[Mapping[str, Any]]]:
    """(expected reasons not found, actual reasons not expected).

    An expected reason matches an actual one when every key it gives agrees: `code`,
    `pointer` and `keyword` exactly, `message` as a part of the message. The most specific
    expectations pick first, so a bare code does not take the reason a pointer asked for.
    """
    wanted = [{"code": r} if isinstance(r, str) else dict(r) for r in expected]
    left = list(actual)
    missing: list[Mapping[str, str]] = []
    for reason in sorted(wanted, key=len, reverse=True):
        found = next((a for a in left if _reason_matches(reason, a)), None)
        if found is None:
            missing.append(reason)
        else:
            left.remove(found)
    return missing, left


def _reason_matches(wanted: Mapping[str, str], actual: Mapping[str, Any]) -> bool:
    for key, value in wanted.items():
        if key == "message":
            if value not in str(actual.get("message", "")):
                return False
        elif actual.get(key) != value:
            return False
    return True


def _same(expected: Any, actual: Any) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, dict | list) or isinstance(actual, dict | list):
        return bool(expected == actual)
    return _text(expected) == _text(actual)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def render_case(result: CaseResult, where_width: int = 0) -> str:
    """`PASS  file:line  name`, and for a failure what differed and what was decided."""
    where = f"{result.location.file}:{result.location.line}"
    if result.passed:
        return f"PASS  {where:<{where_width}}  {result.name}\n"
    lines = [f"FAIL  {where:<{where_width}}  {result.name}"]
    width = max(len("decided"), *(len(m.field) for m in result.mismatches))
    for mismatch in result.mismatches:
        if mismatch.field == "reasons":
            lines.extend(_reason_diff(mismatch.expected, mismatch.actual, width))
            continue
        lines.append(f"      {mismatch.field:<{width}}  expected  {_shown(mismatch.expected)}")
        lines.append(f"      {'':<{width}}  actual    {_shown(mismatch.actual)}")
    lines.append(f"      {'decided':<{width}}  {describe(result.decision)}")
    return "\n".join(lines) + "\n"


def _reason_diff(
    missing: Sequence[Mapping[str, str]], unexpected: Sequence[Mapping[str, Any]], width: int
) -> list[str]:
    lines = []
    label = "reasons"
    for reason in missing:
        lines.append(f"      {label:<{width}}  missing     {_reason_text(reason)}")
        label = ""
    for reason in unexpected:
        lines.append(f"      {label:<{width}}  unexpected  {_reason_text(reason)}")
        label = ""
    return lines


def _reason_text(reason: Mapping[str, Any]) -> str:
    text = str(reason["code"])
    if reason.get("pointer") is not None:
        text += f" at {reason['pointer'] or '(root)'}"
    if reason.get("keyword"):
        text += f" ({reason['keyword']})"
    if reason.get("message"):
        text += f": {_cut(str(reason['message']))}"
    return text


def describe(decision: Mapping[str, Any]) -> str:
    """One line saying what the pipeline decided, so a failure shows the whole picture."""
    if decision["rejected"]:
        # Six "required" errors at the root read better as one entry with a count.
        counts = Counter(
            r["code"] + (f" at {r['pointer'] or '(root)'}" if r["pointer"] is not None else "")
            for r in decision["reasons"]
        )
        shown = [f"{text} x{n}" if n > 1 else text for text, n in counts.items()]
        return "rejected: " + ", ".join(shown)
    text = (
        f"{decision['category']} by rule {decision['rule']} to target {decision['target']}, "
        f"routing key {decision['routing_key']}"
    )
    if decision["priority"] is not None:
        text += f", priority {decision['priority']}"
    return text


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str) and value:
        return _cut(value)
    return _cut(json.dumps(value, default=str))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "..."
