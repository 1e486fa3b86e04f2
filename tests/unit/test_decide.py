"""decide and reject: headers, properties, bodies and targets of routed and rejected decisions.

Uses the shipped config and small configs written in tmp_path (`small_table`, also used by
the other pipeline tests).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.pipeline.decide import (
    CATEGORY_HEADER,
    REASON_HEADER,
    REASONS_HEADER,
    RULE_HEADER,
    VERSION_HEADER,
    decide,
    reject,
)
from routerd.pipeline.envelope import Decision, Envelope, Reason, RuleTrace
from tests import factories
from tests.conftest import SHIPPED_CONFIG

SMALL_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["v", "customer"],
    "properties": {
        "v": {"type": "integer"},
        "customer": {},
        "n": {"type": "integer", "maximum": 10},
        "name": {"type": "string", "maxLength": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def small_table(tmp_path: Path, **overrides: Any) -> RouteTable:
    """A one-schema config (version 1, header `x-v` or field `v`) with top-level keys
    replaced by `overrides`; `schema=` replaces the request schema."""
    schema = overrides.pop("schema", SMALL_SCHEMA)
    (tmp_path / "req.yaml").write_text(yaml.safe_dump(schema))
    config: dict[str, Any] = {
        "version": 1,
        "source": {"queue": "in"},
        "limits": {"max_body_bytes": 4096, "max_depth": 8, "max_reasons": 50},
        "schema_version": {"header": "x-v", "field": "v"},
        "schemas": [{"name": "req", "version": 1, "file": "req.yaml"}],
        "targets": {"out": {"exchange": "ex", "routing_key": "out.{category}"}},
        "rejected": {"exchange": "ex", "routing_key": "rejected"},
        "rules": [{"name": "all", "category": "any", "target": "out"}],
    }
    config.update(overrides)
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load(path)


def envelope(body: Any, headers: dict[str, Any] | None = None, **properties: Any) -> Envelope:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Envelope(raw, headers or {}, properties)


@pytest.fixture(scope="module")
def shipped() -> RouteTable:
    return load(SHIPPED_CONFIG)


def test_routed_decision_adds_category_rule_and_version_headers(shipped: RouteTable) -> None:
    request = factories.valid_v1(1, tags=["receipt"], stream="transactional")
    env = envelope(request, {"x-trace": "abc", "x-count": 3})
    decision = decide(shipped, env)
    assert not decision.rejected
    assert decision.target is shipped.targets["transactional"]
    assert decision.routing_key == "transactional"
    assert decision.headers == {
        "x-trace": "abc",
        "x-count": 3,
        CATEGORY_HEADER: "transactional",
        RULE_HEADER: "transactional",
        VERSION_HEADER: "1",
    }
    assert (decision.category, decision.rule, decision.schema_version) == (
        "transactional",
        "transactional",
        "1",
    )
    assert decision.reasons == ()
    assert decision.trace == ()
    assert decision.body is env.body


def test_rule_headers_and_priority(shipped: RouteTable) -> None:
    env = envelope(factories.valid_v1(2, tags=["2fa"]), {}, priority=1, message_id="m-1")
    decision = decide(shipped, env)
    assert decision.rule == "security-codes"
    assert decision.headers["x-priority"] == "high"
    assert decision.properties == {"priority": 9, "message_id": "m-1"}


def test_properties_pass_through_except_headers_and_delivery_mode(shipped: RouteTable) -> None:
    properties = {
        "content_type": "application/json",
        "message_id": "m-2",
        "correlation_id": "c-2",
        "app_id": "api",
        "type": "send",
        "timestamp": 1_700_000_000,
        "priority": 3,
        "delivery_mode": 1,
        "headers": {"x-stale": "copy"},
    }
    env = Envelope(factories.encode(factories.valid_v1(3, tags=[])), {}, properties)
    expected = {k: v for k, v in properties.items() if k not in ("headers", "delivery_mode")}
    routed = decide(shipped, env)
    assert routed.properties == expected
    bad = Envelope(b"[]", {}, properties)
    assert decide(shipped, bad).properties == expected
    # The envelope is left as it was: decisions work on copies.
    assert env.properties == properties


def test_bulk_is_partitioned_by_customer(shipped: RouteTable) -> None:
    request = factories.valid_v1(4, recipients=51, customer_id="cus-42")
    decision = decide(shipped, envelope(request))
    assert decision.target is shipped.targets["bulk"]
    assert decision.routing_key == "bulk.6"  # crc32("cus-42") % 8, pinned in the render tests


def test_v2_routes_beside_v1(shipped: RouteTable) -> None:
    request = factories.valid_v2(5, delivery={"stream": "broadcast"})
    decision = decide(shipped, envelope(request))
    assert (decision.rule, decision.target.name, decision.schema_version) == (
        "v2-bulk",
        "bulk-v2",
        "2",
    )


def test_rejected_decision_keeps_body_and_headers_and_adds_reasons(shipped: RouteTable) -> None:
    request = factories.valid_v1(6, subject="x" * 999, to=[])
    env = envelope(request, {"x-trace": "abc"}, priority=2, delivery_mode=2)
    decision = decide(shipped, env)
    assert decision.rejected
    assert decision.target is shipped.rejected
    assert decision.routing_key == "rejected"
    assert decision.body is env.body
    assert decision.properties == {"priority": 2}
    assert decision.schema_version == "1"
    assert (decision.category, decision.rule) == (None, None)
    assert sorted((r.code, r.pointer, r.keyword) for r in decision.reasons) == [
        ("schema_violation", "/subject", "maxLength"),
        ("schema_violation", "/to", "minItems"),
    ]
    assert decision.headers["x-trace"] == "abc"
    assert decision.headers[REASON_HEADER] == "schema_violation"
    assert decision.headers[REASONS_HEADER] == [r.as_dict() for r in decision.reasons]
    assert set(decision.headers) == {"x-trace", REASON_HEADER, REASONS_HEADER}


def test_reasons_header_leaves_out_what_a_reason_lacks(shipped: RouteTable) -> None:
    decision = decide(shipped, Envelope(b"nope"))
    assert decision.headers[REASONS_HEADER] == [
        {"code": "invalid_json", "message": decision.reasons[0].message}
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "invalid_json"),
        (b"\xff", "invalid_utf8"),
        (b"[]", "not_an_object"),
        (b"{}", "missing_schema_version"),
        (b'{"schema_version": 9}', "unknown_schema_version"),
        (b'{"schema_version": 1}', "schema_violation"),
    ],
)
def test_every_stage_rejects_with_its_code(shipped: RouteTable, body: bytes, code: str) -> None:
    decision = decide(shipped, Envelope(body, {"h": b"\x00"}))
    assert decision.reasons[0].code == code
    assert decision.body is body or decision.body == body
    assert decision.headers["h"] == b"\x00"


def test_reject_for_reasons_found_outside_the_pipeline(shipped: RouteTable) -> None:
    env = envelope(factories.valid_v1(7), {"x-trace": "t"}, message_id="m-7")
    reason = Reason("unroutable", "target 'bulk' has no queue for routing key 'bulk.3'")
    decision = reject(shipped, env, (reason,))
    assert decision.rejected
    assert decision.reasons == (reason,)
    assert decision.target is shipped.rejected
    assert decision.body is env.body
    assert decision.headers == {
        "x-trace": "t",
        REASON_HEADER: "unroutable",
        REASONS_HEADER: [{"code": "unroutable", "message": reason.message}],
    }
    assert decision.properties == {"message_id": "m-7"}


def test_unmatched_goes_to_rejected_when_configured_so(tmp_path: Path) -> None:
    table = small_table(
        tmp_path,
        unmatched="rejected",
        rules=[{"name": "big", "when": {"field": "n", "gt": 5}, "category": "c", "target": "out"}],
    )
    decision = decide(table, envelope({"v": 1, "customer": "a", "n": 1}))
    assert [(r.code, r.message) for r in decision.reasons] == [
        ("unmatched", "no rule matched this request")
    ]
    assert decision.schema_version == "1"
    assert decide(table, envelope({"v": 1, "customer": "a", "n": 6})).rule == "big"


def test_unmatched_goes_to_its_target(tmp_path: Path) -> None:
    table = small_table(
        tmp_path,
        targets={
            "out": {"exchange": "ex", "routing_key": "out"},
            "other": {"exchange": "ex", "routing_key": "other.{category}"},
        },
        unmatched="other",
        rules=[{"name": "big", "when": {"field": "n", "gt": 5}, "category": "c", "target": "out"}],
    )
    decision = decide(table, envelope({"v": 1, "customer": "a"}))
    assert not decision.rejected
    assert decision.target is table.targets["other"]
    assert decision.routing_key == "other.unmatched"
    assert (decision.category, decision.rule) == ("unmatched", None)
    assert decision.headers == {CATEGORY_HEADER: "unmatched", RULE_HEADER: "", VERSION_HEADER: "1"}


def test_explain_carries_the_trace(tmp_path: Path) -> None:
    table = small_table(
        tmp_path,
        rules=[
            {"name": "big", "when": {"field": "n", "gt": 5}, "category": "c", "target": "out"},
            {"name": "rest", "category": "d", "target": "out"},
        ],
    )
    env = envelope({"v": 1, "customer": "a", "n": 1})
    assert decide(table, env).trace == ()
    assert decide(table, env, explain=True).trace == (
        RuleTrace("big", False, (("field n gt 5", False),)),
        RuleTrace("rest", True, (("always (no `when`)", True),)),
    )


def test_a_bug_in_routerd_rejects_one_request_instead_of_raising(tmp_path: Path) -> None:
    table = small_table(tmp_path)

    def broken(instance: Any) -> bool:
        raise RuntimeError("validator exploded")

    schema = dataclasses.replace(table.schemas["1"], is_valid=broken)
    table = dataclasses.replace(table, schemas={"1": schema})
    decision = decide(table, envelope({"v": 1, "customer": "a"}, {"x": 1}))
    assert [(r.code, r.message) for r in decision.reasons] == [
        ("internal_error", "routerd failed on this request: RuntimeError: validator exploded")
    ]
    assert decision.headers["x"] == 1


def test_the_mixed_corpus_lands_where_the_brief_says(shipped: RouteTable) -> None:
    queues = {"transactional": "email.transactional", "bulk": "email.bulk"}
    for expected, body in factories.mixed(400, seed=11):
        decision = decide(shipped, Envelope(body))
        assert isinstance(decision, Decision)
        if expected == "rejected":
            assert decision.rejected, body
            continue
        assert not decision.rejected, decision.reasons
        assert decision.category == expected
        assert [q.name for q in decision.target.queues] == [queues[expected]]
