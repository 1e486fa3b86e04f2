"""The event loop's lag: a loop held by CPU-bound work shows as one late timer."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry, Histogram

from routerd.observe.loop_lag import LAG_BUCKETS, watch_loop_lag
from tests.harness.wait import wait_for

pytestmark = pytest.mark.anyio


def lag_histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("lag", "test", buckets=LAG_BUCKETS, registry=registry), registry


async def test_a_held_loop_is_observed_as_one_late_timer() -> None:
    lag, registry = lag_histogram()

    async def over_100ms() -> float:
        count = registry.get_sample_value("lag_count") or 0
        within = registry.get_sample_value("lag_bucket", {"le": "0.1"}) or 0
        return count - within

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_loop_lag, lag, 0.02)
        await anyio.lowlevel.checkpoint()  # the watcher sets its first timer
        # The loop held on purpose, as a CPU-bound step in its thread would hold it.
        time.sleep(0.3)  # noqa: ASYNC251
        # Its timer was due within 20 ms and ran after the 300 ms hold: late by > 0.25 s.
        await wait_for(over_100ms, lambda n: n >= 1, within=10, what="a late timer")
        assert (registry.get_sample_value("lag_sum") or 0) >= 0.25
        tg.cancel_scope.cancel()


async def test_each_interval_is_observed() -> None:
    lag, registry = lag_histogram()

    async def count() -> float:
        return registry.get_sample_value("lag_count") or 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_loop_lag, lag, 0.01)
        await wait_for(count, lambda n: n >= 5, within=10, what="five observations")
        tg.cancel_scope.cancel()
