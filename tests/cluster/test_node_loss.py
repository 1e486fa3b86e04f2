"""Two routerd replicas on a 3-node RabbitMQ cluster keep routing while nodes die; nothing is
lost.

Both replicas get every node's URL and pick one at random. Replica A starts first and
declares the topology, so A's node leads every quorum queue (RabbitMQ places a new queue's
leader on the declaring client's node). A producer streams numbered send requests through
routerd's own sender (the client's engine), also given every node's URL, and resends what
was not confirmed. Then, with the stream running:

1. `rabbitmqctl stop_app` on A's node, which leads the queues: the leaders move, A (and B if
   it was there) reconnects to another node; the node comes back (`start_app`).
2. kill -9 of the Erlang VM of the node replica B is on now (no goodbye to anyone): B
   reconnects elsewhere; the node is started again from its data and rejoins.

Every published body is then found in the target or rejected queues, in the right one; the
duplicates (at-least-once: deliveries in flight on a dead connection come back) are counted
and printed with each replica's outage (from its "lost the broker" to its next "routing"
log line) and the longest pause in routing (no source ack from either replica).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from routerd.amqp.connection import BrokerUnavailable
from routerd.amqp.options import BrokerOptions
from routerd.amqp.sender import SourceSender
from routerd.delivery.errors import PublishFailed, Unroutable
from tests.factories import mixed
from tests.harness.accounting import SEQ, Accounting, QueueNames, drain_all, settle
from tests.harness.broker import Broker
from tests.harness.cluster import Node, RabbitCluster
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.timeout(900)]

# Requests per second the producer offers: below what two replicas route on a busy
# two-core machine, so the pauses measured are the node losses', not a backlog's.
RATE = 250.0
BATCH = 10
POOL = 60_000
# Source acks that prove routing goes on (before a loss, and after one).
PROGRESS = 600


class Producer:
    """Streams bodies from `pool` at `RATE` through a `SourceSender` holding every node's URL;
    a publish that fails (node gone, confirm lost) is sent again until the broker confirms."""

    def __init__(self, urls: str, queue: str, pool: Sequence[tuple[str, bytes]]) -> None:
        options = BrokerOptions.from_url(urls, publish_timeout=10.0)
        self.sender = SourceSender(options, queue, ready_timeout=60.0)
        self.pool = pool
        self.sent: list[tuple[str, bytes]] = []
        self.resent = 0
        self.failures: dict[str, int] = {}
        self._stop = anyio.Event()
        self.done = anyio.Event()

    async def run(self) -> None:
        try:
            await self._stream()
        finally:
            self.done.set()

    async def _stream(self) -> None:
        next_seq = 0
        while not self._stop.is_set() and next_seq < len(self.pool):
            batch = range(next_seq, min(next_seq + BATCH, len(self.pool)))
            next_seq = batch.stop
            async with anyio.create_task_group() as tg:
                for seq in batch:
                    tg.start_soon(self._one, seq)
            # The pacing sleep sets the load; it waits for nothing.
            with anyio.move_on_after(BATCH / RATE):
                await self._stop.wait()
        assert next_seq < len(self.pool), "the producer ran out of requests: raise POOL"

    async def _one(self, seq: int) -> None:
        category, body = self.pool[seq]
        while True:
            try:
                await self.sender.publish(body, {SEQ: seq}, {"message_id": f"cluster-{seq}"})
            except (PublishFailed, BrokerUnavailable, Unroutable) as exc:
                # Sent again: the broker may have kept the first copy (a duplicate then).
                name = type(exc).__name__
                self.failures[name] = self.failures.get(name, 0) + 1
                self.resent += 1
                continue
            self.sent.append((category, body))
            return

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Watch:
    """Both replicas' source acks, sampled every 0.1 s: routing's progress over time."""

    replicas: Sequence[Daemon]
    samples: list[tuple[float, float]] = field(default_factory=list)

    async def acks(self) -> float:
        total = 0.0
        for replica in self.replicas:
            total += metric_sum(await replica.metrics(), "routerd_source_acks_total")
        return total

    async def run(self) -> None:
        while True:
            value = await self.acks()
            # A replica that does not answer /metrics for a moment reads as 0: keep the last.
            if self.samples and value < self.samples[-1][1]:
                value = self.samples[-1][1]
            self.samples.append((time.monotonic(), value))
            await anyio.sleep(0.1)

    def latest(self) -> float:
        return self.samples[-1][1] if self.samples else 0.0

    def longest_pause(self, start: float, end: float) -> float:
        """The longest stretch within [start, end] in which no request was acked."""
        last_change = start
        longest = 0.0
        previous = None
        for t, value in self.samples:
            if t < start:
                previous = value
                continue
            if t > end:
                break
            if previous is not None and value > previous:
                longest = max(longest, t - last_change)
                last_change = t
            previous = value
        return max(longest, 0.0)


def node_of(replica: Daemon, cluster: RabbitCluster) -> Node | None:
    """The node `replica` holds its broker connection to (by its sockets), if any."""
    for node in cluster.nodes:
        if replica.amqp_local_ports(node.amqp_port):
            return node
    return None


def queues_state(cluster: RabbitCluster, via: Node) -> str:
    """Every queue's leader, online members, depth and consumers: why routing stalled."""
    return cluster.ctl(
        via,
        "list_queues",
        "name",
        "leader",
        "online",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    )


_STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z"
_LOST = re.compile(_STAMP + r" WARNING routerd\.amqp\.link lost the broker")
_ROUTING = re.compile(_STAMP + r" INFO routerd\.amqp\.link routing ")


def outage(replica: Daemon, after: int) -> float:
    """Seconds from the replica's "lost the broker" to its next "routing", by its own log
    (from character `after` on): how long it routed nothing because its node went away."""
    text = replica.log_text()
    lost = _LOST.search(text, after)
    assert lost is not None, f"replica {replica.pid} logged no loss"
    back = _ROUTING.search(text, lost.end())
    assert back is not None, f"replica {replica.pid} did not route again"
    stamps = [datetime.fromisoformat(m.group(1)) for m in (lost, back)]
    return (stamps[1] - stamps[0]).total_seconds()


async def reconnects(replica: Daemon) -> float:
    return metric_sum(await replica.metrics(), "routerd_reconnects_total")


async def lose_node(
    how: str,
    victim: Node,
    cluster: RabbitCluster,
    replicas: Sequence[Daemon],
    watch: Watch,
    names: QueueNames,
) -> dict[str, Any]:
    """Take `victim` away (`stop_app` or `kill`), wait for routing to go on without it,
    bring it back; return what was seen."""
    survivor = next(node for node in cluster.nodes if node != victim)
    on_victim = [r for r in replicas if node_of(r, cluster) == victim]
    assert on_victim, f"no replica on {victim.name}: the test would show no failover"
    counted = {r.pid: await reconnects(r) for r in replicas}
    log_at = {r.pid: len(r.log_text()) for r in replicas}
    leader_before = (await anyio.to_thread.run_sync(cluster.leader_of, names.source, survivor)).name
    acks_at_loss = watch.latest()
    lost_at = time.monotonic()
    if how == "stop_app":
        await anyio.to_thread.run_sync(cluster.stop_app, victim)
    else:
        await anyio.to_thread.run_sync(cluster.kill, victim)

    reconnected: set[int] = set()

    async def probe() -> tuple[bool, float]:
        for replica in on_victim:
            if replica.pid not in reconnected:
                back = await reconnects(replica) > counted[replica.pid]
                if back and await replica.ready_status() == 200:
                    reconnected.add(replica.pid)
        return len(reconnected) == len(on_victim), watch.latest() - acks_at_loss

    try:
        await wait_for(
            probe,
            lambda seen: seen[0] and seen[1] >= PROGRESS,
            within=90,
            what=f"routing to go on after {how} of {victim.name}",
            interval=0.1,
        )
    except AssertionError as exc:
        state = await anyio.to_thread.run_sync(queues_state, cluster, survivor)
        raise AssertionError(f"{exc}\nqueues seen from {survivor.name}:\n{state}") from None
    resumed_at = time.monotonic()
    for replica in replicas:
        moved = node_of(replica, cluster)
        assert moved != victim, f"replica {replica.pid} still on {victim.name}"
    leader_after = (await anyio.to_thread.run_sync(cluster.leader_of, names.source, survivor)).name

    if how == "stop_app":
        await anyio.to_thread.run_sync(cluster.start_app, victim)
    else:
        await anyio.to_thread.run_sync(cluster.restart, victim)

    async def members_online() -> list[list[str]]:
        infos = [
            await anyio.to_thread.run_sync(cluster.queue_info, survivor, queue)
            for queue in (names.source, *names.targets)
        ]
        return [list(info["online"]) for info in infos]

    # Every queue whole again before the next loss: two nodes down of three is no quorum.
    await wait_for(
        members_online,
        lambda online: all(victim.name in members for members in online),
        within=60,
        what=f"{victim.name} back among every queue's online members",
        interval=0.5,
    )
    return {
        "how": how,
        "node": victim.name,
        "replicas on it": len(on_victim),
        "replica outage s": sorted(round(outage(r, log_at[r.pid]), 2) for r in on_victim),
        "longest pause in routing s": round(watch.longest_pause(lost_at, resumed_at), 2),
        "source leader": f"{leader_before} -> {leader_after}",
    }


