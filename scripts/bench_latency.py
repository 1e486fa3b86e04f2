"""Publish -> arrival in the target queue through `routerd serve`: p50/p99/p999 at 25%, 50%
and 90% of the measured maximum rate.

    .venv/bin/python scripts/bench_latency.py [--seconds 10] [--max-rate N] [--rounds 1]
                                              [--basis sustained|drain] [--reload]
                                              [--queues shipped|classic] [--raw]
                                              [--json PATH]

One routerd runs on an isolated copy of the shipped config. The maximum rate is measured
first (unless --max-rate gives it) by draining a backlog, as scripts/bench_serve.py does,
then lowered to what routerd sustains while this script's own publisher and consumers run
on the same CPUs (publishing at the drain maximum, arrivals counted while publishing;
`--basis drain` skips that). Then a paced publisher sends ~1 KB v1 requests (5% invalid)
at each fraction of it for `--seconds`, stamping each with its send time (CLOCK_MONOTONIC,
shared by every process on the machine); consumers on every target queue record the
arrival. Publisher and consumers share one event loop, so their own delays are in the
figures too; each round also reads routerd's own p99, consume to source ack (its
`routerd_processing_seconds` histogram, so a bucket's upper bound), to tell how much of
the tail is routerd's, and the broker's confirm p99 within it
(`routerd_publish_confirm_seconds`). `--queues classic` declares every queue of the
config classic instead of quorum, to see what the quorum queues' confirms cost. `--raw`
runs each round also through scripts/bench_serve.py's raw aiormq forwarder, at the same
rate and interleaved with routerd's, from a source of its own into one target of the same
queue type: the latency the broker and the machine give without routerd.
`--reload` adds `--rounds` rounds at 50% during each of which the config is replaced by
one of 200 schemas and 500 rules (scripts/bench_config.py, written beforehand and moved
into place): the time from the last file in place until routerd runs it, and the latency
around it; the shipped config is written back, and reloaded, between them. Prints
figures, asserts nothing; the goal is p99 <= 25 ms at 50%. `--json PATH` also writes
the maximum, what was sustained and every round's percentiles, the reload rounds' under
"reload".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import inspect
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import aiormq  # noqa: E402
from bench_config import write_config  # noqa: E402
from bench_serve import (  # noqa: E402
    DEFAULT_URL,
    RawPath,
    backlog,
    cpu_seconds,
    declare_raw_path,
    isolated_copy,
    measure,
    preload,
    shipped_window,
    spawn_raw,
    write_json,
)
from pamqp.commands import Basic  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from routerd.reload import Reloader  # noqa: E402
from tests.harness import Broker, start_daemon, topology  # noqa: E402
from tests.harness.config import (  # noqa: E402
    catch_all_and_targets,
    dump_config,
    read_config,
)
from tests.harness.wait import wait_for  # noqa: E402

STAMP = "x-bench-sent-ns"
FRACTIONS = (0.25, 0.5, 0.9)
# Sends per pacing tick: a timer per message would cost the publisher more than routerd.
TICK = 0.002
# What --reload rewrites the config to (the config scale goal).
RELOAD_SCHEMAS, RELOAD_RULES = 200, 500


class Arrivals:
    """Latencies (ms) of the stamped requests that arrived; `all_in` once `expected` did."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.expected: int | None = None
        self.all_in = asyncio.Event()

    def add(self, ms: float) -> None:
        self.ms.append(ms)
        if self.expected is not None and len(self.ms) >= self.expected:
            self.all_in.set()

    def expect(self, count: int) -> None:
        self.expected = count
        if len(self.ms) >= count:
            self.all_in.set()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Paced:
    sent: int
    # From the first publish to the last, and how many had arrived by then: at a rate the
    # machine cannot sustain, arrivals fall behind and their rate is what it sustains.
    seconds: float
    arrived_while_sending: int

    @property
    def sustained(self) -> float:
        return self.arrived_while_sending / self.seconds


async def paced(
    url: str,
    queue: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    arrivals: Arrivals,
    hold: asyncio.Event | None = None,
) -> Paced:
    """Publish at `rate`/s for `seconds`, and on until `hold` is set if it is given,
    cycling through `bodies`."""
    connection = await aiormq.connect(url)
    channel = await connection.channel(publisher_confirms=False)
    start = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total or (hold is not None and not hold.is_set()):
        due = int((time.monotonic() - start) * rate) + 1
        if hold is None or hold.is_set():
            due = min(total, due)
        while sent < due:
            properties = Basic.Properties(
                delivery_mode=2,
                content_type="application/json",
                headers={STAMP: time.monotonic_ns()},
            )
            await channel.basic_publish(
                bodies[sent % len(bodies)],
                routing_key=queue,
                properties=properties,
                wait=False,
            )
            sent += 1
        await asyncio.sleep(TICK)
    result = Paced(sent, time.monotonic() - start, len(arrivals.ms))
    # Let the last ones arrive, or give up after a while.
    arrivals.expect(sent)
    try:
        await asyncio.wait_for(arrivals.all_in.wait(), 30)
    except TimeoutError:
        print(f"  only {len(arrivals.ms)} of {sent} arrived", file=sys.stderr)
    await connection.close()
    return result


