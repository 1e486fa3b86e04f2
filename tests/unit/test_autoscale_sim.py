"""scripts/autoscale_sim.py: the HPA's arithmetic against hand-worked cases, and the queue
model against a case whose answer is known in closed form."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "autoscale_sim.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("autoscale_sim", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the class body runs.
    sys.modules["autoscale_sim"] = module
    spec.loader.exec_module(module)
    return module


sim = load_script()


def test_scale_up_limit_is_the_larger_policy_from_the_period_start() -> None:
    up = sim.SHIPPED_HPA.up_policies  # +100 % or +4 pods per 30 s, Max
    assert sim.scale_up_limit(2, 0, up) == 6  # 2+4 beats 2x2
    assert sim.scale_up_limit(10, 0, up) == 20  # 10x2 beats 10+4
    assert sim.scale_up_limit(6, 4, up) == 6  # started the period at 2: still 6
    assert sim.scale_down_limit(10, 0, sim.SHIPPED_HPA.down_policies) == 9
    assert sim.scale_down_limit(9, 1, sim.SHIPPED_HPA.down_policies) == 9


def test_tolerance_keeps_the_count() -> None:
    hpa = sim.HPA(sim.Autoscaler("t", 2, 10, 2000, cpu_target=None), 0.1)
    assert hpa.proposal(4, 4 * 2000 * 1.09, None, 4) == 4  # within 10 %
    assert hpa.proposal(4, 4 * 2000 * 1.11, None, 4) == 5  # ceil(8880 / 2000)
    assert hpa.proposal(4, 0, None, 4) == 0


def test_cpu_counts_starting_pods_as_idle_when_scaling_up() -> None:
    hpa = sim.HPA(sim.Autoscaler("t", 1, 20, 10**9, cpu_target=0.7), 0.1)
    # 2 of 6 pods ready, both at 100 %: over all 6 the usage is 33 %, which would reverse
    # the direction, so the count stays (the queue metric proposes 0 here).
    assert hpa.proposal(6, 0, 1.0, 2) == 6
    # All ready at 100 %: ceil(6 x 1.0 / 0.7) = 9.
    assert hpa.proposal(6, 0, 1.0, 6) == 9


def test_scale_down_waits_for_the_stabilization_window() -> None:
    scaler = sim.Autoscaler("t", 2, 10, 2000, cpu_target=None)
    hpa = sim.HPA(scaler, 0.1)
    assert hpa.decide(0, 10, 10) == 10
    # Quiet from now on: nothing changes for 300 s, then one pod a minute.
    assert [hpa.decide(t, 10, 2) for t in (15, 150, 300)] == [10, 10, 10]
    assert hpa.decide(315, 10, 2) == 9
    assert hpa.decide(330, 9, 2) == 9  # one per 60 s
    assert hpa.decide(375, 9, 2) == 8


def test_fifo_wait_is_backlog_over_capacity() -> None:
    # Two replicas at 5,000 msg/s and no autoscaling; 15,000 msg/s for 10 s builds a
    # backlog of 50,000, and the last request of the burst waits 50,000 / 10,000 = 5 s.
    fixed = sim.Autoscaler("fixed", 2, 2, 10**9, cpu_target=None)
    load = sim.Load(transactional=0, spike=150_000, spike_start=10, spike_seconds=10)
    run = sim.simulate(fixed, load, sim.Cluster(horizon=60))
    assert max(run.backlog) == pytest.approx(50_000, rel=0.01)
    worst, _ = run.latency_stats(10, 20)
    assert worst == pytest.approx(5.0, abs=0.3)
    assert run.drain_time(load) == pytest.approx(15.0, abs=0.5)


def test_capacity_above_arrivals_means_no_wait() -> None:
    fixed = sim.Autoscaler("fixed", 5, 5, 10**9, cpu_target=None)
    load = sim.Load(transactional=1000, spike=600_000, spike_start=10, spike_seconds=60)
    run = sim.simulate(fixed, load, sim.Cluster(horizon=120))
    assert max(run.backlog) == 0
    assert max(run.latency) == pytest.approx(0, abs=1e-6)


def test_replicas_stay_within_bounds_and_new_pods_wait_to_start() -> None:
    load = sim.Load()
    cluster = sim.Cluster(pod_start=20)
    run = sim.simulate(sim.SHIPPED_HPA, load, cluster)
    assert min(run.replicas) >= 2 and max(run.replicas) <= 10
    first_up = next(i for i, n in enumerate(run.replicas) if n > 2)
    start = run.times[first_up]
    for t, ready in zip(run.times, run.consuming, strict=True):
        if start <= t < start + 20 - cluster.dt:
            assert ready == 2, t
    assert math.isfinite(run.drain_time(load))