async def test_replicas_keep_routing_while_nodes_die_and_lose_nothing(
    rabbit_cluster: RabbitCluster, isolated_config: Path, names: QueueNames, log_dir: Path
) -> None:
    cluster = rabbit_cluster
    urls = ",".join(cluster.urls)
    pool = mixed(POOL, seed=29)
    producer = Producer(urls, names.source, pool)
    losses: list[dict[str, Any]] = []
    async with (
        running_daemon(isolated_config, urls, log_dir, name="replica-a") as a,
        running_daemon(isolated_config, urls, log_dir, name="replica-b") as b,
    ):
        replicas = (a, b)
        started_on = {name: node_of(r, cluster) for name, r in (("a", a), ("b", b))}
        first = started_on["a"]
        assert first is not None, "replica A holds no broker connection"
        for queue in (names.source, *names.targets):
            info = await anyio.to_thread.run_sync(cluster.queue_info, first, queue)
            assert info["type"] == "quorum", info
            assert sorted(info["members"]) == sorted(n.name for n in cluster.nodes), info
            assert info["leader"] == first.name, info
        watch = Watch(replicas)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            tg.start_soon(producer.run)
            await wait_for(watch.acks, lambda n: n >= PROGRESS, within=60, what="routing")
            losses.append(await lose_node("stop_app", first, cluster, replicas, watch, names))
            target = node_of(b, cluster)
            assert target is not None, "replica B holds no broker connection"
            losses.append(await lose_node("kill -9", target, cluster, replicas, watch, names))
            producer.stop()
            # Its last batch is confirmed before it returns: every body in `sent` counts.
            with anyio.fail_after(120):
                await producer.done.wait()
            tg.cancel_scope.cancel()
        await producer.sender.close()
        async with Broker(first.url) as monitor:
            timed_out = await settle(monitor, names, len(producer.sent), within=180)
            assert await a.stop(within=60) == 0
            assert await b.stop(within=60) == 0
            accounting = Accounting.of(producer.sent, await drain_all(monitor, names), names)
            source_left = await monitor.depth(names.source)

    print(f"replicas started on: { {k: v.name if v else None for k, v in started_on.items()} }")
    for loss in losses:
        print(f"node loss: {loss}")
    print(
        f"published {len(producer.sent)}, resent by the producer {producer.resent} "
        f"({producer.failures}); duplicates {accounting.duplicates()}"
    )
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    unexpected = [k for k in accounting.extra if k not in accounting.expected]
    assert not unexpected, accounting.describe()
    assert timed_out is None, timed_out
    assert source_left == 0
