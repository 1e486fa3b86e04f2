#!/usr/bin/env python3
"""Simulate routerd's autoscaling over a bulk spike; plot backlog, replicas and latency.

    .venv/bin/python scripts/autoscale_sim.py                       # table + docs/img/autoscale.png
    .venv/bin/python scripts/autoscale_sim.py --per-replica 3000 --pod-start 40 --png /tmp/a.png

The load: steady transactional traffic, and on top of it a bulk spike (1 million send
requests within a minute by default), all into the one shared source queue, served in
arrival order (FIFO) by the ready replicas at `--per-replica` msg/s each (~5,000 msg/s
measured by scripts/bench_serve.py; the design brief's table). A transactional request's
latency here is its wait in the source queue: the time until every request ahead of it was
consumed. routerd's own processing (p50 ~6 ms) comes on top and is left out.

The autoscaler is the Kubernetes HorizontalPodAutoscaler's algorithm as documented
(kubernetes.io, "Horizontal Pod Autoscaling") and implemented in its replica calculator:

- every `--sync` seconds (15 s), for each metric, a proposal: AverageValue targets
  (the queue metric) propose ceil(value / target); Utilization targets (CPU) propose
  ceil(replicas x utilization / target), counting pods that are not ready yet at 0 % when
  scaling up; a usage ratio within the tolerance (0.1) of 1 keeps the current count;
- the largest proposal wins, then the behaviour: stabilization windows (the largest
  recommendation of the last 300 s when scaling down, the smallest of the last 0 s up),
  then the policies over their periods (scale-up limit from the replica count at the start
  of the period; selectPolicy Max), then min/max replicas;
- new pods consume after `--pod-start` seconds; removed pods stop consuming at once.

The queue metric is RabbitMQ's ready count (messages not delivered to a consumer): the
backlog minus what the replicas hold in prefetch (256 each). The HPA reads it through
Prometheus (age up to one scrape, `--metric-lag` 15 s); KEDA's rabbitmq scaler reads the
queue when the HPA asks (age 0). CPU per ready replica is its share of the work, as a
fraction of the one core it requests.
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNG = ROOT / "docs" / "img" / "autoscale.png"


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period: float


@dataclass(frozen=True)
class Autoscaler:
    """One HPA (or KEDA's HPA) configuration, as in k8s/hpa.yaml."""

    name: str
    min_replicas: int
    max_replicas: int
    target_ready: float  # ready messages per replica (AverageValue)
    cpu_target: float | None = 0.70
    metric_lag: float = 15.0
    up_window: float = 0.0
    down_window: float = 300.0
    up_policies: tuple[Policy, ...] = (Policy("Percent", 100, 30), Policy("Pods", 4, 30))
    down_policies: tuple[Policy, ...] = (Policy("Pods", 1, 60),)


@dataclass(frozen=True)
class Load:
    transactional: float = 1000.0  # msg/s, steady
    spike: int = 1_000_000  # bulk send requests...
    spike_start: float = 60.0
    spike_seconds: float = 60.0  # ...arriving evenly within this

    def rate(self, t: float) -> tuple[float, float]:
        """(transactional, bulk) arrivals per second at time t."""
        bulk = self.spike / self.spike_seconds
        in_spike = self.spike_start <= t < self.spike_start + self.spike_seconds
        return self.transactional, bulk if in_spike else 0.0


@dataclass(frozen=True)
class Cluster:
    per_replica: float = 5000.0  # msg/s one ready replica routes
    pod_start: float = 20.0  # seconds from scale-up to consuming
    prefetch: int = 256
    sync: float = 15.0
    tolerance: float = 0.1
    dt: float = 0.25
    horizon: float = 1200.0
    queue_ceiling: float = 0.0  # msg/s one queue delivers at most; 0 = no limit


@dataclass
class Run:
    """What one simulation produced, sampled every dt."""

    scaler: Autoscaler
    times: list[float] = field(default_factory=list)
    backlog: list[float] = field(default_factory=list)
    ready_metric: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)  # the Deployment's spec
    consuming: list[int] = field(default_factory=list)  # ready pods
    latency: list[float] = field(default_factory=list)  # of a request arriving at times[i]

    def drain_time(self, load: Load) -> float:
        """Seconds from the spike's start until the backlog is back under one second of
        transactional traffic (after the spike has ended)."""
        end = load.spike_start + load.spike_seconds
        for t, b in zip(self.times, self.backlog, strict=True):
            if t >= end and b <= max(load.transactional, 1.0):
                return t - load.spike_start
        return math.inf

    def latency_stats(self, start: float, end: float) -> tuple[float, float]:
        """(max, median) transactional latency of requests arriving in [start, end)."""
        window = sorted(
            lat for t, lat in zip(self.times, self.latency, strict=True) if start <= t < end
        )
        if not window:
            return 0.0, 0.0
        return window[-1], window[len(window) // 2]

    def replica_seconds(self) -> float:
        return sum(self.replicas) * (self.times[1] - self.times[0]) if len(self.times) > 1 else 0


def scale_up_limit(current: int, added: int, policies: Sequence[Policy]) -> int:
    """The most replicas the scale-up policies allow now (selectPolicy Max); `added` are
    the replicas added within each policy's period (here: the same period for all)."""
    start = current - added
    limits = []
    for p in policies:
        if p.kind == "Pods":
            limits.append(start + p.value)
        else:
            limits.append(math.ceil(start * (1 + p.value / 100)))
    return max(limits)


def scale_down_limit(current: int, removed: int, policies: Sequence[Policy]) -> int:
    """The fewest replicas the scale-down policies allow now (selectPolicy Max: the policy
    allowing the largest change)."""
    start = current + removed
    limits = []
    for p in policies:
        if p.kind == "Pods":
            limits.append(start - p.value)
        else:
            limits.append(math.floor(start * (1 - p.value / 100)))
    return min(limits)


class HPA:
    """The HorizontalPodAutoscaler's decision, one call per sync period."""

    def __init__(self, scaler: Autoscaler, tolerance: float) -> None:
        self.s = scaler
        self.tolerance = tolerance
        self.recommendations: list[tuple[float, int]] = []
        self.events: list[tuple[float, int]] = []  # (time, replica change)

    def proposal(self, current: int, ready_metric: float, cpu: float | None, ready: int) -> int:
        proposals = []
        # External metric, AverageValue target: usage ratio against target x replicas.
        ratio = ready_metric / (self.s.target_ready * current)
        if abs(ratio - 1) <= self.tolerance:
            proposals.append(current)
        else:
            proposals.append(math.ceil(ready_metric / self.s.target_ready))
        if self.s.cpu_target is not None and cpu is not None and ready > 0:
            # Pods not ready yet count as 0 % when that would scale up (they may be idle
            # only because they are starting); the ratio is over all pods then.
            ratio = cpu / self.s.cpu_target
            if ratio > 1 and ready < current:
                ratio = cpu * ready / current / self.s.cpu_target
                if ratio < 1:
                    ratio = 1.0  # the starting pods reverse the direction: no change
            if abs(ratio - 1) <= self.tolerance:
                proposals.append(current)
            else:
                proposals.append(math.ceil(ratio * (current if ratio > 1 else ready)))
        return max(proposals)

    def decide(self, now: float, current: int, proposal: int) -> int:
        self.recommendations.append((now, proposal))
        horizon = max(self.s.up_window, self.s.down_window)
        self.recommendations = [(t, r) for t, r in self.recommendations if now - t <= horizon]
        up = min(r for t, r in self.recommendations if now - t <= self.s.up_window)
        down = max(r for t, r in self.recommendations if now - t <= self.s.down_window)
        desired = current
        if desired < up:
            desired = up
        if desired > down:
            desired = down
        if desired > current:
            period = max(p.period for p in self.s.up_policies)
            added = sum(c for t, c in self.events if c > 0 and now - t < period)
            desired = min(desired, scale_up_limit(current, added, self.s.up_policies))
        elif desired < current:
            period = max(p.period for p in self.s.down_policies)
            removed = -sum(c for t, c in self.events if c < 0 and now - t < period)
            desired = max(desired, scale_down_limit(current, removed, self.s.down_policies))
        desired = min(max(desired, self.s.min_replicas), self.s.max_replicas)
        if desired != current:
            self.events.append((now, desired - current))
        return desired


def simulate(scaler: Autoscaler, load: Load, cluster: Cluster) -> Run:
    run = Run(scaler)
    hpa = HPA(scaler, cluster.tolerance)
    dt = cluster.dt
    # Start in the steady state: the minimum, all consuming.
    pods: list[float] = [0.0] * scaler.min_replicas  # the time each pod starts consuming
    backlog = 0.0
    arrived = [0.0]  # cumulative arrivals at the end of each step
    consumed = [0.0]  # cumulative consumption
    busy: list[float] = []  # per step: fraction of ready capacity used
    next_sync = cluster.sync
    steps = int(cluster.horizon / dt)
    for i in range(steps):
        t = i * dt
        ready = sum(1 for start in pods if start <= t)
        transactional, bulk = load.rate(t)
        incoming = (transactional + bulk) * dt
        capacity = ready * cluster.per_replica * dt
        if cluster.queue_ceiling:
            capacity = min(capacity, cluster.queue_ceiling * dt)
        out = min(backlog + incoming, capacity)
        backlog += incoming - out
        arrived.append(arrived[-1] + incoming)
        consumed.append(consumed[-1] + out)
        busy.append(out / (ready * cluster.per_replica * dt) if ready else 0.0)
        ready_metric = max(0.0, backlog - ready * cluster.prefetch)
        run.times.append(t)
        run.backlog.append(backlog)
        run.ready_metric.append(ready_metric)
        run.replicas.append(len(pods))
        run.consuming.append(ready)
        if t + dt >= next_sync:
            next_sync += cluster.sync
            lag_steps = int(scaler.metric_lag / dt)
            seen = run.ready_metric[max(0, len(run.ready_metric) - 1 - lag_steps)]
            window = busy[-int(cluster.sync / dt) :]
            cpu = sum(window) / len(window)
            current = len(pods)
            desired = hpa.decide(t, current, hpa.proposal(current, seen, cpu, ready))
            if desired > current:
                pods += [t + cluster.pod_start] * (desired - current)
            elif desired < current:
                # The newest pods go first (the ReplicaSet prefers removing unready ones).
                pods = sorted(pods)[:desired]
    # FIFO: a request that arrived as number A[i] leaves once consumed reaches A[i].
    for i, t in enumerate(run.times):
        position = arrived[i] + 1e-9
        j = bisect.bisect_left(consumed, position)
        if j >= len(consumed):
            run.latency.append(math.inf)
            continue
        # Interpolate inside the step in which it was consumed.
        before = consumed[j - 1]
        step = consumed[j] - before
        frac = (position - before) / step if step > 0 else 1.0
        run.latency.append(max(0.0, (j - 1 + frac) * dt - t))
    return run


SHIPPED_HPA = Autoscaler("shipped HPA: 2-10, 2000 ready/replica, CPU 70 %", 2, 10, 2000)
SHIPPED_KEDA = replace(SHIPPED_HPA, name="shipped KEDA: the same, queue read live", metric_lag=0)
DESIGN = Autoscaler("design: 5-20, 30 ready/replica, CPU 70 %", 5, 20, 30)
SCENARIOS = (SHIPPED_HPA, SHIPPED_KEDA, DESIGN)


def table(runs: Sequence[Run], load: Load) -> str:
    spike_end = load.spike_start + load.spike_seconds
    lines = [
        f"{'autoscaler':<46} {'drain':>7} {'peak':>6} {'peak':>9} "
        f"{'txn wait':>9} {'txn wait':>9} {'replica':>8}",
        f"{'':<46} {'s':>7} {'pods':>6} {'backlog':>9} {'max s':>9} {'median s':>9} {'minutes':>8}",
    ]
    for run in runs:
        drain = run.drain_time(load)
        worst, median = run.latency_stats(load.spike_start, load.spike_start + drain)
        lines.append(
            f"{run.scaler.name:<46} {drain:>7.0f} {max(run.replicas):>6} "
            f"{max(run.backlog):>9,.0f} {worst:>9.1f} {median:>9.1f} "
            f"{run.replica_seconds() / 60:>8.0f}"
        )
    lines.append(
        f"(spike: {load.spike:,} bulk send requests in {load.spike_seconds:.0f} s from "
        f"t={load.spike_start:.0f} s, until t={spike_end:.0f} s, on "
        f"{load.transactional:,.0f} transactional msg/s. drain: s from the spike's first request "
        f"until the backlog is under 1 s of transactional traffic ({load.spike_seconds:.0f} = "
        "it kept up); txn wait: of transactional requests arriving meanwhile)"
    )
    return "\n".join(lines)


def plot(panels: Sequence[tuple[Cluster, Sequence[Run]]], load: Load, path: Path) -> None:
    """One column per per-replica throughput: backlog, replicas, transactional wait."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        3, len(panels), figsize=(7 * len(panels), 9), sharex=True, squeeze=False
    )
    for col, (cluster, runs) in enumerate(panels):
        top, mid, bottom = axes[0][col], axes[1][col], axes[2][col]
        for run in runs:
            minutes = [t / 60 for t in run.times]
            top.plot(minutes, [b / 1000 for b in run.backlog], label=run.scaler.name)
            mid.step(minutes, run.replicas, where="post", label=run.scaler.name)
            bottom.plot(minutes, run.latency, label=run.scaler.name)
        top.set_title(
            f"{cluster.per_replica:,.0f} msg/s per replica, pods consume "
            f"{cluster.pod_start:.0f} s after scale-up",
            fontsize=10,
        )
        bottom.set_xlabel("minutes")
        for ax in (top, mid, bottom):
            ax.axvspan(
                load.spike_start / 60,
                (load.spike_start + load.spike_seconds) / 60,
                color="0.9",
                zorder=0,
            )
            ax.grid(True, alpha=0.3)
        top.legend(loc="upper right", fontsize=8)
    axes[0][0].set_ylabel("source backlog\n(thousand requests)")
    axes[1][0].set_ylabel("replicas")
    axes[2][0].set_ylabel("transactional request\nwait in the source queue (s)")
    fig.suptitle(
        f"{load.spike:,} bulk send requests within {load.spike_seconds:.0f} s (grey) on "
        f"{load.transactional:,.0f} transactional msg/s, one shared FIFO source queue",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No software/date metadata: a rerun with the same numbers writes the same file.
    fig.savefig(path, dpi=72, metadata={"Software": None})
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--per-replica",
        type=float,
        nargs="+",
        default=[5000.0, 2500.0],
        help="msg/s per replica, one figure column each (default: the measured ~5,000 and "
        "half of it, for a slower node or bigger requests)",
    )
    parser.add_argument("--pod-start", type=float, default=20.0, help="s until a new pod consumes")
    parser.add_argument("--transactional", type=float, default=1000.0, help="steady msg/s")
    parser.add_argument("--spike", type=int, default=1_000_000, help="bulk requests")
    parser.add_argument("--spike-seconds", type=float, default=60.0)
    parser.add_argument(
        "--metric-lag", type=float, default=15.0, help="age of the HPA's queue metric"
    )
    parser.add_argument("--queue-ceiling", type=float, default=0.0, help="msg/s; 0 = none")
    parser.add_argument("--horizon", type=float, default=900.0, help="seconds simulated")
    parser.add_argument("--png", type=Path, default=PNG, help="where to draw; '-' for none")
    args = parser.parse_args(argv)
    load = Load(args.transactional, args.spike, 60.0, args.spike_seconds)
    scenarios = [replace(s, metric_lag=args.metric_lag) if s.metric_lag else s for s in SCENARIOS]
    panels = []
    for per_replica in args.per_replica:
        cluster = Cluster(
            per_replica=per_replica,
            pod_start=args.pod_start,
            horizon=args.horizon,
            queue_ceiling=args.queue_ceiling,
        )
        runs = [simulate(s, load, cluster) for s in scenarios]
        print(
            f"per replica {per_replica:,.0f} msg/s, new pods consume after {args.pod_start:.0f} s"
        )
        print(table(runs, load), end="\n\n")
        panels.append((cluster, runs))
    if str(args.png) != "-":
        plot(panels, load, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
