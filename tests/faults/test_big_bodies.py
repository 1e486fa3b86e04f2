"""Bodies at the size limit at full rate: in-flight memory is bounded by bytes, not only by
count.

RabbitMQ bounds unacknowledged deliveries by count alone, so a source's prefetch of 256 with
1 MiB bodies would let the broker hand one daemon 256 MiB at once. Each source's window is
its prefetch lowered to fit `max_in_flight_bytes`; here a 4 MiB budget with the shipped
1 MiB limit must give a window of 4, which the broker itself enforces and the daemon's own
gauge of bodies in hand never exceeds, with nothing lost.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import yaml

from tests.factories import valid_v1_at_limit
from tests.harness.accounting import Accounting, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker
from tests.harness.config import read_config, source_entries
from tests.harness.connections import rabbitmqctl
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.figures import record
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

BUDGET = 4 * 1024 * 1024
COUNT = 40


def consumer_prefetch(queue: str) -> list[int]:
    """The prefetch the broker applies to each consumer of `queue`."""
    rows = rabbitmqctl("list_consumers", "queue_name", "prefetch_count")
    pairs = (row.split("\t") for row in rows.splitlines() if row.strip())
    return [int(count) for name, count in pairs if name == queue]


@pytest.fixture
def budgeted_config(isolated_config: Path) -> Path:
    """The isolated shipped config with every source's byte budget set to BUDGET."""
    data = read_config(isolated_config)
    for source in source_entries(data):
        source["max_in_flight_bytes"] = BUDGET
    isolated_config.write_text(yaml.safe_dump(data, sort_keys=False))
    return isolated_config


async def test_a_byte_budget_lowers_the_window_and_bounds_bodies_in_hand(
    broker: Broker, names: QueueNames, budgeted_config: Path, amqp_url: str, log_dir: Path
) -> None:
    isolated_config = budgeted_config
    limit = read_config(isolated_config)["limits"]["max_body_bytes"]
    bodies = [valid_v1_at_limit(i, limit) for i in range(COUNT)]
    await broker.declare_config(isolated_config)
    assert await broker.publish(names.source, numbered(bodies), window=8) == COUNT

    peak = 0.0

    async def watch(daemon: Daemon) -> None:
        nonlocal peak
        while True:
            peak = max(peak, metric_sum(await daemon.metrics(), "routerd_in_flight_bytes"))
            await anyio.sleep(0.005)

    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, daemon)
            prefetch = await wait_for(
                lambda: anyio.to_thread.run_sync(consumer_prefetch, names.source),
                lambda counts: bool(counts),
                within=30,
                what=f"routerd's consumer on {names.source}",
            )
            timed_out = await settle(broker, names, COUNT, within=120)
            tg.cancel_scope.cancel()
        assert await daemon.stop(within=30) == 0
        log = daemon.log_text()

    accounting = Accounting.of([("any", b) for b in bodies], await drain_all(broker, names), names)
    record(
        "bodies at the 1 MiB limit, 4 MiB byte budget",
        requests=COUNT,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        window=prefetch[0] if prefetch else None,
        peak_bodies_in_hand_mib=round(peak / 2**20, 1),
    )
    assert prefetch == [BUDGET // limit], prefetch
    assert "prefetch lowered to keep in-flight bodies within max_in_flight_bytes" in log
    assert 0 < peak <= BUDGET, f"{peak} bytes of bodies in hand, budget {BUDGET}"
    assert not accounting.lost(), accounting.describe()
    assert accounting.duplicates() == 0, accounting.describe()
    assert timed_out is None, timed_out
