"""SIGTERM while routing: exit 0, nothing lost, nothing duplicated; a second daemon finishes."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from tests.factories import mixed
from tests.harness.accounting import Accounting, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker
from tests.harness.daemon import running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

COUNT = 4000


async def test_sigterm_under_load_loses_nothing_and_duplicates_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=7)
    shutdown = ["--shutdown-timeout", "15"]

    async with (
        running_daemon(
            isolated_config, amqp_url, log_dir, extra_args=shutdown, name="first"
        ) as first,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
        routed = await wait_for(
            lambda: broker.depths(names.targets),
            lambda d: sum(d.values()) >= COUNT // 8,
            within=60,
            what="routing under way",
            interval=0.02,
        )
        first.send(signal.SIGTERM)
        code = await first.wait_exit(within=30)
    # The publisher is done here: everything sent sits in the source or a target.
    assert code == 0, f"exit code {code} on SIGTERM"
    assert sum(routed.values()) < COUNT, "routing was over before SIGTERM; raise COUNT"

    after = await broker.depths([names.source, *names.targets])
    left = after[names.source]
    done = sum(after[q] for q in names.targets)
    print(f"at SIGTERM {sum(routed.values())} routed; after the stop {done} routed, {left} left")
    assert left > 0, "a stop under load should leave work in the source"
    # A clean stop acks exactly what was confirmed: no request both routed and still queued.
    assert left + done == COUNT, f"source {left} + targets {done} != {COUNT} published"

    async with running_daemon(isolated_config, amqp_url, log_dir, name="second") as second:
        timed_out = await settle(broker, names, COUNT, within=60)
        assert await second.stop(within=30) == 0

    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    assert accounting.exact, accounting.describe()
    assert timed_out is None, timed_out
    assert await broker.depth(names.source) == 0