async def purge(url: str, queues: list[str]) -> None:
    """Empty the targets of the drained backlog: stamped requests must not queue behind it."""
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    for queue in queues:
        await channel.queue_purge(queue)
    await connection.close()


async def consume(url: str, queues: list[str], arrivals: Arrivals) -> Any:
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=1000)

    async def on_message(message: Any) -> None:
        now = time.monotonic_ns()
        headers = message.header.properties.headers or {}
        sent = headers.get(STAMP)
        if isinstance(sent, int):
            arrivals.add((now - sent) / 1e6)

    for queue in queues:
        await channel.basic_consume(queue, on_message, no_ack=True)
    return connection


def figures(got: list[float], sent: int, cpu: float | None) -> dict[str, float | int | None]:
    """One round's latency figures (ms) as --json writes them."""
    return {
        "p50": percentile(got, 0.5),
        "p99": percentile(got, 0.99),
        "p999": percentile(got, 0.999),
        "max": max(got),
        "mean": statistics.fmean(got),
        # `got` is [NaN] when nothing arrived, so the table still has a row.
        "arrived": sum(1 for ms in got if ms == ms),
        "sent": sent,
        "cpu_ms_per_request": None if cpu is None else 1000 * cpu / max(sent, 1),
    }


async def round_at(
    url: str,
    source: str,
    targets: list[str],
    bodies: list[bytes],
    rate: float,
    seconds: float,
    pid: int,
) -> dict[str, Any]:
    """One round: `rate`/s into `source` for `seconds`, each arrival on `targets` timed; its
    figures, with the CPU process `pid` spent in it."""
    arrivals = Arrivals()
    consumer = await consume(url, targets, arrivals)
    cpu_before = cpu_seconds(pid)
    sent = (await paced(url, source, bodies, rate, seconds, arrivals)).sent
    cpu = cpu_seconds(pid) - cpu_before
    await consumer.close()
    return figures(arrivals.ms or [float("nan")], sent, cpu)


def row(label: str, rate: float, round_: int, f: dict[str, Any], more: str = "") -> str:
    """One round's line; `more` goes inside its closing parenthesis."""
    return (
        f"{label:>4} {rate:>7.0f}/s  round {round_}: p50 {f['p50']:6.1f}  p99 {f['p99']:6.1f}  "
        f"p999 {f['p999']:6.1f}  max {f['max']:6.1f}  mean {f['mean']:6.1f}  "
        f"({f['arrived']}/{f['sent']} arrived, {f['cpu_ms_per_request']:.3f} ms CPU/request"
        f"{more})"
    )


@contextlib.asynccontextmanager
async def raw_forwarding(
    broker: Broker, url: str, *, quorum: bool
) -> AsyncIterator[tuple[RawPath, int]]:
    """scripts/bench_serve.py's raw aiormq forwarder, with routerd's window, consuming from
    a source of its own into one target (queues of the same type as routerd's) until the
    block ends: the same broker's latency without routerd's validation and routing. Yields
    its queues and its process id."""
    path = await declare_raw_path(broker, quorum=quorum)
    child = spawn_raw(url, path.source, path.exchange, path.key, shipped_window(), False, False)
    try:
        # Its start-up is not a round's latency.
        await wait_for(
            lambda: broker.consumers(path.source),
            lambda n: bool(n),
            within=60,
            what="the raw forwarder consuming",
        )
        yield path, child.pid
        if child.poll() is not None:
            raise SystemExit(f"the raw forwarder exited ({child.returncode}) during the rounds")
    finally:
        child.kill()
        child.wait()


async def raw_round(
    args: argparse.Namespace,
    raw: tuple[RawPath, int],
    bodies: list[bytes],
    level: dict[str, Any],
    round_: int,
) -> None:
    """One round through the raw forwarder at `level`'s rate, added to its raw_rounds."""
    path, pid = raw
    rate = level["rate"]
    result = await round_at(
        args.amqp_url, path.source, [path.target], bodies, rate, args.seconds, pid
    )
    level["raw_rounds"].append(result)
    print(row("raw", rate, round_, result), flush=True)


