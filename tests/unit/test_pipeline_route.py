"""categorize (first match wins, the explain trace) and render (routing keys, partitions)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.config.model import MatchContext, RouteTable
from routerd.pipeline.categorize import categorize
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import RuleTrace
from routerd.pipeline.render import MAX_ROUTING_KEY_BYTES, partition_of
from tests.unit.test_decide import SMALL_SCHEMA, envelope, small_table

RULES = [
    {
        "name": "vip",
        "when": {"all": [{"field": "n", "gte": 5}, {"header": "x-vip", "equals": "yes"}]},
        "category": "vip",
        "target": "out",
    },
    {
        "name": "big",
        "when": {"any": [{"field": "n", "gt": 7}, {"count": ["tags"], "gt": 2}]},
        "category": "big",
        "target": "out",
    },
    {"name": "also-big", "when": {"field": "n", "gt": 7}, "category": "other", "target": "out"},
    {
        "name": "untagged",
        "when": {"not": {"field": "tags", "exists": True}},
        "category": "u",
        "target": "out",
    },
    {"name": "rest", "category": "rest", "target": "out"},
]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> RouteTable:
    return small_table(tmp_path_factory.mktemp("routes"), rules=RULES)


def ctx(body: dict[str, Any], headers: dict[str, Any] | None = None) -> MatchContext:
    return MatchContext(body, headers or {}, {}, "1")


def rule_of(table: RouteTable, body: dict[str, Any], headers: dict[str, Any] | None = None) -> Any:
    rule, _ = categorize(table.rules, ctx(body, headers))
    return rule.name if rule else None


# -- categorize -------------------------------------------------------------------------------


def test_first_match_wins(table: RouteTable) -> None:
    assert rule_of(table, {"n": 8, "tags": []}) == "big"  # also-big matches too, later
    assert rule_of(table, {"n": 8, "tags": []}, {"x-vip": "yes"}) == "vip"
    assert rule_of(table, {"n": 1}) == "untagged"
    assert rule_of(table, {"n": 1, "tags": ["a"]}) == "rest"


def test_no_match_without_catch_all(tmp_path: Path) -> None:
    table = small_table(tmp_path, rules=RULES[:2], unmatched="rejected")
    assert categorize(table.rules, ctx({"n": 1})) == (None, ())


def test_trace_shows_every_rule_tried_and_every_leaf(table: RouteTable) -> None:
    rule, trace = categorize(table.rules, ctx({"n": 8, "tags": ["a"]}), explain=True)
    assert rule is not None and rule.name == "big"
    assert trace == (
        RuleTrace("vip", False, (("field n gte 5", True), ('header x-vip equals "yes"', False))),
        RuleTrace("big", True, (("field n gt 7", True), ("count of tags gt 2", False))),
    )


def test_trace_of_no_match_lists_all_rules(tmp_path: Path) -> None:
    table = small_table(tmp_path, rules=RULES[:3], unmatched="rejected")
    rule, trace = categorize(table.rules, ctx({"n": 1, "tags": []}), explain=True)
    assert rule is None
    assert [(t.rule, t.matched) for t in trace] == [
        ("vip", False),
        ("big", False),
        ("also-big", False),
    ]


json_scalars = st.none() | st.booleans() | st.integers(-20, 20) | st.text(max_size=3)


@settings(deadline=None, max_examples=300)
@given(
    n=json_scalars,
    tags=st.none() | json_scalars | st.lists(json_scalars, max_size=4),
    vip=st.none() | st.sampled_from(["yes", "no", b"yes", 1]),
)
def test_fast_evaluation_agrees_with_the_condition(
    table: RouteTable, n: Any, tags: Any, vip: Any
) -> None:
    # `Condition.matches` (short-circuit, the hot path) and explain's evaluation of every
    # leaf must never disagree, rule by rule and on the whole list.
    body = {k: v for k, v in (("n", n), ("tags", tags)) if v is not None}
    context = ctx(body, {} if vip is None else {"x-vip": vip})
    for rule in table.rules:
        traced_rule, _ = categorize([rule], context, explain=True)
        assert (traced_rule is rule) is rule.when.matches(context)
    fast, _ = categorize(table.rules, context)
    traced, _ = categorize(table.rules, context, explain=True)
    assert fast is traced


# -- render -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count", "partition"),
    [
        # Pinned: changing these moves every customer to another partition.
        ("cus-42", 8, 6),
        ("cus-1", 8, 2),
        ("acme", 1000, 814),
        ("ünïcode", 1000, 434),
        ("", 8, 0),
    ],
)
def test_partition_is_crc32_of_utf8_text(value: str, count: int, partition: int) -> None:
    assert partition_of(value, count) == partition
    assert partition == zlib.crc32(value.encode("utf-8")) % count


def keyed(tmp_path: Path, routing_key: str, **target: Any) -> RouteTable:
    # `customer.id` and `customer.region` are declared but optional: lint warns (so load
    # accepts the config), and the pipeline must still reject a request that lacks them.
    customer = {"properties": {"id": {}, "region": {}}}
    schema = {**SMALL_SCHEMA, "properties": {**SMALL_SCHEMA["properties"], "customer": customer}}
    return small_table(
        tmp_path,
        schema=schema,
        targets={"out": {"exchange": "ex", "routing_key": routing_key, **target}},
        rules=[{"name": "r1", "category": "cat", "target": "out"}],
    )


def test_reserved_fields(tmp_path: Path) -> None:
    table = keyed(
        tmp_path,
        "{category}.{rule}.v{schema_version}.{partition}",
        partition={"by": "customer", "count": 8},
    )
    assert decide(table, envelope({"v": 1, "customer": "cus-42"})).routing_key == "cat.r1.v1.6"
    # A number partitions by its text.
    assert decide(table, envelope({"v": 1, "customer": 42})).routing_key == (
        f"cat.r1.v1.{zlib.crc32(b'42') % 8}"
    )


def test_request_fields(tmp_path: Path) -> None:
    table = keyed(tmp_path, "tx.{customer.id}.{customer.region}")
    body = {"v": 1, "customer": {"id": "c1", "region": 3}}
    assert decide(table, envelope(body)).routing_key == "tx.c1.3"


@pytest.mark.parametrize(
    ("customer", "message"),
    [
        ({}, "field customer.id is needed for the routing key but is missing"),
        ({"id": None}, "field customer.id is needed for the routing key but is missing"),
        (
            {"id": True},
            "field customer.id must be text or a whole number to be used in a routing key",
        ),
        (
            {"id": [1]},
            "field customer.id must be text or a whole number to be used in a routing key",
        ),
        (
            {"id": 1.5},
            "field customer.id must be text or a whole number to be used in a routing key",
        ),
    ],
)
def test_unrenderable_routing_key_rejects(tmp_path: Path, customer: Any, message: str) -> None:
    table = keyed(tmp_path, "tx.{customer.id}")
    env = envelope({"v": 1, "customer": customer}, {"x-h": 1})
    decision = decide(table, env)
    assert [(r.code, r.message) for r in decision.reasons] == [
        ("routing_key_unrenderable", message)
    ]
    assert decision.body is env.body
    assert decision.schema_version == "1"
    assert decision.headers["x-h"] == 1


def test_routing_key_is_at_most_255_bytes(tmp_path: Path) -> None:
    table = keyed(tmp_path, "k.{customer}")
    fits = "x" * (MAX_ROUTING_KEY_BYTES - 2)
    assert decide(table, envelope({"v": 1, "customer": fits})).routing_key == "k." + fits
    too_long = decide(table, envelope({"v": 1, "customer": fits + "x"}))
    assert too_long.reasons[0].code == "routing_key_unrenderable"
    assert "longer than 255 bytes" in too_long.reasons[0].message
    # Bytes, not characters: 127 two-byte characters and "k." make 256.
    assert decide(table, envelope({"v": 1, "customer": "é" * 127})).rejected
    assert not decide(table, envelope({"v": 1, "customer": "é" * 126})).rejected
