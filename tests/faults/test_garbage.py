"""Garbage in: every malformed send request ends in rejected with reasons; the daemon stays up.

Huge bodies over the size limit, JSON nested past any limit, random bytes, JSON that is not
an object, numbers and strings JSON parsers choke on, and headers of odd types and values.
"""

from __future__ import annotations

import datetime
import decimal
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.factories import encode, valid_v1, valid_v2
from tests.harness.accounting import SEQ, QueueNames, settle
from tests.harness.broker import Broker, Outgoing
from tests.harness.config import read_config
from tests.harness.daemon import running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


def garbage(max_body: int, max_depth: int) -> list[tuple[str, Outgoing]]:
    rng = random.Random(1234)
    valid = encode(valid_v1(1))
    v2 = encode(valid_v2(2))
    items: list[tuple[str, bytes, dict[str, object], dict[str, object]]] = [
        # over the size limit: valid-looking JSON, plain text, random bytes
        ("huge json", b'{"schema_version": 1, "pad": "' + b"x" * max_body + b'"}', {}, {}),
        ("huge valid", encode(valid_v1(3, text="x" * (max_body + 10))), {}, {}),
        ("huge random", rng.randbytes(3 * max_body), {}, {}),
        # nesting: just past the limit, and far past any parser's recursion limit
        ("deep object", _nested_object(max_depth + 8), {}, {}),
        ("deep in a field", encode(valid_v1(4, metadata=_nested_dict(max_depth + 8))), {}, {}),
        ("deep array", b"[" * 100_000 + b"]" * 100_000, {}, {}),
        ("deep unclosed", b'{"a":' * 50_000, {}, {}),
        # not JSON, or JSON parsers disagree on it
        *[(f"random {i}", rng.randbytes(rng.randrange(1, 4096)), {}, {}) for i in range(20)],
        ("nul bytes", b"\x00" * 1000, {}, {}),
        ("bom", b"\xef\xbb\xbf" + valid, {}, {}),
        ("utf-16", valid.decode().encode("utf-16"), {}, {}),
        ("lone surrogate", b'{"schema_version": 1, "subject": "\\ud800"}', {}, {}),
        ("NaN", b'{"schema_version": NaN}', {}, {}),
        ("big int", b'{"schema_version": 1' + b"0" * 5000 + b"}", {}, {}),
        ("1e999", b'{"schema_version": 1e999}', {}, {}),
        ("trailing garbage", valid + b"garbage", {}, {}),
        ("two documents", valid + b"\n" + valid, {}, {}),
        ("null", b"null", {}, {}),
        ("string", b'"hello"', {}, {}),
        ("number", b"42", {}, {}),
        ("empty object", b"{}", {}, {}),
        ("wrong types", b'{"schema_version": "1", "to": "x", "from": 3}', {}, {}),
        ("unknown version", encode({**valid_v1(5), "schema_version": 99}), {}, {}),
        ("bool version", encode({**valid_v1(6), "schema_version": True}), {}, {}),
        # the version header wins over the body: odd values of it
        ("version header banana", valid, {"x-schema-version": "banana"}, {}),
        ("version header 99", valid, {"x-schema-version": 99}, {}),
        ("version header table", valid, {"x-schema-version": {"v": 1}}, {}),
        ("version header list", valid, {"x-schema-version": [1, 2]}, {}),
        ("version header empty", valid, {"x-schema-version": ""}, {}),
        ("version header v2 on v1", valid, {"x-schema-version": 2}, {}),
        ("version header v1 on v2", v2, {"x-schema-version": "1"}, {}),
        # odd headers and properties around bodies that are bad anyway
        (
            "spoofed routing headers",
            b"not json",
            {"x-rejected-reason": "spoofed", "x-category": "bulk", "x-rule": "bulk"},
            {},
        ),
        (
            "header zoo",
            b"{",
            {
                "x-nested": _nested_dict(20),
                "x-when": datetime.datetime(2024, 1, 2, 3, 4, 5),
                "x-decimal": decimal.Decimal("3.14"),
                "x-none": None,
                "x-bytes": bytearray(b"\xff\xfe"),
                "x-bool": False,
                "x-float": 1.5,
                "x-unicode-é✉": "ünïcødé ✉",
                "x-long": "y" * 60_000,
                **{f"x-h{i}": i for i in range(300)},
            },
            {},
        ),
        ("xml", b"<send><to>a@b.c</to></send>", {}, {"content_type": "application/xml"}),
        ("gzip random", rng.randbytes(200), {}, {"content_encoding": "gzip"}),
        (
            "odd properties",
            b"[]",
            {},
            {"priority": 255, "expiration": "600000", "message_type": "x" * 200},
        ),
    ]
    return [
        (label, Outgoing(body, {**headers, SEQ: i}, props))
        for i, (label, body, headers, props) in enumerate(items)
    ]


def _nested_dict(depth: int) -> dict[str, object]:
    node: dict[str, object] = {"leaf": "x"}
    for _ in range(depth):
        node = {"n": node}
    return node


def _nested_object(depth: int) -> bytes:
    return b'{"schema_version": 1, "a": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


async def test_garbage_ends_in_rejected_and_the_daemon_stays_up(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    limits = read_config(isolated_config)["limits"]
    items = garbage(limits["max_body_bytes"], limits["max_depth"])
    labels = {o.headers[SEQ]: label for label, o in items if o.headers}

    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        await broker.publish(names.source, [o for _, o in items], window=10)
        timed_out = await settle(broker, names, len(items), within=60)
        assert timed_out is None, timed_out
        # Still up, still ready, still routing.
        assert (await daemon.get("/healthz") or (0,))[0] == 200
        assert await daemon.ready_status() == 200
        await broker.publish(names.source, [Outgoing(encode(valid_v1(7)), {SEQ: -1})])
        await wait_for(
            lambda: broker.depth(names.transactional),
            lambda d: d == 1,
            within=30,
            what="a valid request routed after the garbage",
        )
        assert await daemon.stop(within=30) == 0

    assert await broker.depth(names.bulk) == 0
    rejected = await broker.drain(names.rejected)
    seen = Counter(r.headers.get(SEQ) for r in rejected)
    missing = [labels[s] for s in labels if seen[s] == 0]
    doubled = [labels[s] for s in labels if seen[s] > 1]
    assert not missing, f"not in rejected: {missing}"
    assert not doubled, f"rejected more than once: {doubled}"
    assert len(rejected) == len(items)

    bodies = {o.headers[SEQ]: o.body for _, o in items if o.headers}
    reasons = {}
    for r in rejected:
        label = labels[r.headers[SEQ]]
        assert r.body == bodies[r.headers[SEQ]], f"{label}: body changed on the way to rejected"
        assert r.delivery_mode == 2, label
        reason = r.headers.get("x-rejected-reason")
        assert isinstance(reason, str) and reason and reason != "spoofed", (label, reason)
        assert isinstance(r.headers.get("x-rejected-reasons"), list), label
        reasons[label] = reason
    print("rejected reasons:", reasons)
    assert "Traceback" not in daemon.log_text(), daemon.log_tail(80)
