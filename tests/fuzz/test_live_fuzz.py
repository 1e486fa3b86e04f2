"""10,000 hostile send requests (tests/fuzz/hostile.py) and the named corpus through one
running `routerd serve` against the real broker; every one accounted for by its number.

Nothing lost: each request is found exactly once in a target or rejected. Nothing crashes:
the daemon stays ready, never loses its broker connection (a request that made the broker
close it would be redelivered and close it again), logs no traceback. Every rejection says
why, and never "internal_error". Each corpus case lands where its file says.

ROUTERD_FUZZ_COUNT sets the number of generated requests (default 10,000) and
ROUTERD_FUZZ_SEED the seed; the summary printed at the end is what docs/SECURITY.md quotes.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.fuzz.corpus import load_corpus
from tests.fuzz.hostile import Hostile, generate
from tests.harness.accounting import SEQ, QueueNames, drain_all, settle
from tests.harness.broker import Broker, Outgoing
from tests.harness.daemon import running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

COUNT = int(os.environ.get("ROUTERD_FUZZ_COUNT", "10000"))
SEED = int(os.environ.get("ROUTERD_FUZZ_SEED", "20261130"))


async def test_the_corpus_through_the_live_daemon(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    await through_the_daemon(0, broker, names, isolated_config, amqp_url, log_dir)


@pytest.mark.timeout(1800)
async def test_hostile_requests_through_the_live_daemon(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    await through_the_daemon(COUNT, broker, names, isolated_config, amqp_url, log_dir)


async def through_the_daemon(
    count: int,
    broker: Broker,
    names: QueueNames,
    isolated_config: Path,
    amqp_url: str,
    log_dir: Path,
) -> None:
    """The corpus and `count` generated requests through one daemon, each accounted for."""
    started = time.monotonic()
    corpus = load_corpus()
    # In a thread: generating takes long enough that the test's own broker connection
    # would miss its heartbeats if the event loop waited on it.
    generated = await anyio.to_thread.run_sync(generate, count, SEED)
    items: list[Hostile] = [c.request for c in corpus] + generated
    generated_in = time.monotonic() - started
    outgoing = [
        Outgoing(item.body, {**item.headers, SEQ: seq}, item.properties)
        for seq, item in enumerate(items)
    ]

    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        routed_from = time.monotonic()
        await broker.publish(names.source, outgoing, window=200)
        timed_out = await settle(broker, names, len(items), within=600)
        routed_in = time.monotonic() - routed_from
        assert timed_out is None, timed_out
        assert await daemon.ready_status() == 200
        assert await daemon.stop(within=60) == 0
        log = daemon.log_text()

    received = await drain_all(broker, names)
    seen = Counter(r.headers.get(SEQ) for r in received)
    seen_ok = range(len(items))
    lost = [s for s in seen_ok if seen[s] == 0]
    doubled = [s for s in range(len(items)) if seen[s] > 1]
    strays = [s for s in seen if not isinstance(s, int) or not 0 <= s < len(items)]
    unnumbered = [_shown_received(r) for r in received if r.headers.get(SEQ) not in seen_ok]
    assert not lost, (
        f"{len(lost)} lost, e.g. {[_shown(items[s]) for s in lost[:5]]}; "
        f"received without a known number: {unnumbered[:5]}"
    )
    assert not doubled, f"{len(doubled)} delivered twice"
    assert not strays, f"unknown sequence numbers {strays[:10]}"

    kinds: Counter[tuple[str, str]] = Counter()
    codes: Counter[str] = Counter()
    for r in received:
        seq = r.headers[SEQ]
        item = items[seq]
        assert r.body == item.body, f"{item.kind} #{seq}: the body changed"
        assert r.delivery_mode == 2, f"{item.kind} #{seq}: not persistent"
        queue = names.category_of(r.queue)
        kinds[("corpus" if seq < len(corpus) else item.kind, queue)] += 1
        if queue == "rejected":
            reasons = r.headers.get("x-rejected-reasons")
            assert isinstance(reasons, list) and reasons, f"{item.kind} #{seq}: no reasons"
            assert all(x.get("code") and x.get("message") for x in reasons), reasons
            assert r.headers["x-rejected-reason"] == reasons[0]["code"]
            codes[reasons[0]["code"]] += 1
        else:
            assert "x-rejected-reason" not in r.headers, f"{item.kind} #{seq}"
        if seq < len(corpus):
            case = corpus[seq]
            if case.category is not None:
                assert queue == case.category, f"corpus {case.name}: went to {queue}"
            else:
                assert queue == "rejected", f"corpus {case.name}: went to {queue}"
                assert r.headers["x-rejected-reason"] == case.reason, case.name

    assert "internal_error" not in codes, f"routerd failed on {codes['internal_error']}"
    assert "Traceback" not in log, log[-5000:]
    assert "lost the broker" not in log, "a request made the broker close the connection"
    assert "broker session failed" not in log

    total_bytes = sum(len(i.body) for i in items)
    print(
        f"\nfuzz: {len(items)} requests ({len(corpus)} corpus + {count} generated, seed {SEED}), "
        f"{total_bytes / 1e6:.1f} MB of bodies; generated in {generated_in:.0f}s, "
        f"routed in {routed_in:.0f}s; lost 0, duplicated 0"
    )
    print("by family (routed / rejected):")
    for kind in sorted({k for k, _ in kinds}):
        routed = sum(n for (k, q), n in kinds.items() if k == kind and q != "rejected")
        print(f"  {kind:20} {routed:6} / {kinds[(kind, 'rejected')]:6}")
    print("first reason of the rejected:", dict(codes.most_common()))


def _shown(item: Hostile) -> str:
    return f"{item.kind}: {item.body[:80]!r} headers {list(item.headers)[:10]} {item.properties}"


def _shown_received(r: Any) -> str:
    return f"{r.queue}: {r.body[:80]!r} headers {dict(list(r.headers.items())[:8])} {r.properties}"