async def main(args: argparse.Namespace) -> None:
    bodies = backlog(5000, 0.05)
    report: dict[str, Any] = {
        "seconds_per_level": args.seconds,
        "basis": args.basis,
        "queues": args.queues,
        "raw": args.raw,
        "cpus": os.cpu_count(),
        "drain_backlog": None if args.max_rate is not None else args.backlog,
        "levels": [],
    }
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        config = isolated_copy(Path(tmp), suffix, None)
        if args.queues == "classic":
            to_classic(config)
        queues, _ = topology(config)
        source, targets = catch_all_and_targets(config, queues)
        async with Broker(args.amqp_url) as broker:
            await broker.declare_config(config)
            max_rate = args.max_rate
            if max_rate is None:
                # The maximum: drain a backlog with nobody else on the queues.
                drained = backlog(args.backlog, 0.05)
                await preload(broker, source, drained)
            daemon = start_daemon(config, args.amqp_url, Path(tmp) / "logs", name="bench")
            stack = contextlib.AsyncExitStack()
            try:
                await daemon.wait_ready(60)
                if max_rate is None:
                    result = await measure(
                        broker, targets, len(drained), daemon.pid, "max", args.limit
                    )
                    max_rate = result.rate
                    await purge(args.amqp_url, targets)
                report["max_rate"] = max_rate
                how = "given" if args.max_rate is not None else f"drain of {args.backlog}"
                print(
                    f"routerd maximum {max_rate:.0f} msg/s ({how}); "
                    f"{args.seconds:.0f} s per load, {os.cpu_count()} CPUs; latency in ms"
                )
                if args.basis == "sustained":
                    # The drain runs with nothing else on the machine; the load levels run
                    # beside this process's publisher and consumers, which share the CPUs.
                    # What routerd sustains with them running is the fair 100%.
                    arrivals = Arrivals()
                    consumer = await consume(args.amqp_url, targets, arrivals)
                    run = await paced(
                        args.amqp_url, source, bodies, max_rate, args.seconds, arrivals
                    )
                    await consumer.close()
                    await purge(args.amqp_url, targets)
                    max_rate = min(max_rate, run.sustained)
                    report["sustained"] = run.sustained
                    print(
                        f"sustained beside the load generator: {run.sustained:.0f} msg/s "
                        f"({run.arrived_while_sending} of {run.sent} arrived while "
                        f"publishing for {run.seconds:.1f} s); load levels are fractions of "
                        f"{max_rate:.0f} msg/s"
                    )
                report["basis_rate"] = max_rate
                raw = None
                if args.raw:
                    raw = await stack.enter_async_context(
                        raw_forwarding(broker, args.amqp_url, quorum=args.queues == "shipped")
                    )
                    print(
                        "raw: scripts/bench_serve.py's raw aiormq forwarder, same rates, "
                        "its own source and target, rounds interleaved with routerd's"
                    )
                for fraction in FRACTIONS:
                    rate = max_rate * fraction
                    level: dict[str, Any] = {"fraction": fraction, "rate": rate, "rounds": []}
                    if raw is not None:
                        level["raw_rounds"] = []
                    report["levels"].append(level)
                    for round_ in range(args.rounds):
                        # Alternate who goes first, so a drift of the machine favours neither.
                        if raw is not None and round_ % 2:
                            await raw_round(args, raw, bodies, level, round_ + 1)
                        scraped = await daemon.metrics()
                        held_before, confirms_before = processing(scraped), confirming(scraped)
                        round_figures = await round_at(
                            args.amqp_url, source, targets, bodies, rate, args.seconds, daemon.pid
                        )
                        scraped = await daemon.metrics()
                        held, confirms = processing(scraped), confirming(scraped)
                        # How much of the tail is routerd's: consume to ack, which holds the
                        # wait for the broker's confirm too.
                        round_figures["routerd_p99_le_ms"] = bound_of(held_before, held, 0.99)
                        # ... and of that, the wait for the broker's confirm.
                        round_figures["confirm_p99_le_ms"] = bound_of(
                            confirms_before, confirms, 0.99
                        )
                        level["rounds"].append(round_figures)
                        own = (
                            f"; routerd's own p99 {within(round_figures['routerd_p99_le_ms'])}, "
                            f"confirm p99 {within(round_figures['confirm_p99_le_ms'])}"
                        )
                        print(
                            row(f"{fraction:.0%}", rate, round_ + 1, round_figures, own), flush=True
                        )
                        if raw is not None and not round_ % 2:
                            await raw_round(args, raw, bodies, level, round_ + 1)
                if args.reload:
                    report["reload"] = await reload_rounds(
                        args, config, source, targets, bodies, max_rate * 0.5, daemon
                    )
            finally:
                await stack.aclose()
                if await daemon.stop(30) != 0:
                    print(daemon.log_tail(), file=sys.stderr)
                daemon.kill()
    if args.json is not None:
        write_json(args.json, report)


