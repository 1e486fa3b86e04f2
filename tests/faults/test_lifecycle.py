"""Lifecycle edges: no broker at start, and SIGTERM while the broker connection is down."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import anyio
import pytest

from tests.factories import mixed
from tests.harness.accounting import Accounting, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker
from tests.harness.connections import broker_connections_of, close_connections
from tests.harness.daemon import free_port, running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

PASSWORD = "s3cr3t-Pa55"


async def test_without_a_broker_it_lives_says_not_ready_and_stops_cleanly(
    isolated_config: Path, log_dir: Path, anyio_backend: str
) -> None:
    url = f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}/"  # nothing listens there
    async with running_daemon(isolated_config, url, log_dir, wait_ready=False) as daemon:

        async def probe() -> tuple[int | None, int | None]:
            health = await daemon.get("/healthz")
            return (health[0] if health else None, await daemon.ready_status())

        await wait_for(
            probe, lambda s: s == (200, 503), within=30, what="/healthz 200, /readyz 503"
        )
        # Still retrying, still alive, a few backoff rounds later.
        await daemon.wait_for_log(r"(?i)reconnect|retry|connect", within=10)
        assert await probe() == (200, 503)
        metrics = await daemon.metrics()
        assert await daemon.stop(within=10) == 0
    assert PASSWORD not in daemon.log_text(), "the AMQP password was logged"
    assert PASSWORD not in metrics, "the AMQP password is in /metrics"


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_sigterm_while_the_connection_is_down_exits_promptly_and_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    # Enough that routing is still going when rabbitmqctl has closed the connection
    # (about a second): 5,000 were once all routed by then, on a fast moment of this box.
    count = 20000
    requests = mixed(count, seed=41)
    async with (
        running_daemon(
            isolated_config,
            amqp_url,
            log_dir,
            extra_args=["--shutdown-timeout", "30"],
            name="first",
        ) as first,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
        connections = await broker_connections_of(first.pid)
        await wait_for(
            lambda: broker.depths(names.targets),
            lambda d: sum(d.values()) >= count // 8,
            within=60,
            what="routing under way",
            interval=0.02,
        )
        assert await close_connections(connections) >= 1
        first.send(signal.SIGTERM)
        # Well inside the 30 s shutdown timeout: nothing in flight can finish anyway.
        code = await first.wait_exit(within=10)
    assert code == 0
    left = await broker.depth(names.source)
    assert left, "routing was over before the connection loss; raise the count"

    async with running_daemon(isolated_config, amqp_url, log_dir, name="second") as second:
        timed_out = await settle(broker, names, count, within=60)
        assert await second.stop(within=30) == 0
    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    print(f"duplicates after a stop during a connection loss: {accounting.duplicates()}")
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert timed_out is None, timed_out
