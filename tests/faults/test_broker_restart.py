"""The broker restarted (`rabbitmqctl stop_app` / `start_app`) while routerd routes a backlog.

Every connection drops; the quorum queues and their persistent messages come back with the
node. routerd must say not ready while the broker is away, reconnect by itself once it is
back, and lose nothing: requests whose decision was confirmed but whose ack died with the
connection arrive twice, and are counted.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

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
from tests.harness.alarms import broker_stopped
from tests.harness.broker import Broker
from tests.harness.daemon import running_daemon
from tests.harness.figures import record

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl"),
]

COUNT = 20_000
FAST_RETRY = ["--reconnect-min", "0.2", "--reconnect-max", "2"]


async def test_broker_restart_during_a_backlog_recovers_and_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=59)
    # The whole backlog is queued before the daemon starts: the test's own connection dies
    # with the broker, and routerd races no publisher, so the stop lands mid-stream at any
    # pace of the machine's.
    await broker.declare_config(isolated_config)
    await broker.publish(names.source, numbered(b for _, b in requests))
    async with running_daemon(isolated_config, amqp_url, log_dir, extra_args=FAST_RETRY) as daemon:
        await wait_routed(broker, names, COUNT // 10)
        async with broker_stopped():
            await daemon.wait_not_ready(15, during="while the broker is stopped")
            at_stop = await daemon.decided()
        started = time.monotonic()
        await daemon.wait_ready(within=60)
        recovered = time.monotonic() - started
        await broker.reconnect()
        timed_out = await settle(broker, names, COUNT, within=90)
        assert await daemon.stop(within=30) == 0

    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    record(
        "broker restarted (stop_app, start_app) during a backlog",
        requests=COUNT,
        routed_at_stop=at_stop,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        broker_up_to_ready_s=round(recovered, 2),
    )
    assert at_stop < COUNT, "routing was over before the stop; raise COUNT"
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert timed_out is None, timed_out
