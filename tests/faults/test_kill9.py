"""`kill -9` of `routerd serve` at random moments while requests stream in, restarted each time;
and three daemons competing on the source while one of them is killed.

SIGKILL gives routerd no chance to drain: the broker requeues every delivery it had not
acked, and those whose decision was already confirmed arrive twice (at-least-once). Lost
must be 0; the duplicates (at most the prefetch per kill) are counted and reported.
"""

from __future__ import annotations

import random
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
from tests.harness.daemon import Daemon, running_daemon, start_daemon
from tests.harness.figures import record

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

COUNT = 6000
ROUNDS = 3
SEED = 20261130


async def test_kill_9_at_random_moments_loses_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    rng = random.Random(SEED)
    requests = mixed(COUNT, seed=SEED % 1000)
    # Where each round's kill lands: a random point in its share of the stream.
    share = COUNT // (ROUNDS + 1)
    kill_at = [share * i + rng.randrange(share // 4, share) for i in range(ROUNDS)]
    # Seconds from the last kill until its replacement answered /readyz 200.
    recoveries: list[float] = []
    killed_at: list[int] = []

    async with anyio.create_task_group() as tg:
        for round_, threshold in enumerate(kill_at):
            async with running_daemon(
                isolated_config, amqp_url, log_dir, name=f"round{round_}"
            ) as daemon:
                if round_ == 0:
                    # The stream, once the first daemon declared the source: published
                    # while the daemons come and go.
                    tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
                await wait_routed(broker, names, threshold)
                killed_at.append(await routed(broker, names))
                daemon.kill()  # SIGKILL
                killed = time.monotonic()
            recoveries.append(killed)
        async with running_daemon(isolated_config, amqp_url, log_dir, name="last") as last:
            resumed = time.monotonic()
            recoveries = [resumed - recoveries[-1]]
            timed_out = await settle(broker, names, COUNT, within=90)
            assert await last.stop(within=30) == 0

    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    record(
        "kill -9 during a stream",
        requests=COUNT,
        kills=ROUNDS,
        routed_at_kill=killed_at,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        kill_to_ready_s=round(recoveries[0], 2),
        seed=SEED,
    )
    assert all(n < COUNT for n in killed_at), f"the stream was over before a kill: {killed_at}"
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    # Each kill can double at most what was in flight: the prefetch.
    assert accounting.duplicates() <= ROUNDS * 256, accounting.describe()
    assert timed_out is None, timed_out
    assert await broker.depth(names.source) == 0


async def test_three_competing_daemons_one_killed_lose_nothing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    requests = mixed(COUNT, seed=29)
    daemons: list[Daemon] = [
        start_daemon(isolated_config, amqp_url, log_dir, name=f"replica{i}") for i in range(3)
    ]
    try:
        for daemon in daemons:
            await daemon.wait_ready()
        async with anyio.create_task_group() as tg:
            tg.start_soon(broker.publish, names.source, numbered(b for _, b in requests))
            await wait_routed(broker, names, COUNT // 3)
            at_kill = await routed(broker, names)
            daemons[0].kill()
            killed = time.monotonic()
        timed_out = await settle(broker, names, COUNT, within=90)
        finished_after = time.monotonic() - killed
        for survivor in daemons[1:]:
            assert await survivor.stop(within=30) == 0
    finally:
        for daemon in daemons:
            daemon.kill()
            print(f"--- {daemon.log_path.name} (exit {daemon.returncode}) ---")
            print(daemon.log_tail(30))

    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    record(
        "three replicas, one killed with kill -9",
        requests=COUNT,
        routed_at_kill=at_kill,
        lost=sum(accounting.lost().values()),
        duplicates=accounting.duplicates(),
        kill_to_all_routed_s=round(finished_after, 2),
    )
    assert at_kill < COUNT, "routing was over before the kill; raise COUNT"
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()
    assert accounting.duplicates() <= 256, accounting.describe()
    assert timed_out is None, timed_out
    assert await broker.depth(names.source) == 0
