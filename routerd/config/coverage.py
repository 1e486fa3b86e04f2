"""Which schema versions can reach each rule, and which rules can never match.

Rules are tried in order and the first match wins, so a rule only sees the requests that no
earlier rule took. For every rule and schema version this works out whether the condition
holds for every valid request of that version (True), for none (False), or depends on the
request (None), from what the condition tests: `schema_version`, and fields the version's
schema forbids (a test on a field that can never be there has a fixed answer). Everything
else is None, so a rule is only called unreachable when it provably is.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routerd.config.fields import FieldOracle
from routerd.config.model import Condition, Location, Problem, Rule, Verdict
from routerd.config.paths import MISSING, FieldPath
from routerd.config.source import Document


@dataclass(frozen=True, slots=True)
class LeafAt:
    """A node that tests the request itself, with its mapping and its place in the config."""

    condition: Condition
    raw: Mapping[str, Any]
    path: FieldPath


@dataclass(slots=True)
class Reach:
    rule: Rule
    index: int  # position in the raw `rules` list
    raw_when: Any
    # Versions whose requests can get to this rule and match it, in declared order.
    sees: tuple[str, ...] = ()
    # Versions still open when the rule is tried, whether or not it can match them.
    offered: tuple[str, ...] = ()
    reachable: bool = True


@dataclass(slots=True)
class Coverage:
    reaches: list[Reach]
    # Versions some request of which can match no rule at all.
    fall_through: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SchemaFacts:
    """What one version's schema says about its valid requests, as conditions ask it."""

    version: str
    oracle: FieldOracle | None  # None: the schema did not load, so no claim

    def never_has(self, path: FieldPath) -> bool:
        return self.oracle is not None and self.oracle.facts(path).presence == "forbidden"

    def possible_values(self, path: FieldPath) -> list[Any] | None:
        if self.oracle is None:
            return None
        allowed = self.oracle.allowed_values(path)
        if allowed is None:
            return None
        always = self.oracle.facts(path).presence == "required"
        return allowed if always else [*allowed, MISSING]


# A question a condition asks about a version: ("version", None), ("never_has", path) or
# ("possible_values", path).
Question = tuple[str, FieldPath | None]


class _Recorder:
    """A version's facts that note every question asked of them, in order."""

    __slots__ = ("_facts", "asked")

    def __init__(self, facts: SchemaFacts) -> None:
        self._facts = facts
        self.asked: list[Question] = []

    @property
    def version(self) -> str:
        self.asked.append(("version", None))
        return self._facts.version

    def never_has(self, path: FieldPath) -> bool:
        self.asked.append(("never_has", path))
        return self._facts.never_has(path)

    def possible_values(self, path: FieldPath) -> list[Any] | None:
        self.asked.append(("possible_values", path))
        return self._facts.possible_values(path)


class Analysis:
    """Evaluates conditions per schema version; one per lint run."""

    def __init__(self, versions: Sequence[str], oracles: Mapping[str, FieldOracle | None]) -> None:
        self.versions = tuple(versions)
        self.oracles = oracles
        self.facts = {v: SchemaFacts(v, oracles.get(v)) for v in self.versions}
        # questions -> version -> its answers, comparable exactly (see `_exact`)
        self._answers: dict[tuple[Question, ...], dict[str, Hashable]] = {}

    def verdict(self, cond: Condition, version: str) -> Verdict:
        return cond.verdict(self.facts[version])

    def verdicts(self, cond: Condition) -> dict[str, Verdict]:
        """`verdict(cond, v)` for every version, in declared order.

        Evaluated once per group of versions whose schemas answer every question the
        evaluation asked alike: it is deterministic, so a version that gives the same
        answers to the same questions takes the same path to the same verdict. 500 rules on
        200 schema versions that differ in a few fields were 10^5 evaluations, now a few per
        rule (`scripts/bench_config.py`)."""
        found: dict[str, Verdict] = {}
        left = self.versions
        while left:
            recorder = _Recorder(self.facts[left[0]])
            verdict = cond.verdict(recorder)
            answers = self._answers_to(tuple(dict.fromkeys(recorder.asked)))
            own = answers[left[0]]
            rest = []
            for v in left:
                if answers[v] == own:
                    found[v] = verdict
                else:
                    rest.append(v)
            left = tuple(rest)
        return {v: found[v] for v in self.versions}

    def _answers_to(self, questions: tuple[Question, ...]) -> dict[str, Hashable]:
        if questions not in self._answers:
            self._answers[questions] = {
                v: tuple(self._answer(question, v) for question in questions) for v in self.versions
            }
        return self._answers[questions]

    def _answer(self, question: Question, version: str) -> Hashable:
        kind, path = question
        facts = self.facts[version]
        if kind == "version":
            return facts.version
        assert path is not None
        if kind == "never_has":
            return facts.never_has(path)
        return _exact(facts.possible_values(path))

    def why_false(self, cond: Condition, version: str) -> str:
        """A short reason why `cond` is always false for `version`."""
        return cond.why_false(self.facts[version])


