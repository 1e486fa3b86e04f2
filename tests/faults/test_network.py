"""The network between routerd and the broker fails: cut, stalled (a black hole), slowed.

A `FaultProxy` on loopback sits between `routerd serve` and the broker; the test publishes
its stream straight to the broker. The daemon's URL asks for a 1 s heartbeat, so aiormq
gives up on a silent connection after 3 x (1 + 1) = 6 s (routerd's default of 10 s takes
33 s), and a 3 s connect timeout, so that reconnect attempts into the hole end quickly.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from tests.factories import mixed
from tests.harness.accounting import (
    Accounting,
    QueueNames,
    drain_all,
    numbered,
    routed,
    settle,
    wait_routed,
)
from tests.harness.broker import Broker
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.faultproxy import Mode, fault_proxy
from tests.harness.figures import record
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

COUNT = 4000
HEARTBEAT = 1
GRACE = 3 * (HEARTBEAT + 1)
QUERY = f"heartbeat={HEARTBEAT}&timeout=3"
FAST_RETRY = ["--reconnect-min", "0.2", "--reconnect-max", "1"]


async def reconnects(daemon: Daemon) -> float:
    return metric_sum(await daemon.metrics(), "routerd_reconnects_total")


async def finish(
    daemon: Daemon, broker: Broker, names: QueueNames, requests: list[tuple[str, bytes]]
) -> tuple[Accounting, str | None, str]:
    timed_out = await settle(broker, names, len(requests), within=90)
    metrics = await daemon.metrics()
    assert await daemon.stop(within=30) == 0
    return Accounting.of(requests, await drain_all(broker, names), names), timed_out, metrics


async def test_connection_cut_reconnects_and_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=41)
    async with (
        fault_proxy(amqp_url) as proxy,
        running_daemon(
            isolated_config, proxy.url(amqp_url, QUERY), log_dir, extra_args=FAST_RETRY
        ) as daemon,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
            await wait_routed(broker, names, COUNT // 4)
            at_cut = await routed(broker, names)
            assert proxy.cut() >= 1
            cut = time.monotonic()
            await wait_for(
                lambda: reconnects(daemon), lambda n: n >= 1, within=30, what="a reconnect"
            )
            recovered = time.monotonic() - cut
            await daemon.wait_ready(within=30)
        accounting, timed_out, _ = await finish(daemon, broker, names, requests)

    record(
        "connection cut (both sides closed)",
        requests=COUNT,
        routed_at_cut=at_cut,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        cut_to_reconnected_s=round(recovered, 2),
    )
    assert at_cut < COUNT, "routing was over before the cut; raise COUNT"
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert timed_out is None, timed_out


async def test_black_hole_is_detected_reported_not_ready_and_survived(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=43)
    async with (
        fault_proxy(amqp_url) as proxy,
        running_daemon(
            isolated_config, proxy.url(amqp_url, QUERY), log_dir, extra_args=FAST_RETRY
        ) as daemon,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
            await wait_routed(broker, names, COUNT // 4)
            at_stall = await routed(broker, names)
            proxy.set(Mode.BLACK_HOLE)
            stalled = time.monotonic()
            await daemon.wait_not_ready(GRACE + 5, during="during the black hole")
            detected = time.monotonic() - stalled
            answer = await daemon.get("/readyz")
            assert answer is not None and b"not connected" in answer[1], answer
            # The stall lasts: reconnect attempts go into the hole too, and it stays not ready.
            await daemon.wait_for_log("broker session failed", within=20)
            assert await daemon.ready_status() == 503
            proxy.set(Mode.PASS)
            healed = time.monotonic()
            await daemon.wait_ready(within=30)
            recovered = time.monotonic() - healed
        accounting, timed_out, _ = await finish(daemon, broker, names, requests)

    record(
        "black hole (bytes accepted, nothing answered)",
        requests=COUNT,
        heartbeat_s=HEARTBEAT,
        routed_at_stall=at_stall,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        stall_to_not_ready_s=round(detected, 2),
        heal_to_ready_s=round(recovered, 2),
    )
    assert at_stall < COUNT, "routing was over before the stall; raise COUNT"
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert timed_out is None, timed_out


async def test_slow_link_times_publishes_out_and_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=47)
    # 64 KiB/s each way and 0.2 s per chunk: a prefetch of ~1 KiB bodies needs seconds to
    # be confirmed, past the 1 s publish timeout.
    async with (
        fault_proxy(amqp_url, delay=0.2, bytes_per_second=64 * 1024) as proxy,
        running_daemon(
            isolated_config,
            proxy.url(amqp_url, "heartbeat=5&timeout=5"),
            log_dir,
            extra_args=[*FAST_RETRY, "--publish-timeout", "1"],
        ) as daemon,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
            await wait_routed(broker, names, COUNT // 4)
            at_slow = await routed(broker, names)
            proxy.set(Mode.SLOW)
            await wait_for(
                lambda: daemon_timeouts(daemon),
                lambda n: n >= 1,
                within=30,
                what="a publish timeout on the slow link",
                interval=0.2,
            )
            slow_routed = await routed(broker, names) - at_slow
            proxy.set(Mode.PASS)
        accounting, timed_out, metrics = await finish(daemon, broker, names, requests)

    timeouts = metric_sum(metrics, "routerd_publish_failures_total", cause="timeout")
    record(
        "slow link (0.2 s per chunk, 64 KiB/s), 1 s publish timeout",
        requests=COUNT,
        routed_while_slow=slow_routed,
        publish_timeouts=timeouts,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
    )
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert timed_out is None, timed_out


async def daemon_timeouts(daemon: Daemon) -> float:
    return metric_sum(await daemon.metrics(), "routerd_publish_failures_total", cause="timeout")