async def reload_rounds(
    args: argparse.Namespace,
    config: Path,
    source: str,
    targets: list[str],
    bodies: list[bytes],
    rate: float,
    daemon: Any,
) -> dict[str, Any]:
    """`--rounds` reloads into 200 schemas and 500 rules under `rate`, each from the config
    the daemon started with, which is written back (and reloaded, unmeasured) in between:
    rewriting the same big config again would be a reload without a change, which routerd
    skips."""
    shipped = await asyncio.to_thread(config.read_text)
    base = await asyncio.to_thread(read_config, config)
    debounce = inspect.signature(Reloader).parameters["debounce"].default
    reload: dict[str, Any] = {"rate": rate, "schemas": RELOAD_SCHEMAS, "debounce_s": debounce}
    reload["rounds"] = []
    for round_ in range(args.rounds):
        if round_:
            after = len(daemon.log_text())
            await asyncio.to_thread(config.write_text, shipped)
            await daemon.wait_for_log(r"route table reloaded", within=60, after=after)
        figures = await reload_under_load(args, config, base, source, targets, bodies, rate, daemon)
        reload["rounds"].append({"round": round_ + 1, **figures})
        print(
            f"reload to {RELOAD_SCHEMAS} schemas / {figures['rules']} rules under {rate:.0f}/s"
            f"{f', round {round_ + 1}' if args.rounds > 1 else ''}: running "
            f"{figures['running_after_s']:.2f} s after the write ({debounce:g} s of it the "
            f"watcher's debounce); latency p50 {figures['p50']:.1f}  p99 {figures['p99']:.1f}  "
            f"p999 {figures['p999']:.1f}  max {figures['max']:.1f} ms "
            f"({figures['arrived']}/{figures['sent']} arrived); {lag_text(figures)}",
            flush=True,
        )
    return reload


def move_into(staged: Path, folder: Path) -> None:
    """Every file under `staged` renamed to its place under `folder`, routes.yaml last."""
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "routes.yaml")
    for path in files:
        target = folder / path.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(staged)


async def reload_under_load(
    args: argparse.Namespace,
    config: Path,
    base: dict[str, Any],
    source: str,
    targets: list[str],
    bodies: list[bytes],
    rate: float,
    daemon: Any,
) -> dict[str, Any]:
    """One more round at `rate` during which the config is replaced by one of 200 schemas
    and 500 rules (scripts/bench_config.py), `base` with them added: how long until routerd
    runs it, and what the reload did to the latency of the requests around it."""
    # Generated before the round, beside (not inside) the watched folders: writing 200
    # schemas takes the script a second or more under its own load, and how fast ops write
    # files is not routerd's time. They are moved into place, all at once, in the round.
    staged = Path(tempfile.mkdtemp(dir=config.parent.parent, prefix="staged-"))
    await asyncio.to_thread(
        write_config, staged, schemas=RELOAD_SCHEMAS, rules=RELOAD_RULES, base=base
    )
    arrivals = Arrivals()
    consumer = await consume(args.amqp_url, targets, arrivals)
    cpu_before = cpu_seconds(daemon.pid)
    lag_before = loop_lag(await daemon.metrics())
    # Requests flow from a third of the round before the write until a third of it after
    # the new table runs, however long the reload takes: the whole swap is inside the round.
    swapped = asyncio.Event()
    sending = asyncio.ensure_future(
        paced(args.amqp_url, source, bodies, rate, args.seconds, arrivals, hold=swapped)
    )
    await asyncio.sleep(args.seconds / 3)
    after = len(daemon.log_text())
    # The schemas first and routes.yaml last, as a deploy tool would: the time is taken once
    # every file is in place, and the daemon's watcher picks them up from there.
    await asyncio.to_thread(move_into, staged, config.parent)
    written = time.time()
    match = await daemon.wait_for_log(r"route table reloaded.*rules=(\d+)", within=60, after=after)
    seconds = log_time(match.string, match.start()) - written
    await asyncio.sleep(args.seconds / 3)
    swapped.set()
    sent = (await sending).sent
    # The reload's own CPU is in it: it runs in the daemon's process.
    cpu = cpu_seconds(daemon.pid) - cpu_before
    lag = lag_during(lag_before, loop_lag(await daemon.metrics()))
    await consumer.close()
    got = arrivals.ms or [float("nan")]
    return {
        "rules": int(match.group(1)),
        "running_after_s": seconds,
        **lag,
        **figures(got, sent, cpu),
    }