def leaves(cond: Condition, path: FieldPath) -> list[LeafAt]:
    """Every node of a condition that tests the request, each with its mapping and config
    path (`path` is where the condition itself is)."""
    return [LeafAt(node, node.source, at) for node, at in cond.walk(path) if node.tests_request]


def guarantees(cond: Condition, target: FieldPath) -> bool:
    """Whether every request matching `cond` has a non-null value at field path `target`."""
    return cond.guarantees(target)


def analyse(
    rules: Sequence[Rule],
    raw_rules: Sequence[Mapping[str, Any]],
    doc: Document,
    analysis: Analysis,
) -> Coverage:
    index_of = {doc.locate(("rules", i)): i for i in range(len(raw_rules))}
    open_versions = dict.fromkeys(analysis.versions, True)
    closed_by: dict[str, Rule] = {}
    first_with: dict[str, Rule] = {}
    reaches: list[Reach] = []
    problems: list[Problem] = []
    for rule in rules:
        index = index_of[rule.location]
        raw_when = raw_rules[index].get("when")
        reach = Reach(rule, index, raw_when)
        verdicts = analysis.verdicts(rule.when)
        reach.offered = tuple(v for v in analysis.versions if open_versions[v])
        reach.sees = tuple(v for v in reach.offered if verdicts[v] is not False)
        taken = [v for v in analysis.versions if not open_versions[v] and verdicts[v] is not False]
        twin = first_with.get(rule.when.canonical)
        if not reach.sees:
            reach.reachable = False
            if taken:
                problems.append(_shadowed(rule, [closed_by[v] for v in taken], taken))
            elif twin is not None:
                problems.append(_same_condition(rule, twin))
            elif not _names_unknown_version(rule, raw_when, analysis):
                reasons = "; ".join(
                    f"for schema version {v}, {analysis.why_false(rule.when, v)}"
                    for v in analysis.versions
                )
                problems.append(
                    Problem(
                        rule.location,
                        "error",
                        f"rule {rule.name!r} can never match: {reasons}",
                        "rule-never-matches",
                    )
                )
        elif twin is not None:
            reach.reachable = False
            problems.append(_same_condition(rule, twin))
        first_with.setdefault(rule.when.canonical, rule)
        for v in reach.sees:
            if verdicts[v] is True:
                open_versions[v] = False
                closed_by[v] = rule
        reaches.append(reach)
    fall_through = tuple(v for v in analysis.versions if open_versions[v])
    return Coverage(reaches, fall_through, problems)


def _exact(value: Any) -> Hashable:
    """`value` as a key that equals another only for the same JSON value of the same type:
    `1`, `1.0` and `true` are equal in Python, not to a condition (see `operators.same`).
    Keys that differ where the values are the same only cost an extra evaluation."""
    if isinstance(value, list):
        return ("list", tuple(_exact(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _exact(v)) for k, v in value.items())))
    if value is MISSING or value is None:
        return (repr(value),)
    if isinstance(value, float) and value != value:
        return ("nan",)
    return (type(value).__name__, value)


def _names_unknown_version(rule: Rule, raw_when: Any, analysis: Analysis) -> bool:
    # That mistake has its own, more precise problem (schema-version-unknown).
    if raw_when is None:
        return False
    for leaf in leaves(rule.when, ()):
        values = leaf.raw.get("schema_version")
        if values is not None:
            listed = values if isinstance(values, list) else [values]
            if any(str(v) not in analysis.versions for v in listed):
                return True
    return False


def _shadowed(rule: Rule, closers: list[Rule], versions: list[str]) -> Problem:
    unique = list({id(r): r for r in closers}.values())
    if len(unique) == 1 and unique[0].is_catch_all:
        why = f"the catch-all rule {unique[0].name!r} ({_line(unique[0].location)}) before it"
        why += " takes every request"
    else:
        names = ", ".join(f"{r.name!r} ({_line(r.location)})" for r in unique)
        plural = "rules" if len(unique) > 1 else "rule"
        shown = ", ".join(versions)
        why = (
            f"{plural} {names} before it take{'' if len(unique) > 1 else 's'} every request "
            f"of schema version{'s' if len(versions) > 1 else ''} {shown} it could match"
        )
    return Problem(
        rule.location,
        "error",
        f"rule {rule.name!r} can never match: {why}; move it up or remove it",
        "rule-shadowed",
    )


def _same_condition(rule: Rule, twin: Rule) -> Problem:
    return Problem(
        rule.location,
        "error",
        f"rule {rule.name!r} can never match: rule {twin.name!r} ({_line(twin.location)}) "
        f"before it has the same condition and the first match wins; merge or remove one",
        "rule-shadowed",
    )


def _line(location: Location) -> str:
    return f"line {location.line}"
