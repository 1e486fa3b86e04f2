"""The broker closes routerd's connection under load: it reconnects by itself, loses nothing.

Only routerd's own connections are closed (`rabbitmqctl close_connection`, found by its
sockets), the per-process form of `rabbitmqctl close_all_connections`, so the test's
connection and anyone else sharing the broker are left alone. At-least-once allows
duplicates here; they are counted and printed.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.factories import mixed
from tests.harness.accounting import Accounting, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker
from tests.harness.connections import broker_connections_of, close_connections
from tests.harness.daemon import Daemon, running_daemon
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl"),
]

COUNT = 10_000


def reached(threshold: int, depths: dict[str, int]) -> bool:
    return sum(depths.values()) >= threshold


def reconnects(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("routerd_reconnects_total")
    )


async def drop_and_recover(daemon: Daemon, connections: list[str]) -> bool:
    """Close the daemon's connections; see it notice and come back. (saw not-ready)"""
    before = daemon.amqp_local_ports()
    counted = reconnects(await daemon.metrics())
    assert await close_connections(connections, "test: connection loss") >= 1
    saw_not_ready = False

    async def probe() -> tuple[int | None, float]:
        nonlocal saw_not_ready
        status = await daemon.ready_status()
        saw_not_ready |= status != 200
        return status, reconnects(await daemon.metrics())

    # /readyz says so while it reconnects, but a reconnect can be quicker than any probe:
    # the reconnect counter is the proof that it noticed; /readyz must then come back.
    await wait_for(
        probe,
        lambda seen: seen[0] != 200 or seen[1] > counted,
        within=10,
        what="/readyz != 200 or a reconnect counted after the close",
        interval=0.01,
    )
    await wait_for(
        probe,
        lambda seen: seen[0] == 200 and seen[1] > counted,
        within=30,
        what="/readyz 200 after a counted reconnect",
    )
    after = daemon.amqp_local_ports()
    assert after and not (after & before), f"no new connection: before {before}, after {after}"
    return saw_not_ready


async def test_connection_closed_under_load_reconnects_and_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=13)
    drops = []

    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        async with anyio.create_task_group() as tg:
            tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
            for threshold in (COUNT // 10, COUNT // 3):
                # Looked up first: the close must land while routing is in full swing.
                connections = await broker_connections_of(daemon.pid)
                assert connections, "found no broker connection of routerd"
                routed = await wait_for(
                    lambda: broker.depths(names.targets),
                    partial(reached, threshold),
                    within=60,
                    what=f"{threshold} routed",
                    interval=0.02,
                )
                at_close = sum((await broker.depths(names.targets)).values())
                saw_not_ready = await drop_and_recover(daemon, connections)
                drops.append((sum(routed.values()), at_close, saw_not_ready))
        timed_out = await settle(broker, names, COUNT, within=60)
        metrics = await daemon.metrics()
        assert await daemon.stop(within=30) == 0

    assert all(at_close < COUNT for _, at_close, _ in drops), f"load over before a drop: {drops}"
    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    print(f"drops (routed at threshold, routed at close, saw /readyz != 200): {drops}")
    print(f"duplicates after {len(drops)} connection losses: {accounting.duplicates()}")
    print("\n".join(m for m in metrics.splitlines() if "reconnect" in m and "#" not in m))
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    unexpected = [k for k in accounting.extra if k not in accounting.expected]
    assert not unexpected, accounting.describe()
    assert timed_out is None, timed_out
    assert await broker.depth(names.source) == 0
