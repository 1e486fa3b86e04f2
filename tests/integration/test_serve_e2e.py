"""`routerd serve` end to end: 10,000 mixed send requests, each in the right queue exactly once.

Black box: a real `routerd serve` subprocess on an isolated copy of the shipped config, a
real RabbitMQ, bodies from tests/factories.py. Counting is by body (a multiset, since the
undecodable bodies repeat); an `x-test-seq` header names any request that goes astray.
"""

from __future__ import annotations

import zlib
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factories import SECURITY_TAGS, expected_category, mixed
from tests.harness.accounting import SEQ, Accounting, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker, Received
from tests.harness.daemon import metric_sum, running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

COUNT = 10_000
PARTITIONS = 8  # bulk and bulk-v2 in the shipped routes.yaml


def expected_rule(request: dict[str, Any]) -> str:
    """Which shipped rule must match a valid request, derived from the rule list by hand."""
    category = expected_category(request)
    if request["schema_version"] == 2:
        if any(t in SECURITY_TAGS for t in request.get("labels", [])):
            return "v2-security-codes"
        # v2 has no `tags`, `stream`, `to`: the v1 rules never match it.
        return "v2-bulk" if category == "bulk" else "transactional"
    if any(t in SECURITY_TAGS for t in request.get("tags", [])):
        return "security-codes"
    return "bulk" if category == "bulk" else "transactional"


def header_problems(message: Received, category: str, body: bytes) -> list[str]:
    """What is wrong with one delivered message's properties and headers, if anything."""
    h = message.headers
    problems = []
    if message.delivery_mode != 2:
        problems.append(f"delivery_mode {message.delivery_mode}, not 2 (persistent)")
    if category == "rejected":
        reason = h.get("x-rejected-reason")
        reasons = h.get("x-rejected-reasons")
        if not isinstance(reason, str) or not reason:
            problems.append(f"x-rejected-reason {reason!r}")
        if not isinstance(reasons, list) or not reasons:
            problems.append(f"x-rejected-reasons {reasons!r}")
        elif not all(isinstance(r, dict) and r.get("code") and r.get("message") for r in reasons):
            problems.append(f"x-rejected-reasons entries lack code/message: {reasons!r:.200}")
        elif reasons[0]["code"] != reason:
            problems.append(f"x-rejected-reason {reason!r} is not the first code of {reasons!r}")
        return problems
    request = orjson.loads(body)
    rule = expected_rule(request)
    want = {
        "x-category": category,
        "x-rule": rule,
        "x-schema-version": str(request["schema_version"]),
    }
    for key, value in want.items():
        if str(h.get(key)) != value:
            problems.append(f"{key} {h.get(key)!r}, expected {value!r}")
    if rule.endswith("security-codes") and (
        message.properties.get("priority") != 9 or h.get("x-priority") != "high"
    ):
        problems.append(
            f"security rule: priority {message.properties.get('priority')!r}, "
            f"x-priority {h.get('x-priority')!r}"
        )
    if category == "bulk":
        customer = request["account"]["id"] if "account" in request else request["customer_id"]
        key = f"bulk.{zlib.crc32(customer.encode()) % PARTITIONS}"
        if message.routing_key != key:
            problems.append(f"routing key {message.routing_key!r}, expected {key!r}")
    return problems


async def test_mixed_requests_each_end_in_the_right_queue_exactly_once(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=20240601)
    outgoing = numbered(body for _, body in requests)

    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        await broker.publish(names.source, outgoing)
        timed_out = await settle(broker, names, COUNT, within=120)
        # What /metrics says must match what the queues hold (checked below), once the
        # last acks have left.
        with suppress(AssertionError):
            await wait_for(
                daemon.metrics,
                lambda m: (
                    metric_sum(m, "routerd_requests_consumed_total") >= COUNT
                    and metric_sum(m, "routerd_in_flight_requests") == 0
                ),
                within=10,
                what="/metrics to settle",
            )
        metrics = await daemon.metrics()
        # A clean stop leaves nothing in flight, so the counts below are final.
        assert await daemon.stop(within=30) == 0

    received = await drain_all(broker, names)
    accounting = Accounting.of(requests, received, names)
    assert accounting.exact, accounting.describe()
    assert timed_out is None, timed_out
    assert await broker.depth(names.source) == 0, "the source must end empty"

    seqs = Counter(r.headers.get(SEQ) for r in received)
    assert seqs == Counter(range(COUNT)), "original headers (x-test-seq) must travel on"

    problems: list[str] = []
    for message in received:
        category, body = requests[message.headers[SEQ]]
        assert message.body == body, f"seq {message.headers[SEQ]}: body changed"
        for problem in header_problems(message, category, body):
            problems.append(f"seq {message.headers[SEQ]} ({category}): {problem}")
    assert not problems, f"{len(problems)} header problems, first ones:\n" + "\n".join(
        problems[:20]
    )

    by_queue = Counter(names.category_of(r.queue) for r in received)
    assert {
        "consumed": metric_sum(metrics, "routerd_requests_consumed_total"),
        "routed": metric_sum(metrics, "routerd_requests_routed_total"),
        "rejected": metric_sum(metrics, "routerd_requests_rejected_total"),
        "in flight": metric_sum(metrics, "routerd_in_flight_requests"),
    } == {
        "consumed": COUNT,
        "routed": by_queue["transactional"] + by_queue["bulk"],
        "rejected": by_queue["rejected"],
        "in flight": 0,
    }
    reasons = Counter(
        r.headers.get("x-rejected-reason") for r in received if r.queue == names.rejected
    )
    print(f"routed: {dict(by_queue)}; rejected reasons: {dict(reasons)}")
