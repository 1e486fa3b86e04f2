"""Resident memory of `routerd serve` while it drains a big backlog and 1 MiB bodies, and
the total rate and CPU per request of 1, 2 and 3 competing daemons on one queue.

    .venv/bin/python scripts/bench_scale.py [--backlog 200000] [--big 300]
        [--scale 30000] [--replicas 1,2,3] [--skip memory|scale]

Every phase runs its own daemons on an isolated copy of the shipped config and drains a
backlog loaded before they start; nothing else consumes those queues. RSS is sampled from
/proc every 0.2 s. "No loss" compares what reached the target queues with what was
loaded. Prints figures, asserts nothing; the memory goal is <= 150 MB throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_serve import (  # noqa: E402
    DEFAULT_URL,
    backlog,
    cpu_seconds,
    isolated_copy,
    preload,
    status_mib,
)

from tests.factories import valid_v1_at_limit  # noqa: E402
from tests.harness import Broker, start_daemon, topology  # noqa: E402
from tests.harness.config import catch_all_and_targets  # noqa: E402

SAMPLE = 0.2


def big_bodies(count: int, size: int) -> list[bytes]:
    """Valid v1 requests of about `size` bytes (a long text part)."""
    return [valid_v1_at_limit(i, size) for i in range(count)]


class Drain:
    """What one drain by `replicas` daemons measured."""

    def __init__(self) -> None:
        self.loaded = 0
        # In the targets at the end (all of it), and during the timed part.
        self.routed_total = 0
        self.routed = 0
        self.seconds = 0.0
        self.cpu: list[float] = []
        self.rss: list[list[float]] = []

    @property
    def rate(self) -> float:
        return self.routed / self.seconds if self.seconds else float("nan")


async def drain(
    url: str, bodies: list[bytes], replicas: int, limit: float, prefetch: int | None = None
) -> Drain:
    result = Drain()
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        config = isolated_copy(Path(tmp), suffix, prefetch)
        queues, _ = topology(config)
        source, targets = catch_all_and_targets(config, queues)
        async with Broker(url) as broker:
            await broker.declare_config(config)
            await preload(broker, source, bodies)
            result.loaded = len(bodies)
            daemons = [
                start_daemon(config, url, Path(tmp) / "logs", name=f"r{i}") for i in range(replicas)
            ]
            try:
                cpu_start: list[float] = []
                started = 0.0
                first_done = done = 0
                result.rss = [[] for _ in daemons]
                deadline = time.monotonic() + limit
                while time.monotonic() < deadline:
                    for i, daemon in enumerate(daemons):
                        result.rss[i].append(status_mib(daemon.pid, "VmRSS"))
                    done = sum((await broker.depths(targets)).values())
                    if not started and done > 0:
                        started = time.monotonic()
                        first_done = done
                        cpu_start = [cpu_seconds(d.pid) for d in daemons]
                    if done >= len(bodies):
                        break
                    await asyncio.sleep(SAMPLE)
                if started:
                    result.seconds = time.monotonic() - started
                    result.routed = done - first_done
                    result.cpu = [
                        cpu_seconds(d.pid) - c for d, c in zip(daemons, cpu_start, strict=True)
                    ]
                result.routed_total = done
            finally:
                for daemon in daemons:
                    await daemon.stop(30)
                    daemon.kill()
    return result


def rss_line(name: str, d: Drain) -> str:
    samples = [s for series in d.rss for s in series if s == s]
    if not samples:
        return f"{name}: no samples"
    return (
        f"{name:34} RSS MiB start {samples[0]:5.0f}  max {max(samples):5.0f}  "
        f"end {d.rss[0][-1]:5.0f}  ({len(samples)} samples; {d.routed_total}/{d.loaded} "
        f"routed, {d.rate:.0f}/s)"
    )


async def main(args: argparse.Namespace) -> None:
    if args.skip != "memory":
        d = await drain(args.amqp_url, backlog(args.backlog, 0.05), 1, args.limit)
        print(rss_line(f"backlog of {args.backlog} ~1 KB", d), flush=True)
        d = await drain(args.amqp_url, big_bodies(args.big, 1_000_000), 1, args.limit)
        print(rss_line(f"{args.big} bodies of ~1 MB", d), flush=True)
    if args.skip != "scale":
        bodies = backlog(args.scale, 0.05)
        base = None
        for replicas in args.replicas:
            d = await drain(args.amqp_url, bodies, replicas, args.limit)
            base = base or d.rate
            per_request = 1000 * sum(d.cpu) / max(d.routed, 1)
            print(
                f"{replicas} replica(s): {d.rate:6.0f} msg/s total "
                f"({d.rate / base if base else float('nan'):.2f}x), "
                f"{per_request:.3f} ms CPU/request, per replica CPU s "
                + ", ".join(f"{c:.1f}" for c in d.cpu)
                + f"; {d.routed_total}/{d.loaded} routed"
                + ("" if d.routed_total == d.loaded else " LOSS"),
                flush=True,
            )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--big", type=int, default=300, help="count of ~1 MB bodies")
    parser.add_argument("--scale", type=int, default=30_000, help="backlog per scale-out run")
    parser.add_argument(
        "--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3]
    )
    parser.add_argument("--skip", choices=["memory", "scale"], default=None)
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--limit", type=float, default=900.0)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
