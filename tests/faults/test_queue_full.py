"""A target queue at its length limit, and the rejected queue itself refusing publishes.

The transactional queue is declared by the config with `x-max-length` and `x-overflow:
reject-publish`, and nothing consumes it: once full, the broker nacks every publish to it.
Such requests are retried a bounded number of times (`max_redeliveries`), with a growing
pause between tries, then go to rejected (`redelivery_limit`). Meanwhile a policy makes the
rejected queue refuse publishes too: nothing may be dropped, so those requests stay in the
source, retried with the pause instead of bouncing between routerd and the broker as fast
as the two can go; the operator sees the nacks on /metrics and in the log. Once the policy
is cleared, everything lands.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import anyio
import pytest

from routerd.delivery import retry_pause
from tests.factories import mixed
from tests.harness.accounting import Accounting, QueueNames, drain_all, numbered, settle
from tests.harness.broker import Broker
from tests.harness.config import dump_config, full_prefetch_in_flight, read_config
from tests.harness.connections import rabbitmqctl
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.figures import record
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl"),
]

COUNT = 1500
MAX_LENGTH = 100
REFUSAL = 4.0
# What the rejected queue takes before it refuses. A quorum queue that refused a channel
# takes from it again only once a consumer made room, so the operator's fix in this test is
# what it would be in production: consume rejected (and lift the policy).
REJECTED_ROOM = 20


PREFETCH = 256


def tries_within(seconds: float) -> int:
    """How many requeues retry_pause allows one delivery within `seconds` (plus the first)."""
    tries, spent = 1, 0.0
    while spent + retry_pause(tries - 1) <= seconds:
        spent += retry_pause(tries - 1)
        tries += 1
    return tries


def with_length_limit(config: Path) -> None:
    data = read_config(config)
    # Fewer tries than the shipped 5: each nack is also retried for routerd's nack patience
    # (2 s) before it counts, and the scenario must reach "rejected refused too" quickly.
    for source in data["sources"] if "sources" in data else [data["source"]]:
        source["max_redeliveries"] = 2
    queue = data["targets"]["transactional"]["queues"][0]
    queue["arguments"] = {"x-max-length": MAX_LENGTH, "x-overflow": "reject-publish"}
    config.write_text(dump_config(data))


async def requeues(daemon: Daemon) -> float:
    return metric_sum(await daemon.metrics(), "routerd_source_nacks_total")


async def test_full_target_and_refusing_rejected_retry_bounded_and_lose_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    with_length_limit(isolated_config)
    full_prefetch_in_flight(isolated_config)
    requests = mixed(COUNT, seed=61)
    policy = f"test-refuse-{names.rejected}"
    refuse = json.dumps({"max-length": REJECTED_ROOM, "overflow": "reject-publish"})
    pattern = "^" + re.escape(names.rejected) + "$"
    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        await anyio.to_thread.run_sync(
            rabbitmqctl, "set_policy", "--apply-to", "queues", "--priority", "900", policy,
            pattern, refuse,
        )  # fmt: skip
        try:
            await broker.publish(names.source, numbered(b for _, b in requests))
            await wait_for(
                lambda: requeues(daemon),
                lambda n: n >= 1,
                within=30,
                what="the first requeue",
            )
            await daemon.wait_for_log("rejected refused it too", within=60)
            before = await requeues(daemon)
            window = time.monotonic()
            # The refusal's length is the scenario, not a wait for a condition.
            await anyio.sleep(REFUSAL)
            during = await requeues(daemon) - before
            window = time.monotonic() - window
            metrics = await daemon.metrics()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(rabbitmqctl, "clear_policy", policy)
        # The operator's fix: rejected is consumed again.
        received = await broker.drain(names.rejected)
        timed_out = await settle(broker, names, COUNT - len(received), within=90)
        assert await daemon.stop(within=30) == 0
        log = daemon.log_text()

    received += await drain_all(broker, names)
    accounting = Accounting.of(requests, received, names)
    nacks = metric_sum(metrics, "routerd_publish_failures_total", cause="nack")
    in_transactional = sum(1 for r in received if r.queue == names.transactional)
    rate = during / window
    record(
        "target at x-max-length (reject-publish) and rejected refusing",
        requests=COUNT,
        requeues_per_s_while_refused=round(rate, 1),
        publish_nacks_counted=nacks,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
    )
    # A quorum queue's length limit is approximate: once over it, the queue tells each
    # publishing channel to refuse from then on (rabbit_fifo's evaluate_limit), and the
    # publishes already on their way are still taken. From routerd those are at most its
    # window; publishing one loop step's batch as one frame, they arrive together.
    assert MAX_LENGTH <= in_transactional <= MAX_LENGTH + PREFETCH, (
        f"{in_transactional} in the queue"
    )
    assert not accounting.lost(), accounting.describe()
    assert accounting.duplicates() == 0, accounting.describe()
    assert nacks > 0, "the nacks must show on /metrics"
    assert "rejected refused it too" in log
    # Held by retry_pause, each of the prefetch's deliveries is retried at most this often
    # within the window; without the pause, as fast as the broker answers (421/s here).
    assert during <= PREFETCH * tries_within(window), f"{rate:.0f} requeues/s: a retry storm"
    assert timed_out is None, timed_out
