"""Peak memory of `routerd serve` routing bodies at the size limit, at full rate.

A backlog of bodies just under `limits.max_body_bytes` (1 MiB in the shipped config) is
loaded into the source, then one `routerd serve` drains it, once per byte budget
(`--budgets`, MiB, the sources' `max_in_flight_bytes`): 256 lets the catch-all's whole
prefetch of 256 in flight, as before the budget existed; 128 is the default (a window of
128).
Two kinds of body: `text` (a valid request whose text is one big string) and `objects` (a
request whose `tags` list holds ~350,000 empty objects: the JSON that costs the most memory
once parsed; it is rejected). Prints the daemon's peak RSS (VmHWM) and the time taken for
each kind; asserts nothing. Cleans up its queues. `--json PATH` also writes each drain's
figures with the daemon's RSS (VmRSS) sampled every 0.2 s while it drains. `--decide`
instead times the pipeline's `decide()` on one body of each kind, in this process, with its
peak of traced memory: where a hostile body's cost lies (no broker needed).

    .venv/bin/python scripts/bench_big_bodies.py [--count 600] [--kind text|objects|both]
                                                 [--budgets 256,128] [--json PATH]
    .venv/bin/python scripts/bench_big_bodies.py --decide
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import yaml  # noqa: E402
from bench_serve import peak_rss_mib, sample_rss, status_mib, write_json  # noqa: E402

from routerd.config.loader import load  # noqa: E402
from tests.conftest import SHIPPED_CONFIG, SHIPPED_SCHEMAS, isolate_config  # noqa: E402
from tests.factories import valid_v1_at_limit  # noqa: E402
from tests.harness import Broker, start_daemon, topology  # noqa: E402
from tests.harness.config import (  # noqa: E402
    catch_all_and_targets,
    source_entries,
)

DEFAULT_URL = os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LIMIT = 1_048_576


def big_text(i: int) -> bytes:
    return valid_v1_at_limit(i, LIMIT)


def big_objects(i: int) -> bytes:
    head = b'{"schema_version":1,"message_id":"m-%d","tags":[' % i
    count = (LIMIT - len(head) - 16) // 3
    body = head + b",".join([b"{}"] * count) + b"]}"
    assert len(body) <= LIMIT
    return body


async def run(
    url: str, kind: str, count: int, extra: list[str], budget_mib: int
) -> tuple[str, dict[str, Any]]:
    make = big_text if kind == "text" else big_objects
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        work = Path(tmp)
        (work / "config").mkdir()
        shutil.copytree(SHIPPED_SCHEMAS, work / "schemas")
        data = isolate_config(yaml.safe_load(SHIPPED_CONFIG.read_text()), f"big.{suffix}")
        for source in source_entries(data):
            source["max_in_flight_bytes"] = budget_mib * 2**20
        config = work / "config" / "routes.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        queues, _ = topology(config)
        source, targets = catch_all_and_targets(config, queues)
        table = load(config)
        window = table.source.window(table.limits)
        async with Broker(url) as broker:
            await broker.declare_config(config)
            await broker.publish(source, (make(i) for i in range(count)), window=50)
            daemon = start_daemon(config, url, work / "logs", name="bench", extra_args=extra)
            try:
                started = time.monotonic()
                peak = 0.0
                series: list[tuple[float, float]] = []
                figures: dict[str, Any] = {"kind": kind, "budget_mib": budget_mib}
                figures |= {"window": window, "count": count, "rss_mib": series}
                while sum((await broker.depths(targets)).values()) < count:
                    peak = max(peak, peak_rss_mib(daemon.pid))
                    now = time.monotonic() - started
                    sample_rss(series, daemon.pid, now)
                    if now > 300:
                        figures["gave_up_after_s"] = now
                        return f"{kind}: gave up after 300 s\n{daemon.log_tail()}", figures
                    await asyncio.sleep(0.05)
                seconds = time.monotonic() - started
                peak = max(peak, peak_rss_mib(daemon.pid))
                series.append((round(seconds, 3), status_mib(daemon.pid, "VmRSS")))
                await daemon.stop(30)
            finally:
                daemon.kill()
    mib = count * LIMIT / 2**20
    figures |= {"seconds": seconds, "rate": count / seconds, "peak_rss_mib": peak}
    return (
        f"{kind:<8} budget {budget_mib:>3} MiB (window {window:>3}) {count} bodies of 1 MiB "
        f"({mib:.0f} MiB) in {seconds:.1f} s: "
        f"{count / seconds:.0f} msg/s, peak RSS {peak:.0f} MiB"
    ), figures


def time_decide() -> None:
    import tracemalloc

    from routerd.pipeline.decide import decide
    from routerd.pipeline.envelope import Envelope

    table = load(SHIPPED_CONFIG)
    for kind, make in (("text", big_text), ("objects", big_objects)):
        body = make(1)
        tracemalloc.start()
        started = time.perf_counter()
        decision = decide(table, Envelope(body, {}, {"content_type": "application/json"}))
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(
            f"decide() {kind:<8} {len(body)} bytes: {seconds:.3f} s, peak traced "
            f"{peak:.0f} MiB -> {decision.target.name}",
            flush=True,
        )


async def main(args: argparse.Namespace) -> None:
    if args.decide:
        time_decide()
        return
    kinds = ["text", "objects"] if args.kind == "both" else [args.kind]
    budgets = [int(b) for b in args.budgets.split(",")]
    runs = []
    for kind in kinds:
        for budget in budgets:
            line, figures = await run(args.amqp_url, kind, args.count, args.serve_arg or [], budget)
            runs.append(figures)
            print(line, flush=True)
    if args.json is not None:
        write_json(args.json, {"body_bytes": LIMIT, "runs": runs})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--kind", choices=["text", "objects", "both"], default="both")
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument(
        "--budgets",
        default="256,128",
        help="sources' max_in_flight_bytes to compare, in MiB (256: the full prefetch of "
        "256, as before the budget; 128: the default)",
    )
    parser.add_argument("--serve-arg", action="append", help="extra `routerd serve` argument")
    parser.add_argument("--decide", action="store_true", help="time decide() on one body each")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    asyncio.run(main(parser.parse_args()))
