"""The rule index picks the rule plain in-order evaluation picks, for every config and request.

Differential: hypothesis writes ordered rules from the whole condition language (all, any,
not, schema_version, every operator, values of every JSON type including the `same`
corner cases 1 / 1.0 / true / "1" / null) and requests built from the same values; the
index's first match is the plain `categorize`'s, and so is `decide`'s with and without
explain on a generated config loaded from disk. Then what the index is for: a request
tries only the rules that can match it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routerd.config.conditions import always, compile_condition
from routerd.config.loader import load
from routerd.config.model import SCHEMA_VERSION, Location, MatchContext, Problem, Rule
from routerd.config.rule_index import RuleIndex
from routerd.pipeline.categorize import categorize
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope
from tests import factories
from tests.conftest import ROOT, SHIPPED_CONFIG

sys.path.insert(0, str(ROOT / "scripts"))
from bench_config import write_config

FILE = Path("routes.yaml")
FIELDS = ["customer_id", "stream", "account.id", "n", "tags"]
# Values that `same` tells apart although Python's == does not, or the other way round.
SCALARS = ["big-1", "big-2", "1", 1, 1.0, 2, True, False, None, math.nan, 2.5]
VERSIONS = ["1", "2", "3"]

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def locate(path: tuple[str | int, ...]) -> Location:
    return Location(FILE, len(path), 1)


scalars = st.sampled_from(SCALARS)
values = st.one_of(scalars, st.lists(scalars, max_size=3))
leaves = st.one_of(
    st.builds(lambda f, v: {"field": f, "equals": v}, st.sampled_from(FIELDS), values),
    st.builds(
        lambda f, v: {"field": f, "in": v},
        st.sampled_from(FIELDS),
        st.lists(values, min_size=1, max_size=3),
    ),
    st.builds(lambda f, v: {"field": f, "exists": v}, st.sampled_from(FIELDS), st.booleans()),
    st.builds(
        lambda f, v: {"field": f, "contains_any": v},
        st.sampled_from(FIELDS),
        st.lists(scalars, min_size=1, max_size=2),
    ),
    st.builds(lambda f, v: {"field": f, "gt": v}, st.sampled_from(FIELDS), st.sampled_from([0, 1])),
    # Two operators on one subject: both must hold.
    st.builds(
        lambda f, a, b: {"field": f, "equals": a, "in": b},
        st.sampled_from(FIELDS),
        scalars,
        st.lists(scalars, min_size=1, max_size=3),
    ),
    st.builds(lambda v: {"header": "x-tier", "equals": v}, st.sampled_from(["gold", "1"])),
    st.builds(
        lambda v: {"schema_version": v},
        st.one_of(st.sampled_from([1, 2, 3]), st.lists(st.sampled_from([1, 2, 3]), min_size=1)),
    ),
)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"any": c}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=6,
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": values,
        "stream": values,
        "account": st.fixed_dictionaries({}, optional={"id": values}),
        "n": values,
        "tags": values,
    },
)


def rules_of(whens: list[dict[str, Any] | None]) -> tuple[Rule, ...]:
    rules = []
    for i, raw in enumerate(whens):
        problems: list[Problem] = []
        when = (
            always(locate(("rules", i)))
            if raw is None
            else compile_condition(raw, ("rules", i, "when"), locate, problems)
        )
        assert when is not None, problems
        rules.append(Rule(f"r{i}", when, "c", _TARGET, None, {}, locate(("rules", i))))
    return tuple(rules)


_TARGET = load(SHIPPED_CONFIG).targets["bulk"]


@SETTINGS
@given(
    whens=st.lists(st.one_of(conditions, st.none()), min_size=1, max_size=12),
    body=requests,
    version=st.sampled_from(VERSIONS),
    tier=st.sampled_from(["gold", "1", None]),
)
def test_the_index_picks_the_rule_plain_evaluation_picks(
    whens: list[dict[str, Any] | None], body: dict[str, Any], version: str, tier: str | None
) -> None:
    rules = rules_of(whens)
    ctx = MatchContext(body, {} if tier is None else {"x-tier": tier}, {}, version)
    plain, _ = categorize(rules, ctx)
    assert RuleIndex(rules).first_match(ctx) is plain


@SETTINGS
@given(
    # Many rules on one field, so the index files them (it files by a field two rules need).
    customers=st.lists(st.sampled_from(SCALARS), min_size=2, max_size=8),
    whens=st.lists(st.one_of(conditions, st.none()), max_size=6),
    body=requests,
    version=st.sampled_from(VERSIONS),
)
def test_filed_rules_keep_their_order_among_the_others(
    customers: list[Any], whens: list[dict[str, Any] | None], body: dict[str, Any], version: str
) -> None:
    filed: list[dict[str, Any] | None] = [{"field": "customer_id", "equals": c} for c in customers]
    # The filed rules go in among the others, so a request's candidates are a merge.
    mixed = [w for pair in zip(filed, whens, strict=False) for w in pair]
    mixed += filed[len(whens) :] + whens[len(filed) :]
    rules = rules_of(mixed)
    ctx = MatchContext(body, {}, {}, version)
    index = RuleIndex(rules)
    plain, _ = categorize(rules, ctx)
    assert index.first_match(ctx) is plain
    tried = index.tried(ctx)
    assert list(tried) == sorted(tried, key=rules.index), "candidates out of config order"


def test_what_a_condition_requires() -> None:
    def needs(raw: dict[str, Any]) -> dict[Any, Any]:
        (rule,) = rules_of([raw])
        return dict(rule.when.requires())

    customer = ("field", ("customer_id",))
    assert needs({"field": "customer_id", "equals": "a"}) == {customer: {"a"}}
    assert needs({"field": "customer_id", "in": ["a", 1]}) == {customer: {"a", ("number", 1)}}
    # 1 and 1.0 are the same value; true is not 1.
    assert needs({"field": "customer_id", "in": [1, 1.0, True]}) == {
        customer: {("number", 1), ("boolean", True)}
    }
    assert needs(
        {"all": [{"schema_version": [1, 2]}, {"field": "customer_id", "equals": "a"}]}
    ) == {SCHEMA_VERSION: {"1", "2"}, customer: {"a"}}
    assert needs(
        {"any": [{"field": "customer_id", "equals": "a"}, {"field": "customer_id", "equals": "b"}]}
    ) == {customer: {"a", "b"}}
    # Nothing stated: either branch may hold without the field; a `not`; a regex; NaN.
    assert needs({"any": [{"field": "customer_id", "equals": "a"}, {"field": "n", "gt": 1}]}) == {}
    assert needs({"not": {"field": "customer_id", "equals": "a"}}) == {}
    assert needs({"field": "customer_id", "regex": "^a"}) == {}
    assert needs({"field": "customer_id", "equals": math.nan}) == {}
    assert needs({"field": "customer_id", "equals": ["a"]}) == {}


def test_a_request_tries_only_the_rules_that_can_match_it(tmp_path: Path) -> None:
    table = load(write_config(tmp_path, rules=500))
    shipped = [r for r in table.rules if not r.name.startswith("customer-")]
    v1_shipped = [r for r in shipped if not r.name.startswith("v2-")]

    def tried(body: dict[str, Any]) -> list[str]:
        ctx = MatchContext(body, {}, {}, str(body["schema_version"]))
        return [rule.name for rule in table.rule_index.tried(ctx)]

    # A customer with no rule of its own: the shipped rules for its version, nothing else.
    assert tried(factories.valid_v1(1)) == [r.name for r in v1_shipped]
    # A customer with rules (customer-7 is an `all`, customer-8 a list): those come first.
    assert tried(factories.valid_v1(1, customer_id="big-8-eu")) == [
        "customer-8",
        *(r.name for r in v1_shipped),
    ]
    # v2 requests carry no customer_id: no customer rule is tried, the v2 rules are.
    assert tried(factories.valid_v2(1)) == [r.name for r in shipped]


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), customer=st.sampled_from(["big-3", "big-4", "big-5-eu", None]))
def test_decide_on_a_generated_config_matches_plain_evaluation(
    tmp_path_factory: Any, seed: int, customer: str | None
) -> None:
    table = _big_table(tmp_path_factory)
    request = factories.valid_v1(seed) if seed % 3 else factories.valid_v2(seed)
    if customer is not None and "customer_id" in request:
        request["customer_id"] = customer
    envelope = Envelope(factories.encode(request), {}, {"content_type": "application/json"})
    decision = decide(table, envelope)
    explained = decide(table, envelope, explain=True)
    ctx = MatchContext(request, {}, {}, str(request["schema_version"]))
    plain, _ = categorize(table.rules, ctx)
    assert decision.rule == explained.rule == (plain.name if plain else None)
    assert decision.routing_key == explained.routing_key
    assert decision.headers == explained.headers


_TABLES: dict[str, Any] = {}


def _big_table(tmp_path_factory: Any) -> Any:
    if "big" not in _TABLES:
        folder = tmp_path_factory.mktemp("big")
        _TABLES["big"] = load(write_config(folder, rules=120))
    return _TABLES["big"]


def test_the_generated_config_is_what_the_bench_says(tmp_path: Path) -> None:
    path = write_config(tmp_path, schemas=4, rules=9)
    data = yaml.safe_load(path.read_text())
    assert [s["version"] for s in data["schemas"]] == [1, 2, 3, 4]
    assert [r["name"] for r in data["rules"][:9]] == [f"customer-{i}" for i in range(9)]
    assert len(load(path).rules) == 9 + len(load(SHIPPED_CONFIG).rules)
