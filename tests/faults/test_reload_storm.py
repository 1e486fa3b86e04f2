"""A reload storm under load while the broker is restarted.

routerd routes a backlog while its config is rewritten (the catch-all rule repointed back and
forth, saved by rename) and SIGHUP'd every 0.2 s, and the broker application is stopped and
started in the middle of it. Reloads during the outage cannot declare anything; the next
session declares the table it runs. Nothing may be lost, the daemon must stay up and come
back ready; where a request went may follow either table.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import anyio
import pytest

from tests.factories import mixed
from tests.faults.test_reload import with_catch_all
from tests.harness.accounting import Accounting, QueueNames, numbered, settle, wait_routed
from tests.harness.alarms import broker_stopped
from tests.harness.broker import Broker
from tests.harness.config import read_config, write_by_rename
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.figures import record
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl"),
]

COUNT = 20_000
EVERY = 0.2
FAST_RETRY = ["--reconnect-min", "0.2", "--reconnect-max", "2"]


async def storm(daemon: Daemon, config: Path, stop: anyio.Event) -> int:
    """Rewrite and SIGHUP the config every EVERY seconds until `stop`; returns the edits."""
    original = read_config(config)
    edits = 0
    while not stop.is_set():
        target = ("bulk", "transactional")[edits % 2]
        write_by_rename(config, with_catch_all(original, f"storm-{edits}", target))
        daemon.send(signal.SIGHUP)
        edits += 1
        # The storm's pace, not a wait for a condition.
        with anyio.move_on_after(EVERY):
            await stop.wait()
    return edits


async def test_reload_storm_while_the_broker_restarts_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=67)
    stop = anyio.Event()
    edits = 0

    async def run_storm(daemon: Daemon) -> None:
        nonlocal edits
        edits = await storm(daemon, isolated_config, stop)

    # Queued before the daemon starts, as in test_broker_restart: the stop lands mid-stream.
    await broker.declare_config(isolated_config)
    await broker.publish(names.source, numbered(b for _, b in requests))
    async with running_daemon(isolated_config, amqp_url, log_dir, extra_args=FAST_RETRY) as daemon:
        await wait_routed(broker, names, COUNT // 10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_storm, daemon)
            async with broker_stopped():
                await daemon.wait_not_ready(15, during="while the broker is stopped")
                at_stop = await daemon.decided()
            started = time.monotonic()
            await daemon.wait_ready(within=60)
            recovered = time.monotonic() - started

            async def accepted_so_far() -> float:
                return metric_sum(
                    await daemon.metrics(), "routerd_reloads_total", result="accepted"
                )

            # The storm goes on after the recovery until edits are taken again: how many
            # fell before the stop depends on the machine's pace, not on routerd.
            await wait_for(
                accepted_so_far,
                lambda n: n >= 2,
                within=30,
                what="reloads accepted again after the broker is back",
                interval=0.2,
            )
            stop.set()
        await broker.reconnect()
        timed_out = await settle(broker, names, COUNT, within=90)
        metrics = await daemon.metrics()
        assert daemon.returncode is None, "the daemon died in the storm"
        assert await daemon.stop(within=30) == 0

    received = []
    for queue in names.targets:
        received.extend(await broker.drain(queue))
    accounting = Accounting.of(requests, received, names)
    accepted = metric_sum(metrics, "routerd_reloads_total", result="accepted")
    record(
        "reload storm (every 0.2 s) while the broker restarts",
        requests=COUNT,
        edits=edits,
        reloads_accepted=accepted,
        routed_at_stop=at_stop,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        broker_up_to_ready_s=round(recovered, 2),
    )
    assert at_stop < COUNT, "routing was over before the stop; raise COUNT"
    assert accepted >= 2, f"only {accepted} reloads accepted of {edits} edits"
    assert not accounting.lost(), accounting.describe()
    assert timed_out is None, timed_out
