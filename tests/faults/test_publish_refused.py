"""A target that refuses publishes: its requests go to rejected with the reason; none is lost,
none loops forever.

- Unroutable: the bulk queue is deleted while routerd runs, so the exchange returns every
  bulk publish (mandatory) → rejected, reason `unroutable`.
- Nacked: a policy caps the bulk queue at 0 with `reject-publish`, so the broker nacks every
  bulk publish → nack and requeue, up to `max_redeliveries`, then rejected, reason
  `redelivery_limit`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.factories import mixed
from tests.harness.accounting import SEQ, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker, Received
from tests.harness.config import full_prefetch_in_flight
from tests.harness.connections import rabbitmqctl
from tests.harness.daemon import running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

COUNT = 1000


def check(
    requests: list[tuple[str, bytes]], received: list[Received], names: QueueNames, reason: str
) -> None:
    """Each request once; bulk ones in rejected with `reason`, the rest where they belong."""
    by_seq: dict[int, Received] = {}
    for r in received:
        seq = r.headers.get(SEQ)
        assert isinstance(seq, int), f"a message without {SEQ} in {r.queue}: {r.body[:80]!r}"
        assert seq not in by_seq, f"seq {seq} twice: {by_seq[seq].queue} and {r.queue}"
        by_seq[seq] = r
    lost = sorted(set(range(len(requests))) - by_seq.keys())
    assert not lost, f"{len(lost)} lost, seqs {lost[:20]}"
    wrong: list[tuple[int, str, object]] = []
    for seq, (category, body) in enumerate(requests):
        r = by_seq[seq]
        want = names.rejected if category == "bulk" else names.of_category(category)
        if r.queue != want or r.body != body:
            wrong.append((seq, category, r.queue))
        elif category == "bulk" and r.headers.get("x-rejected-reason") != reason:
            wrong.append((seq, category, r.headers.get("x-rejected-reason")))
    assert not wrong, f"{len(wrong)} wrong (seq, category, got): {wrong[:10]}"


async def route_all(
    broker: Broker, names: QueueNames, requests: list[tuple[str, bytes]], fillers: int = 0
) -> str | None:
    await broker.publish(names.source, numbered(b for _, b in requests))
    return await settle(broker, names, len(requests) + fillers, within=45)


async def test_deleted_target_queue_sends_its_requests_to_rejected_as_unroutable(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=31)
    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        await broker.delete_queue(names.bulk)
        timed_out = await route_all(broker, names, requests)
        assert await daemon.stop(within=30) == 0
    check(requests, await drain_all(broker, names), names, "unroutable")
    assert timed_out is None, timed_out


@asynccontextmanager
async def refusing(queue: str, broker: Broker) -> AsyncIterator[int]:
    """A policy that makes the broker nack every publish to `queue`; yields fillers left in it."""
    name = f"test-refuse-{queue}"
    pattern = "^" + re.escape(queue) + "$"
    definition = json.dumps({"max-length": 0, "overflow": "reject-publish"})
    await anyio.to_thread.run_sync(
        rabbitmqctl, "set_policy", "--apply-to", "queues", "--priority", "900", name, pattern,
        definition,
    )  # fmt: skip
    try:
        # Policies apply asynchronously: publish fillers until the broker starts refusing.
        fillers = 0

        async def probe() -> bool:
            nonlocal fillers
            accepted = await broker.try_publish(queue, b"filler")
            fillers += accepted
            return accepted

        await wait_for(probe, lambda ok: not ok, within=30, what="the policy to refuse")
        yield fillers
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(rabbitmqctl, "clear_policy", name)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_nacked_target_publishes_end_in_rejected_after_the_redelivery_limit(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    full_prefetch_in_flight(isolated_config)
    requests = mixed(COUNT, seed=37)
    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        async with refusing(names.bulk, broker) as fillers:
            timed_out = await route_all(broker, names, requests, fillers)
            metrics = await daemon.metrics()
        assert await daemon.stop(within=30) == 0
    received = await drain_all(broker, names)
    in_bulk = [r for r in received if r.queue == names.bulk]
    assert [r.body for r in in_bulk] == [b"filler"] * fillers
    check(requests, [r for r in received if r.queue != names.bulk], names, "redelivery_limit")
    print("\n".join(m for m in metrics.splitlines() if "publish" in m and "#" not in m))
    assert timed_out is None, timed_out
