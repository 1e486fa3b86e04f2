"""The broker's memory alarm raised and cleared during a stream (`connection.blocked`).

While blocked, the broker reads nothing from a publishing connection: confirms stop. A
publish timeout that keeps running then turns the alarm into a storm (every in-flight
request timed out, requeued, published again once the alarm clears: duplicates, and
delivery counts spent towards the redelivery limit). routerd must wait instead, say so on
/readyz and /metrics, and resume by itself. The alarm lasts three publish timeouts.
"""

from __future__ import annotations

import shutil
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
    settle,
    wait_routed,
)
from tests.harness.alarms import memory_alarm
from tests.harness.broker import Broker
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.figures import record
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl"),
]

# The whole stream is queued before routerd starts, and the alarm comes after a small part
# of it is routed: the broker only blocks connections that publish, so routerd must still
# have a backlog when the alarm lands however fast it routes (a stream published alongside
# raced it: on a quiet machine routerd drained it and, idle, was never blocked).
COUNT = 40_000
ROUTED_BEFORE_ALARM = 2_000
PUBLISH_TIMEOUT = 2.0


async def failures(daemon: Daemon) -> tuple[float, float]:
    """(publish failures, source requeues) so far."""
    text = await daemon.metrics()
    return (
        metric_sum(text, "routerd_publish_failures_total"),
        metric_sum(text, "routerd_source_nacks_total"),
    )


async def test_memory_alarm_blocks_without_a_timeout_storm_and_resumes(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=53)
    args = ["--publish-timeout", str(PUBLISH_TIMEOUT)]
    await broker.declare_config(isolated_config)
    assert await broker.publish(names.source, numbered(b for _, b in requests)) == COUNT
    async with running_daemon(isolated_config, amqp_url, log_dir, extra_args=args) as daemon:
        await wait_routed(broker, names, ROUTED_BEFORE_ALARM)
        before = await failures(daemon)
        async with memory_alarm():
            blocked = await wait_for(
                lambda: daemon.get("/readyz"),
                lambda answer: answer is not None and answer[0] == 503,
                within=10,
                what="/readyz 503 while the broker blocks publishing",
                interval=0.1,
            )
            gauge = metric_sum(await daemon.metrics(), "routerd_broker_blocked")
            # The alarm's length is the scenario, not a wait for a condition.
            await anyio.sleep(3 * PUBLISH_TIMEOUT)
            during = await failures(daemon)
            still_queued = await broker.depth(names.source)
        cleared = time.monotonic()
        await daemon.wait_ready(within=30)
        resumed = time.monotonic() - cleared
        timed_out = await settle(broker, names, COUNT, within=90)
        assert await daemon.stop(within=30) == 0

    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    storm = (during[0] - before[0], during[1] - before[1])
    record(
        "broker memory alarm (connection.blocked) for 3 publish timeouts",
        requests=COUNT,
        publish_failures_while_blocked=storm[0],
        requeues_while_blocked=storm[1],
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        clear_to_ready_s=round(resumed, 2),
    )
    assert still_queued, "the backlog drained before the alarm: the scenario tested nothing"
    assert blocked is not None and b"blocks publishing" in blocked[1], blocked
    assert gauge == 1, "routerd_broker_blocked should be 1 while blocked"
    assert storm == (0, 0), f"publish failures and requeues while blocked: {storm}"
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert accounting.duplicates() == 0, accounting.describe()
    assert timed_out is None, timed_out