def to_classic(config: Path) -> None:
    """Every queue the config declares as a quorum queue, declared classic instead (durable,
    persistent messages still): what the quorum queues' confirms add to the latency."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "quorum":
                node["type"] = "classic"
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    data = read_config(config)
    visit(data)
    config.write_text(dump_config(data))


def buckets(text: str, name: str) -> dict[float, float]:
    """Histogram `name`'s cumulative bucket counts by upper bound (inf: all), summed over
    its label sets."""
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
    return counts


def loop_lag(text: str) -> dict[float, float]:
    """routerd_event_loop_lag_seconds' cumulative bucket counts by upper bound (inf: all)."""
    return buckets(text, "routerd_event_loop_lag_seconds")


def processing(text: str) -> dict[float, float]:
    """routerd_processing_seconds' buckets: consume to source ack, routerd's own share."""
    return buckets(text, "routerd_processing_seconds")


def confirming(text: str) -> dict[float, float]:
    """routerd_publish_confirm_seconds' buckets: publish to the broker's confirm."""
    return buckets(text, "routerd_publish_confirm_seconds")


def bound_of(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the `q` quantile of what a histogram
    observed between two scrapes: the histogram cannot say more. None when nothing was
    observed or it lies past the last finite bound."""
    delta = {bound: after.get(bound, 0.0) - before.get(bound, 0.0) for bound in after}
    total = delta.get(math.inf, 0.0)
    if not total:
        return None
    bound = min(bound for bound, count in delta.items() if count >= q * total)
    return None if math.isinf(bound) else bound * 1000


def within(bound_ms: float | None) -> str:
    """A bucket bound from `bound_of` of routerd's request histograms, as text."""
    return "over 5 s" if bound_ms is None else f"<= {bound_ms:g} ms"


def lag_during(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """What the daemon's own loop-lag histogram saw between two scrapes: the timers late by
    more than 100 ms, and the bucket the latest one fell in (its upper bound, in ms: the
    histogram cannot say more)."""
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    if not total:
        return {"loop_lag_timers": 0, "loop_lag_over_100ms": 0, "loop_lag_max_le_ms": None}
    within_100ms = after.get(0.1, 0.0) - before.get(0.1, 0.0)
    return {
        "loop_lag_timers": int(total),
        "loop_lag_over_100ms": int(total - within_100ms),
        # The smallest bound every late timer fell within bounds the worst of them.
        "loop_lag_max_le_ms": bound_of(before, after, 1.0),
    }


def lag_text(figures: dict[str, Any]) -> str:
    timers = figures["loop_lag_timers"]
    if not timers:
        return "routerd's loop lag: no timer observed (no routerd_event_loop_lag_seconds?)"
    bound = figures["loop_lag_max_le_ms"]
    worst = "over 2.5 s" if bound is None else f"{bound:g} ms"
    return (
        f"routerd's loop lag at most {worst}, {figures['loop_lag_over_100ms']} of {timers} "
        f"timers late by over 100 ms"
    )


def log_time(text: str, position: int) -> float:
    """The UTC time stamp at the start of the log line holding `position`, as epoch seconds."""
    line_start = text.rfind("\n", 0, position) + 1
    stamp = text[line_start : text.index(" ", line_start)]
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per load level (10)")
    parser.add_argument("--max-rate", type=float, default=None, help="skip measuring it")
    parser.add_argument("--backlog", type=int, default=20_000, help="drained for the max")
    parser.add_argument("--rounds", type=int, default=1, help="runs per load level (1)")
    parser.add_argument(
        "--reload",
        action="store_true",
        help="--rounds more rounds at 50%% during each of which the config becomes 200 "
        "schemas and 500 rules",
    )
    parser.add_argument(
        "--basis",
        choices=["sustained", "drain"],
        default="sustained",
        help="100%%: what routerd sustains beside this script's publisher and consumers "
        "(default), or the drain maximum with nothing else running",
    )
    parser.add_argument(
        "--queues",
        choices=["shipped", "classic"],
        default="shipped",
        help="the shipped config's queue types (quorum), or every one classic",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="each round also through scripts/bench_serve.py's raw aiormq forwarder, at the "
        "same rate, on queues of its own of the same type",
    )
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--limit", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
