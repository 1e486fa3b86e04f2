"""Resident memory of `routerd serve` while it drains a big backlog and 1 MiB bodies, and
the total rate and CPU per request of 1, 2 and 3 competing daemons on one queue.

    .venv/bin/python scripts/bench_scale.py [--backlog 200000] [--big 300]
        [--scale 30000] [--replicas 1,2,3] [--rounds 1] [--skip memory|scale] [--json PATH]

Every phase runs its own daemons on an isolated copy of the shipped config and drains a
backlog loaded before they start; nothing else consumes those queues. RSS is sampled from
/proc every 0.2 s. "No loss" compares what reached the target queues, once the daemons
have stopped, with what was loaded. `--backlog 0` or `--big 0` leaves that memory phase
out; `--rounds N` repeats the scale-out runs, the order of replica counts alternating per
round. Prints figures, asserts nothing; the memory goal is <= 150 MB throughout.
`--json PATH` also writes every drain's figures: per replica its CPU seconds, requests
consumed, peak RSS and the RSS samples.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_serve import (  # noqa: E402
    DEFAULT_URL,
    RSS_SAMPLE,
    backlog,
    cpu_seconds,
    isolated_copy,
    peak_rss_mib,
    preload,
    shipped_window,
    status_mib,
    write_json,
)

from tests.factories import valid_v1_at_limit  # noqa: E402
from tests.harness import Broker, Daemon, metric_sum, start_daemon, topology  # noqa: E402
from tests.harness.config import catch_all_and_targets  # noqa: E402

CONSUMED = "routerd_requests_consumed_total"
# Share of the ~1 KB requests that fail validation, as in bench_serve's backlog.
INVALID = 0.05


def big_bodies(count: int, size: int) -> list[bytes]:
    """Valid v1 requests of about `size` bytes (a long text part)."""
    return [valid_v1_at_limit(i, size) for i in range(count)]


class Drain:
    """What one drain by `replicas` daemons measured."""

    def __init__(self, replicas: int, bodies: list[bytes]) -> None:
        self.replicas = replicas
        self.loaded = len(bodies)
        self.mean_body_bytes = statistics.fmean(map(len, bodies)) if bodies else 0.0
        # In the targets once the daemons stopped (all of it), left in the source then,
        # and routed during the timed part (from the first arrival to the last).
        self.routed_total = 0
        self.source_left = 0
        self.routed = 0
        self.seconds = 0.0
        # When the first request arrived, in seconds since the daemons started (the RSS
        # samples' clock): before it they were starting, not draining.
        self.drain_started_s: float | None = None
        # Per replica, over the timed part: the daemon's CPU seconds and the requests it
        # took from the source (its own counter: competing daemons do not share evenly).
        self.cpu: list[float] = []
        self.consumed: list[float] = []
        self.peak_rss: list[float] = []
        # Per replica, (seconds since the daemons started, VmRSS MiB).
        self.rss: list[list[tuple[float, float]]] = []

    @property
    def rate(self) -> float:
        return self.routed / self.seconds if self.seconds else float("nan")

    @property
    def lost(self) -> int:
        """Requests neither in a target nor still in the source (negative: duplicates)."""
        return self.loaded - self.routed_total - self.source_left

    def as_json(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "loaded": self.loaded,
            "mean_body_bytes": self.mean_body_bytes,
            "routed_total": self.routed_total,
            "source_left": self.source_left,
            "lost": self.lost,
            "routed": self.routed,
            "seconds": self.seconds,
            "drain_started_s": self.drain_started_s,
            "rate": self.rate,
            "cpu_seconds": self.cpu,
            "consumed": self.consumed,
            "cpu_ms_per_request": 1000 * sum(self.cpu) / max(self.routed, 1),
            "cpu_ms_per_request_by_replica": [
                1000 * c / n if n else None for c, n in zip(self.cpu, self.consumed, strict=True)
            ],
            "peak_rss_mib": self.peak_rss,
            "rss_mib": [[[round(t, 3), mib] for t, mib in series] for series in self.rss],
        }


async def consumed(daemons: list[Daemon]) -> list[float]:
    return [metric_sum(await d.metrics(), CONSUMED) for d in daemons]


async def drain(
    url: str, bodies: list[bytes], replicas: int, limit: float, prefetch: int | None = None
) -> Drain:
    result = Drain(replicas, bodies)
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        config = isolated_copy(Path(tmp), suffix, prefetch)
        queues, _ = topology(config)
        source, targets = catch_all_and_targets(config, queues)
        async with Broker(url) as broker:
            await broker.declare_config(config)
            await preload(broker, source, bodies)
            daemons = [
                start_daemon(config, url, Path(tmp) / "logs", name=f"r{i}") for i in range(replicas)
            ]
            began = time.monotonic()
            try:
                cpu_start: list[float] = []
                consumed_start: list[float] = []
                started = 0.0
                first_done = done = 0
                result.rss = [[] for _ in daemons]
                deadline = began + limit
                while time.monotonic() < deadline:
                    now = time.monotonic() - began
                    for i, daemon in enumerate(daemons):
                        result.rss[i].append((now, status_mib(daemon.pid, "VmRSS")))
                    done = sum((await broker.depths(targets)).values())
                    if not started and done > 0:
                        started = time.monotonic()
                        result.drain_started_s = started - began
                        first_done = done
                        cpu_start = [cpu_seconds(d.pid) for d in daemons]
                        consumed_start = await consumed(daemons)
                    if done >= len(bodies):
                        break
                    await asyncio.sleep(RSS_SAMPLE)
                if started:
                    result.seconds = time.monotonic() - started
                    result.routed = done - first_done
                    result.cpu = [
                        cpu_seconds(d.pid) - c for d, c in zip(daemons, cpu_start, strict=True)
                    ]
                    now_consumed = await consumed(daemons)
                    result.consumed = [
                        n - n0 for n, n0 in zip(now_consumed, consumed_start, strict=True)
                    ]
                result.peak_rss = [peak_rss_mib(d.pid) for d in daemons]
            finally:
                for daemon in daemons:
                    await daemon.stop(30)
                    daemon.kill()
            # Counted once nothing is in flight: a request a daemon held when the drain
            # gave up is back in the source, not lost.
            result.routed_total = sum((await broker.depths(targets)).values())
            result.source_left = (await broker.depths([source]))[source]
    return result


def rss_line(name: str, d: Drain) -> str:
    samples = [mib for series in d.rss for _, mib in series if mib == mib]
    if not samples:
        return f"{name}: no samples"
    return (
        f"{name:34} RSS MiB start {samples[0]:5.0f}  max {max(samples):5.0f}  "
        f"end {d.rss[0][-1][1]:5.0f}  ({len(samples)} samples; {d.routed_total}/{d.loaded} "
        f"routed, {d.rate:.0f}/s)"
    )


async def main(args: argparse.Namespace) -> None:
    window = shipped_window()
    report: dict[str, Any] = {"sample_s": RSS_SAMPLE, "window": window}
    report |= {"invalid": INVALID, "memory": [], "scale": None}
    if args.skip != "memory":
        phases = [
            ("backlog", f"backlog of {args.backlog} ~1 KB", lambda: backlog(args.backlog, INVALID)),
            ("big", f"{args.big} bodies of ~1 MB", lambda: big_bodies(args.big, 1_000_000)),
        ]
        for phase, name, make in phases:
            bodies = make()
            if not bodies:
                continue
            d = await drain(args.amqp_url, bodies, 1, args.limit)
            report["memory"].append({"phase": phase, **d.as_json()})
            print(rss_line(name, d), flush=True)
    if args.skip != "scale":
        bodies = backlog(args.scale, INVALID)
        rounds: list[dict[str, Any]] = []
        report["scale"] = {"count": args.scale, "replicas": args.replicas, "rounds": rounds}
        for round_ in range(args.rounds):
            # Alternate the order so a drift in machine load does not favour one count.
            order = args.replicas if round_ % 2 == 0 else args.replicas[::-1]
            for replicas in order:
                d = await drain(args.amqp_url, bodies, replicas, args.limit)
                rounds.append({"round": round_ + 1, **d.as_json()})
                print(
                    f"{f'round {round_ + 1}, ' if args.rounds > 1 else ''}"
                    f"{replicas} replica(s): {d.rate:6.0f} msg/s total, "
                    f"{rounds[-1]['cpu_ms_per_request']:.3f} ms CPU/request, per replica "
                    f"CPU s {', '.join(f'{c:.1f}' for c in d.cpu)}, requests "
                    f"{', '.join(f'{n:.0f}' for n in d.consumed)}; "
                    f"{d.routed_total}/{d.loaded} routed"
                    + ("" if d.lost == 0 else f" LOSS {d.lost}"),
                    flush=True,
                )
        medians = {
            n: statistics.median(r["rate"] for r in rounds if r["replicas"] == n)
            for n in args.replicas
        }
        first = medians[args.replicas[0]]
        print(
            f"total msg/s, median of {args.rounds} round(s): "
            + ", ".join(f"{n} replica(s) {m:.0f} ({m / first:.2f}x)" for n, m in medians.items()),
            flush=True,
        )
    if args.json is not None:
        write_json(args.json, report)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=200_000, help="~1 KB requests (0: none)")
    parser.add_argument("--big", type=int, default=300, help="count of ~1 MB bodies (0: none)")
    parser.add_argument("--scale", type=int, default=30_000, help="backlog per scale-out run")
    parser.add_argument(
        "--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3]
    )
    parser.add_argument("--rounds", type=int, default=1, help="scale-out runs per count (1)")
    parser.add_argument("--skip", choices=["memory", "scale"], default=None)
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--limit", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
