"""Runs the benchmarks behind `make bench` and writes docs/BENCHMARKS.md from their figures:
tables of min / median / max over rounds, the ratios, each goal with whether this run met it,
plots (throughput per system, latency percentiles against load, RSS while a backlog drains,
total rate against competing replicas) and a profile of where routerd's time goes. The goals:
throughput, latency, memory over a 200,000 backlog and 1 MiB bodies, rule scale, scale-out
without loss, and lint and a reload under load of 200 schemas and 500 rules with the stall
it causes.

    .venv/bin/python scripts/bench_report.py [--quick] [--out docs/BENCHMARKS.md]
        [--only serve,latency,...] [--args NAME="ARGS"] [--json-dir DIR [--render-only]]

Each benchmark runs as its own process (`scripts/bench_NAME.py ... --json FILE`), one after
the other, its text output passed through; the report is written from the JSON they leave.
`--quick` gives every script tiny inputs (a run of about a minute whose figures only show
that everything works); `--args NAME="ARGS"` appends arguments to one script's (the last of
a repeated option wins). `--json-dir` keeps the JSON, and `--render-only` writes the report
again from it without running anything. Images go beside the report, in img/bench-*.png.
A script that fails leaves its section saying so, and this script exits 1 at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = ROOT / "scripts"

# name -> (script, arguments of the full run, arguments of --quick)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "pipeline": (
        "bench_pipeline.py",
        [],
        ["--repeat", "1", "--min-time", "0.001", "--rounds", "2"],
    ),
    "serve": ("bench_serve.py", ["--rounds", "3"], ["--count", "300", "--rounds", "2"]),
    "publish": ("bench_publish.py", ["--rounds", "3"], ["--count", "200", "--rounds", "2"]),
    "big_bodies": (
        "bench_big_bodies.py",
        # The shipped budget (128 MiB) and the one that keeps RSS within the memory goal.
        ["--kind", "text", "--budgets", "128,64"],
        ["--kind", "text", "--count", "3", "--budgets", "128,4"],
    ),
    # --reload: the reload rounds run on the latency run's daemon at its 50% rate, so they
    # need no maximum of their own (a 20,000 drain and a sustained run, ~30 s). --raw: each
    # round also through the raw forwarder at the same rate, for the broker's own latency.
    "latency": (
        "bench_latency.py",
        ["--rounds", "3", "--reload", "--raw"],
        ["--seconds", "1", "--max-rate", "300", "--rounds", "2", "--reload", "--raw"],
    ),
    "profile": ("bench_profile.py", [], ["--count", "2000"]),
    # 1 MiB bodies are bench_big_bodies' (--big 0); the 200,000 backlog and scale-out here.
    "scale": (
        "bench_scale.py",
        ["--big", "0", "--scale", "20000", "--rounds", "2"],
        ["--backlog", "2000", "--big", "0", "--scale", "1500", "--rounds", "2"],
    ),
    "config": (
        "bench_config.py",
        ["--rounds", "3"],
        ["--schemas", "4", "--rules", "10", "--rounds", "2"],
    ),
}

# The goals, as docs/performance.md states them.
THROUGHPUT_RATIO_GOAL = 1.0  # routerd / the raw forwarder, medians
LATENCY_P99_GOAL_MS = 25.0  # p99 at 50% of the sustained rate
LATENCY_GOAL_FRACTION = 0.5
MEMORY_GOAL_BYTES = 150e6  # 150 MB of RSS, whatever routerd drains
MEMORY_GOAL_BACKLOG = 200_000  # requests in the backlog the memory goal drains
CONFIG_GOAL_SCHEMAS, CONFIG_GOAL_RULES = 200, 500  # the config of the config scale goals
CONFIG_GOAL_SECONDS = 2.0  # lint, and a reload under load from write to running
STALL_GOAL_MS = 100.0  # routing stall during a reload's swap
RULE_SCALE_GOAL = 2.0  # decide with 505 rules within 2x of decide with 5 (indexed)
MIB = 2**20


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Summary:
    min: float
    median: float
    max: float
    count: int


def finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def summary(values: Iterable[float | None]) -> Summary | None:
    """min / median / max of the values that were measured (None and NaN are not)."""
    got = finite(values)
    if not got:
        return None
    return Summary(min(got), statistics.median(got), max(got), len(got))


def number(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def triple(s: Summary | None, digits: int = 1) -> str:
    """`min / median / max`, or the one figure when there was one round."""
    if s is None:
        return "-"
    if s.count == 1:
        return number(s.median, digits)
    return " / ".join(number(v, digits) for v in (s.min, s.median, s.max))


@dataclass(frozen=True)
class Goal:
    name: str
    goal: str
    measured: str
    # None: this run measured nothing the goal is about.
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "not measured"}[self.met]


def throughput_goal(serve: dict[str, Any] | None) -> Goal:
    name, goal = "throughput", f"routerd / raw forwarder >= {THROUGHPUT_RATIO_GOAL:.2f} (medians)"
    rates = {
        kind: summary(r["rate"] for r in rounds_of(serve, kind)) for kind in ("raw", "routerd")
    }
    raw, routerd = rates["raw"], rates["routerd"]
    if raw is None or routerd is None or raw.median <= 0:
        return Goal(name, goal, "not run", None)
    ratio = routerd.median / raw.median
    return Goal(name, goal, f"{ratio:.2f}", ratio >= THROUGHPUT_RATIO_GOAL)


def goal_level(latency: dict[str, Any] | None) -> dict[str, Any] | None:
    """The latency run's level at the goal's share of the load, if it ran one."""
    return next(
        (
            level
            for level in (latency or {}).get("levels", [])
            if math.isclose(level["fraction"], LATENCY_GOAL_FRACTION)
        ),
        None,
    )


def held_p99(rounds: Iterable[dict[str, Any]]) -> tuple[list[float], int]:
    """The rounds' p99s, and in how many the latency goal held."""
    p99s = finite(r["p99"] for r in rounds)
    return p99s, sum(p <= LATENCY_P99_GOAL_MS for p in p99s)


def latency_goal(latency: dict[str, Any] | None) -> Goal:
    name = "latency"
    goal = f"p99 <= {LATENCY_P99_GOAL_MS:g} ms at {LATENCY_GOAL_FRACTION:.0%} load, every round"
    level = goal_level(latency)
    p99s, held = held_p99(level["rounds"] if level else [])
    if not p99s:
        return Goal(name, goal, "not run", None)
    measured = f"worst p99 {max(p99s):.1f} ms; held in {held} of {len(p99s)} rounds"
    raw_p99s, raw_held = held_p99((level or {}).get("raw_rounds", []))
    if raw_p99s:
        # The same broker and rates without routerd: what of the miss is not routerd's.
        measured += (
            f" (the raw aiormq forwarder beside it: worst p99 {max(raw_p99s):.1f} ms; held in "
            f"{raw_held} of {len(raw_p99s)})"
        )
    return Goal(name, goal, measured, held == len(p99s))


def rule_scale_ratios(pipeline: dict[str, Any] | None) -> dict[str, float]:
    """Per request: decide's minimum µs with 505 rules over its minimum with the shipped 5,
    both indexed (the minimum is the round the machine disturbed least)."""
    rows = {
        (r["request"], r["rules"]): finite(r["us"]) for r in (pipeline or {}).get("rule_scale", [])
    }
    ratios = {}
    for (request, rules), us in rows.items():
        base = rows.get((request, "5 rules, indexed"))
        if rules == "505 rules, indexed" and us and base:
            ratios[request] = min(us) / min(base)
    return ratios


def rule_scale_goal(pipeline: dict[str, Any] | None) -> Goal:
    name, goal = "rule scale", f"decide with 505 rules within {RULE_SCALE_GOAL:g}x of 5 rules"
    ratios = rule_scale_ratios(pipeline)
    if not ratios:
        return Goal(name, goal, "not run", None)
    worst = max(ratios, key=ratios.__getitem__)
    measured = f"worst {ratios[worst]:.2f}x ({worst}; ratio of minimums)"
    return Goal(name, goal, measured, ratios[worst] <= RULE_SCALE_GOAL)


def memory_drains(scale: dict[str, Any] | None, phase: str) -> list[dict[str, Any]]:
    return [d for d in (scale or {}).get("memory") or [] if d["phase"] == phase]


def peak_of(values: Iterable[float | None]) -> float | None:
    return max(finite(values), default=None)


def rss_at(
    series: Sequence[Sequence[float | None]], fraction: float, start: float | None = None
) -> float | None:
    """VmRSS (MiB) at `fraction` of the time a series of (seconds, MiB) samples covers from
    `start` on (None: from the first sample): the first sample at or past that point."""
    points = [
        (t, mib)
        for t, mib in series
        if t is not None and mib is not None and (start is None or t >= start)
    ]
    if not points:
        return None
    due = points[0][0] + fraction * (points[-1][0] - points[0][0])
    return next(mib for t, mib in points if t >= due)


def mb(mib: float) -> str:
    return f"{mib:.0f} MiB ({mib * MIB / 1e6:.0f} MB)"


def memory_backlog_goal(scale: dict[str, Any] | None) -> Goal:
    name = "memory, backlog"
    goal = (
        f"RSS <= {MEMORY_GOAL_BYTES / 1e6:.0f} MB throughout, draining "
        f"{MEMORY_GOAL_BACKLOG:,} ~1 KB requests"
    )
    drains = memory_drains(scale, "backlog")
    peaks = finite(peak_of(d["peak_rss_mib"]) for d in drains)
    if not peaks:
        return Goal(name, goal, "not run", None)
    peak = max(peaks)
    sizes = ", ".join(f"{d['loaded']:,}" for d in drains)
    measured = f"peak {mb(peak)} draining {sizes}"
    if max(d["loaded"] for d in drains) < MEMORY_GOAL_BACKLOG:
        measured += f" (smaller than the goal's {MEMORY_GOAL_BACKLOG:,})"
    # Flat: a backlog routerd holds would show as RSS still rising late in the drain.
    quarter = [rss_at(d["rss_mib"][0], 0.25, d["drain_started_s"]) for d in drains if d["rss_mib"]]
    end = [rss_at(d["rss_mib"][0], 1.0, d["drain_started_s"]) for d in drains if d["rss_mib"]]
    if finite(quarter) and finite(end):
        measured += (
            f"; {number(max(finite(quarter)), 0)} MiB a quarter of the way in, "
            f"{number(max(finite(end)), 0)} at the end"
        )
    return Goal(name, goal, measured, peak * MIB <= MEMORY_GOAL_BYTES)


def shipped_window() -> int:
    """The window the shipped config's catch-all consumes with: its prefetch within its
    byte budget for bodies at the body limit."""
    sys.path.insert(0, str(ROOT))
    from routerd.config.loader import load

    table = load(ROOT / "config" / "routes.yaml")
    return table.source.window(table.limits)


def memory_big_goal(
    big: dict[str, Any] | None, scale: dict[str, Any] | None = None, window: int | None = None
) -> Goal:
    """Judged on the drains at the shipped config's window (`window`, None: every drain):
    other budgets are there for comparison."""
    name = "memory, 1 MiB bodies"
    goal = f"RSS <= {MEMORY_GOAL_BYTES / 1e6:.0f} MB throughout, draining 1 MiB bodies"
    if window is not None:
        goal += f" (shipped window, {window})"
    runs = [r for r in (big or {}).get("runs", []) if window is None or r.get("window") == window]
    peaks = finite(r.get("peak_rss_mib") for r in runs)
    peaks += finite(
        peak_of(d["peak_rss_mib"])
        for d in memory_drains(scale, "big")
        if window is None or d.get("window") == window
    )
    if not peaks:
        return Goal(name, goal, "not run at that window" if window else "not run", None)
    peak = max(peaks)
    measured = f"peak {mb(peak)} over {len(peaks)} drains"
    others = [
        (r["window"], r["peak_rss_mib"])
        for r in (big or {}).get("runs", [])
        if window is not None and r.get("window") != window and r.get("peak_rss_mib")
    ]
    if others:
        measured += "; " + ", ".join(f"window {w}: peak {mb(p)}" for w, p in others)
    return Goal(name, goal, measured, peak * MIB <= MEMORY_GOAL_BYTES)


def scale_rounds(scale: dict[str, Any] | None) -> dict[int, list[dict[str, Any]]]:
    """The scale-out runs by replica count, in the order the script was given them."""
    if not scale or not scale.get("scale"):
        return {}
    runs = scale["scale"]["rounds"]
    by_count = {n: [r for r in runs if r["replicas"] == n] for n in scale["scale"]["replicas"]}
    return {n: got for n, got in by_count.items() if got}


def scale_goal(scale: dict[str, Any] | None) -> Goal:
    counts = scale_rounds(scale)
    name = "scale-out"
    goal = (
        "no request lost with 1, 2 and 3 competing daemons on one queue "
        "(total rate and CPU per request reported)"
    )
    if not counts:
        return Goal(name, goal, "not run", None)
    runs = [r for got in counts.values() for r in got]
    lost = sum(abs(r["lost"]) for r in runs)
    rates = {n: summary(r["rate"] for r in got) for n, got in counts.items()}
    shown = ", ".join(f"{n}: {number(s.median if s else None, 0)}" for n, s in rates.items())
    measured = (
        f"{lost:,} of {sum(r['loaded'] for r in runs):,} lost or duplicated over "
        f"{len(runs)} drains; total msg/s by replicas (medians) {shown}"
    )
    return Goal(name, goal, measured, lost == 0)


def config_size(config: dict[str, Any]) -> str:
    size = f"{config['schemas']} schemas, {config['rules']} rules"
    if config["schemas"] < CONFIG_GOAL_SCHEMAS or config["rules"] < CONFIG_GOAL_RULES:
        size += f" (smaller than the goal's {CONFIG_GOAL_SCHEMAS} and {CONFIG_GOAL_RULES})"
    return size


def config_rounds(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """This tree's rounds (bench_config --baseline adds another tree's)."""
    return [r for r in (config or {}).get("rounds", []) if r["tree"] == "this tree"]


def lint_goal(config: dict[str, Any] | None) -> Goal:
    name = "config lint"
    goal = (
        f"`routerd lint` of {CONFIG_GOAL_SCHEMAS} schemas and {CONFIG_GOAL_RULES} rules under "
        f"{CONFIG_GOAL_SECONDS:g} s (wall, every check), every round"
    )
    seconds = finite(r["lint_cli_s"] for r in config_rounds(config))
    if not seconds or config is None:
        return Goal(name, goal, "not run", None)
    problems = sum(config["problems"].values())
    measured = (
        f"worst {max(seconds):.2f} s over {len(seconds)} rounds; {config_size(config)}; "
        f"lint found {problems} problems"
    )
    return Goal(name, goal, measured, max(seconds) < CONFIG_GOAL_SECONDS)


def reload_rounds(latency: dict[str, Any] | None) -> list[dict[str, Any]]:
    return ((latency or {}).get("reload") or {}).get("rounds", [])


def reload_goal(latency: dict[str, Any] | None) -> Goal:
    name = "config reload"
    debounce = ((latency or {}).get("reload") or {}).get("debounce_s")
    goal = (
        f"reload into {CONFIG_GOAL_SCHEMAS} schemas and {CONFIG_GOAL_RULES} rules at "
        f"{LATENCY_GOAL_FRACTION:.0%} load running under {CONFIG_GOAL_SECONDS:g} s after the "
        "write, every round"
    )
    seconds = finite(r["running_after_s"] for r in reload_rounds(latency))
    if not seconds:
        return Goal(name, goal, "not run", None)
    measured = (
        f"worst {max(seconds):.2f} s over {len(seconds)} rounds (write to running, "
        f"the watcher's {number(debounce, 1)} s debounce included)"
    )
    return Goal(name, goal, measured, max(seconds) < CONFIG_GOAL_SECONDS)


def stall_goal(latency: dict[str, Any] | None) -> Goal:
    """Judged on routerd's own loop lag (`routerd_event_loop_lag_seconds`, a timer due every
    50 ms) when the rounds have it: how long routing stood still. The requests' latency is
    shown beside it; their max also holds the loop's slowdown (it shares the CPU with the
    load) and the machine's own hiccups. Rounds without the lag fall back to that max."""
    name = "reload stall"
    rounds = reload_rounds(latency)
    worst = finite(r["max"] for r in rounds)
    if not worst:
        return Goal(
            name, f"routing stalls under {STALL_GOAL_MS:g} ms during the swap", "not run", None
        )
    p99 = max(finite(r["p99"] for r in rounds), default=None)
    requests = f"requests' worst max {max(worst):.1f} ms, worst p99 {number(p99)} ms"
    lagged = [r for r in rounds if r.get("loop_lag_timers")]
    if len(lagged) == len(rounds):
        goal = (
            f"routing stalls under {STALL_GOAL_MS:g} ms during the swap: no timer of routerd's "
            f"event loop late by more, every round"
        )
        late = sum(r["loop_lag_over_100ms"] for r in lagged)
        timers = sum(r["loop_lag_timers"] for r in lagged)
        bounds = [r["loop_lag_max_le_ms"] for r in lagged]
        bound = "over 2.5 s" if None in bounds else f"{max(b for b in bounds if b):g} ms"
        measured = (
            f"loop lag at most {bound}; {late} of {timers} timers late by over "
            f"{STALL_GOAL_MS:g} ms over {len(lagged)} rounds ({requests})"
        )
        return Goal(name, goal, measured, late == 0)
    # The slowest request of the round bounds the stall from above: a stalled loop delays
    # every request behind it, and the round's ordinary latency is in that figure too.
    goal = (
        f"routing stalls under {STALL_GOAL_MS:g} ms during the swap: the reload round's "
        "max latency, every round"
    )
    measured = (
        f"worst max {max(worst):.1f} ms (worst p99 {number(p99)} ms) over {len(worst)} rounds"
    )
    return Goal(name, goal, measured, max(worst) < STALL_GOAL_MS)


def rounds_of(serve: dict[str, Any] | None, kind: str) -> list[dict[str, Any]]:
    return [r for r in (serve or {}).get("rounds", []) if r["kind"] == kind]


# --------------------------------------------------------------------------- markdown


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def not_run(name: str, runs: dict[str, dict[str, Any]]) -> list[str]:
    run = runs.get(name)
    why = "not run (--only)" if run is None else f"`{run['command']}` exited {run['exit']}"
    return [f"No figures from {name}: {why}.", ""]


def throughput_section(serve: dict[str, Any] | None, images: dict[str, str]) -> list[str]:
    lines = ["## Throughput: `routerd serve` beside a raw aiormq forwarder", ""]
    if not serve or not serve.get("rounds"):
        return lines
    lines += [
        f"Each round every system drains the same backlog of {serve['count']:,} persistent "
        f"~{serve['mean_body_bytes']:.0f} B requests ({serve['invalid']:.0%} invalid), "
        "published as routerd.client publishes them (message_id, content type, schema "
        "version header), one after the other, the order alternating per round; window "
        f"(prefetch in flight) {serve['window']}. The raw forwarder republishes each request "
        "with the properties and headers it came with. Broker CPU: this machine's RabbitMQ "
        "over the same drain, per request. min / median / max over rounds.",
        "",
    ]
    rows = []
    for kind in serve["kinds"]:
        rounds = rounds_of(serve, kind)
        rows.append(
            [
                rounds[0]["name"] if rounds else kind,
                str(len(rounds)),
                triple(summary(r["rate"] for r in rounds), 0),
                triple(summary(r["cpu_ms_per_request"] for r in rounds), 3),
                triple(summary(r.get("broker_cpu_ms_per_request") for r in rounds), 3),
                number(max(finite(r["peak_rss_mib"] for r in rounds), default=None), 0),
            ]
        )
    header = ["system", "rounds", "msg/s", "CPU ms per routed request"]
    lines += table([*header, "broker CPU ms per request", "peak RSS MiB"], rows)
    raw = summary(r["rate"] for r in rounds_of(serve, "raw"))
    for kind in ("routerd", "baseline"):
        other = summary(r["rate"] for r in rounds_of(serve, kind))
        if raw is None or other is None:
            continue
        paired = [
            f"{b['rate'] / a['rate']:.2f}"
            for a, b in zip(rounds_of(serve, "raw"), rounds_of(serve, kind), strict=False)
            if a["rate"] and b["rate"]
        ]
        lines += [
            f"Ratio {kind} / raw: **{other.median / raw.median:.2f}** (medians); round by "
            f"round {', '.join(paired)}.",
            "",
        ]
    if "throughput" in images:
        lines += [f"![throughput per system]({images['throughput']})", ""]
    return lines


def latency_section(latency: dict[str, Any] | None, images: dict[str, str]) -> list[str]:
    lines = ["## Latency: publish to arrival in the target queue", ""]
    if not latency or not latency.get("levels"):
        return lines
    basis = []
    if latency.get("drain_backlog"):
        basis.append(
            f"drain maximum {number(latency.get('max_rate'), 0)} msg/s "
            f"({latency['drain_backlog']:,} requests)"
        )
    else:
        basis.append(f"maximum given: {number(latency.get('max_rate'), 0)} msg/s")
    if latency.get("sustained") is not None:
        basis.append(f"sustained beside the load generator {number(latency['sustained'], 0)} msg/s")
    lines += [
        f"{'; '.join(basis)}. Load levels are fractions of "
        f"{number(latency.get('basis_rate'), 0)} msg/s, {latency['seconds_per_level']:g} s per "
        "round; milliseconds, min / median / max over rounds. routerd's own p99: from "
        "consuming a request to acking it, the publish confirm's wait included, read from "
        "routerd's `routerd_processing_seconds` histogram (the upper bound of a bucket); "
        "confirm p99: the wait for the broker's publish confirm within it "
        "(`routerd_publish_confirm_seconds`). The rest of the latency is the broker's "
        "delivery, the load generator's and the machine's.",
        "",
    ]
    raw = any(level.get("raw_rounds") for level in latency["levels"])
    if raw:
        lines += [
            "Raw forwarder p99: the same rates through `scripts/bench_serve.py`'s raw aiormq "
            "forwarder (consume, confirmed publish, ordered acks; no parsing), from a source "
            "of its own into one target of the same queue type, its rounds interleaved with "
            "routerd's: what the broker and the machine give without routerd.",
            "",
        ]
    rows = []
    for level in latency["levels"]:
        rounds = level["rounds"]
        rows.append(
            [
                f"{level['fraction']:.0%}",
                f"{level['rate']:,.0f}/s",
                str(len(rounds)),
                *(triple(summary(r[k] for r in rounds)) for k in ("p50", "p99", "p999", "max")),
                *([triple(summary(r["p99"] for r in level.get("raw_rounds", [])))] * raw),
                triple(summary(r.get("routerd_p99_le_ms") for r in rounds), 2),
                triple(summary(r.get("confirm_p99_le_ms") for r in rounds), 2),
                triple(summary(r["cpu_ms_per_request"] for r in rounds), 3),
            ]
        )
    lines += table(
        [
            "load",
            "rate",
            "rounds",
            "p50",
            "p99",
            "p999",
            "max",
            *(["raw forwarder p99"] * raw),
            "routerd's own p99 <=",
            "of which confirm p99 <=",
            "CPU ms per request",
        ],
        rows,
    )
    if "latency" in images:
        lines += [f"![latency percentiles against load]({images['latency']})", ""]
    return lines


def rss_course(series: Sequence[Sequence[float | None]], start: float | None = None) -> str:
    """VmRSS a quarter, half way and all the way through a drain's samples from `start`."""
    if not series:
        return "-"
    return " / ".join(number(rss_at(series, f, start), 0) for f in (0.25, 0.5, 1.0))


def memory_section(
    serve: dict[str, Any] | None,
    big: dict[str, Any] | None,
    scale: dict[str, Any] | None,
    images: dict[str, str],
) -> list[str]:
    lines = ["## Memory: RSS while routerd drains a backlog", ""]
    rows = []
    for d in memory_drains(scale, "backlog") + memory_drains(scale, "big"):
        rows.append(
            [
                f"{d['loaded']:,} requests of ~{d['mean_body_bytes']:,.0f} B (`bench_scale`)",
                str(scale["window"]) if scale else "-",
                "1",
                number(peak_of(d["peak_rss_mib"]), 0),
                rss_course(d["rss_mib"][0] if d["rss_mib"] else [], d["drain_started_s"]),
                number(d["rate"], 0),
            ]
        )
    routerd = rounds_of(serve, "routerd")
    if serve and routerd:
        rows.append(
            [
                f"{serve['count']:,} requests of ~{serve['mean_body_bytes']:,.0f} B "
                "(throughput rounds)",
                str(serve["window"]),
                str(len(routerd)),
                triple(summary(r["peak_rss_mib"] for r in routerd), 0),
                rss_course(routerd[0].get("rss_mib") or []),
                triple(summary(r["rate"] for r in routerd), 0),
            ]
        )
    for run in (big or {}).get("runs", []):
        rows.append(
            [
                f"{run['count']} `{run['kind']}` bodies of 1 MiB, budget {run['budget_mib']} MiB",
                str(run["window"]),
                "1",
                number(run.get("peak_rss_mib"), 0),
                rss_course(run.get("rss_mib") or []),
                number(run.get("rate"), 0),
            ]
        )
    if not rows:
        return lines
    lines += [
        "Peak RSS is the daemon's VmHWM; the plot samples VmRSS every 0.2 s from the daemon's "
        "start. The course column reads the samples a quarter, half and all the way through "
        "(`bench_scale`'s from its first request routed, the others' from the daemon's start; "
        "the throughput rounds' first round): flat means the backlog's size does not reach "
        "the daemon's memory. Window: the catch-all's prefetch within its byte budget.",
        "",
    ]
    lines += table(
        ["drain", "window", "runs", "peak RSS MiB", "RSS MiB at 1/4 / 1/2 / end", "msg/s"], rows
    )
    if "rss" in images:
        lines += [f"![RSS over a backlog drain]({images['rss']})", ""]
    return lines


def scale_section(scale: dict[str, Any] | None, images: dict[str, str]) -> list[str]:
    lines = ["## Scale-out: competing daemons on one queue", ""]
    counts = scale_rounds(scale)
    if not scale or not counts:
        return lines
    rounds = max(len(got) for got in counts.values())
    lines += [
        f"Each run loads {scale['scale']['count']:,} ~1 KB requests "
        f"({scale['invalid']:.0%} invalid), then starts "
        f"1 to {max(counts)} daemons on the one queue; {rounds} rounds, the order of counts "
        "alternating. Rate and CPU from the first request routed to the last; a replica's "
        "CPU per request is its CPU over the requests it took (its own "
        "`routerd_requests_consumed_total`), min / median / max over replicas and rounds. "
        "Cores busy: a replica's CPU seconds over the drain's. Lost: loaded minus what "
        "reached the targets and what was left in the source, once the daemons stopped.",
        "",
    ]
    one = summary(r["rate"] for r in next(iter(counts.values())))
    rows = []
    for n, got in counts.items():
        rate = summary(r["rate"] for r in got)
        per_replica = [
            (ms, cpu / r["seconds"] if r["seconds"] else None)
            for r in got
            for ms, cpu in zip(r["cpu_ms_per_request_by_replica"], r["cpu_seconds"], strict=True)
        ]
        rows.append(
            [
                str(n),
                str(len(got)),
                triple(rate, 0),
                f"{rate.median / one.median:.2f}x" if rate and one and one.median else "-",
                triple(summary(r["cpu_ms_per_request"] for r in got), 3),
                triple(summary(ms for ms, _ in per_replica), 3),
                triple(summary(busy for _, busy in per_replica), 2),
                f"{sum(r['lost'] for r in got):,} of {sum(r['loaded'] for r in got):,}",
            ]
        )
    lines += table(
        [
            "replicas",
            "rounds",
            "total msg/s",
            f"vs {next(iter(counts))} (medians)",
            "CPU ms per request, all",
            "CPU ms per request, per replica",
            "cores busy per replica",
            "lost",
        ],
        rows,
    )
    lines += [
        "For capacity planning, size by CPU per request: N requests/s need about "
        "N x (CPU ms per request) / 1000 cores of routerd. The total rate is what this "
        "machine's cores, shared with the broker, allowed.",
        "",
    ]
    if "scale" in images:
        lines += [f"![total rate against replicas]({images['scale']})", ""]
    return lines


def config_section(config: dict[str, Any] | None, latency: dict[str, Any] | None) -> list[str]:
    lines = [
        f"## Config scale: lint and reload of {CONFIG_GOAL_SCHEMAS} schemas and "
        f"{CONFIG_GOAL_RULES} rules",
        "",
    ]
    if config and config.get("rounds"):
        lines += [
            f"The generated config: {config_size(config)} (`scripts/bench_config.py`), on "
            f"which lint found {sum(config['problems'].values())} problems. `routerd lint` is "
            "the CLI's wall time, interpreter start and imports included; build (what lint "
            "runs) and load (what start and a reload run: every lint check) are timed in a "
            "new process without the imports. Seconds, min / median / max over rounds.",
            "",
        ]
        measures = [
            ("lint_cli_s", "`routerd lint` (CLI, wall)"),
            ("build_s", "lint's build, without imports"),
            ("load_s", "load (start, reload), without imports"),
        ]
        rows = []
        for tree in config["trees"]:
            got = [r for r in config["rounds"] if r["tree"] == tree]
            for key, label in measures:
                rows.append([label, tree, str(len(got)), triple(summary(r[key] for r in got), 2)])
        lines += table(["measure", "tree", "rounds", "seconds"], rows)
    reload = (latency or {}).get("reload")
    rounds = reload_rounds(latency)
    if reload and rounds:
        lines += [
            f"A reload under load (`scripts/bench_latency.py --reload`): a round at "
            f"{LATENCY_GOAL_FRACTION:.0%} load ({number(reload['rate'], 0)} msg/s) during which "
            f"the daemon's config is rewritten to {reload['schemas']} schemas and "
            f"{rounds[0]['rules']} rules; the watcher picks it up after its "
            f"{number(reload['debounce_s'], 1)} s debounce, which the write-to-running time "
            "includes (to the time stamp of routerd's `route table reloaded` line). Requests "
            "flow from before the write until after the new table runs; their latency (ms) "
            "includes the swap, so the round's max bounds the routing stall from above "
            "(the stall goal is judged on it; p99 shown beside it). The shipped config is "
            "written back between rounds. CPU per request includes the reload's own, which "
            "runs in the daemon. The same load without a reload, for comparison.",
            "",
        ]
        rows = [
            [
                "with a reload",
                str(len(rounds)),
                triple(summary(r["running_after_s"] for r in rounds), 2),
                *(triple(summary(r[k] for r in rounds)) for k in ("p50", "p99", "max")),
                triple(summary(r.get("cpu_ms_per_request") for r in rounds), 3),
            ]
        ]
        level = next(
            (
                level
                for level in latency.get("levels", [])
                if math.isclose(level["fraction"], LATENCY_GOAL_FRACTION)
            ),
            None,
        )
        if level and level["rounds"]:
            got = level["rounds"]
            rows.append(
                [
                    "without",
                    str(len(got)),
                    "-",
                    *(triple(summary(r[k] for r in got)) for k in ("p50", "p99", "max")),
                    triple(summary(r.get("cpu_ms_per_request") for r in got), 3),
                ]
            )
        lines += table(
            [
                f"{LATENCY_GOAL_FRACTION:.0%} load",
                "rounds",
                "write to running, s",
                "p50",
                "p99",
                "max",
                "CPU ms per request",
            ],
            rows,
        )
    return lines


def pipeline_section(pipeline: dict[str, Any] | None) -> list[str]:
    lines = ["## Pipeline: µs per send request, in one process", ""]
    if not pipeline:
        return lines
    timing = pipeline["timing"]
    if pipeline.get("stages"):
        lines += [
            f"Best of {timing['repeat']} timed runs of at least {timing['min_time']:g} s each.",
            "",
        ]
        lines += table(
            ["request", "bytes", "decode", "validate", "categorize", "decide", "decision"],
            (
                [
                    s["request"],
                    str(s["bytes"]),
                    *(number(s[k], 2) for k in ("decode_us", "validate_us")),
                    number(s["categorize_us"], 2),
                    number(s["decide_us"], 2),
                    s["decision"],
                ]
                for s in pipeline["stages"]
            ),
        )
        lines += table(
            ["request", "jsonschema-rs is_valid", "its errors()", "reference is_valid", "ratio"],
            (
                [
                    v["request"],
                    number(v["is_valid_us"], 2),
                    number(v["errors_us"], 2),
                    number(v["reference_is_valid_us"], 1),
                    f"{v['reference_is_valid_us'] / v['is_valid_us']:.0f}x",
                ]
                for v in pipeline.get("validators", [])
            ),
        )
    ratios = rule_scale_ratios(pipeline)
    rows = []
    for r in pipeline.get("rule_scale", []):
        base = next(
            x
            for x in pipeline["rule_scale"]
            if x["request"] == r["request"] and x["rules"] == "5 rules, indexed"
        )
        ratio = min(finite(r["us"])) / min(finite(base["us"]))
        mark = " (goal)" if r["rules"] == "505 rules, indexed" and r["request"] in ratios else ""
        rows.append(
            [r["request"], r["rules"], triple(summary(r["us"])), f"{ratio:.2f}x{mark}", r["rule"]]
        )
    if rows:
        lines += [
            f"Rule scale: `decide` with the shipped 5 rules and with 500 per-customer rules "
            f"before them, indexed and tried in order (plain); {pipeline['rounds']} "
            "interleaved rounds, the ratio of minimums against 5 rules indexed.",
            "",
        ]
        lines += table(["request", "rules", "µs min / median / max", "ratio", "rule"], rows)
    return lines


def publish_section(publish: dict[str, Any] | None) -> list[str]:
    lines = ["## Publishing: CPU per confirmed publish", ""]
    if not publish:
        return lines
    lines += [
        f"{publish['count']:,} publishes of ~{publish['body_bytes']} B into a quorum queue, "
        f"{publish['in_flight']} in flight, interleaved rounds in one process.",
        "",
    ]
    cpu = {k: summary(r["cpu_us_per_publish"] for r in v) for k, v in publish["kinds"].items()}
    lines += table(
        ["publisher", "rounds", "CPU µs per publish", "publishes/s"],
        (
            [
                kind,
                str(len(runs)),
                triple(cpu[kind]),
                triple(summary(r["rate"] for r in runs), 0),
            ]
            for kind, runs in publish["kinds"].items()
        ),
    )
    window, plain = cpu.get("confirm window"), cpu.get("aiormq basic_publish")
    if window and plain:
        lines += [
            f"CPU per publish, confirm window / `basic_publish`: {window.median / plain.median:.2f}"
            " (medians).",
            "",
        ]
    return lines


def profile_section(profile: dict[str, Any] | None) -> list[str]:
    lines = ["## Where the time goes: a profile of the hot path", ""]
    if not profile:
        return lines
    if "error" in profile:
        return [*lines, f"No profile: {profile['error']}", ""]
    samples = max(profile["samples"], 1)
    drain = profile["drain"]
    lines += [
        f"{profile['profiler']} sampled `routerd serve` at {profile['rate_hz']} Hz"
        f"{' with native stacks' if profile['native'] else ''} while it drained "
        f"{profile['count']:,} requests ({profile['samples']:,} samples of the event loop's "
        f"busy time; {profile['other_thread_samples']:,} of other threads left out; "
        f"{number(drain['rate'], 0)} msg/s under the sampler, which pauses the daemon per "
        "sample). Self: the sample's innermost frame of the layer (C in libc or libpython "
        "counts for the Python function calling it). Total: the layer anywhere on the stack "
        "(the event loop and the CLI that starts it are on every stack).",
        "",
    ]
    lines += table(
        ["layer", "self", "total"],
        (
            [
                row["layer"],
                f"{100 * row['self'] / samples:.1f}%",
                f"{100 * row['total'] / samples:.1f}%",
            ]
            for row in profile["layers"]
        ),
    )
    lines += table(
        ["self", "function", "file", "layer"],
        (
            [
                f"{100 * row['self'] / samples:.1f}%",
                f"`{row['function']}`",
                row["file"],
                row["layer"],
            ]
            for row in profile["functions"]
        ),
    )
    return lines


# --------------------------------------------------------------------------- plots


def spread(ax: Any, x: Sequence[float], stats: Sequence[Summary | None], label: str) -> None:
    """Medians at `x` with min-max whiskers, leaving out the points nothing was measured at."""
    shown = [(xi, s) for xi, s in zip(x, stats, strict=True) if s is not None]
    if not shown:
        return
    ax.errorbar(
        [xi for xi, _ in shown],
        [s.median for _, s in shown],
        yerr=[[s.median - s.min for _, s in shown], [s.max - s.median for _, s in shown]],
        marker="o",
        capsize=4,
        label=label,
    )


def plots(figures: dict[str, Any], img_dir: Path) -> dict[str, Path]:
    """The PNGs this run's figures allow, by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    img_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}

    def save(name: str, fig: Any) -> None:
        path = img_dir / f"bench-{name}.png"
        fig.tight_layout()
        # No software version in the metadata: the same figures give the same file.
        fig.savefig(path, dpi=80, metadata={"Software": None})
        plt.close(fig)
        drawn[name] = path

    serve = figures.get("serve")
    if serve and serve.get("rounds"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        kinds = [k for k in serve["kinds"] if rounds_of(serve, k)]
        stats = [summary(r["rate"] for r in rounds_of(serve, k)) for k in kinds]
        cpu = [summary(r["cpu_ms_per_request"] for r in rounds_of(serve, k)) for k in kinds]
        medians = [s.median if s else 0.0 for s in stats]
        whiskers = [
            [s.median - s.min if s else 0 for s in stats],
            [s.max - s.median if s else 0 for s in stats],
        ]
        bars = ax.bar(
            [rounds_of(serve, k)[0]["name"] for k in kinds], medians, yerr=whiskers, capsize=6
        )
        for bar, c in zip(bars, cpu, strict=True):
            label = f"{c.median:.3f} ms CPU/req" if c else ""
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, 0),
                ha="center",
                va="bottom",
                xytext=(0, 4),
                textcoords="offset points",
                fontsize=8,
                color="white",
            )
        ax.set_ylabel("msg/s (median, whiskers min-max)")
        ax.set_title(
            f"Draining {serve['count']:,} requests, {len(rounds_of(serve, kinds[0]))} rounds"
        )
        save("throughput", fig)

    latency = figures.get("latency")
    if latency and latency.get("levels"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        levels = latency["levels"]
        x = [100 * level["fraction"] for level in levels]
        for key in ("p50", "p99", "p999"):
            stats = [summary(r[key] for r in level["rounds"]) for level in levels]
            spread(ax, x, stats, key)
        raw_p99 = [summary(r["p99"] for r in level.get("raw_rounds", [])) for level in levels]
        spread(ax, x, raw_p99, "p99, raw forwarder")
        ax.axhline(LATENCY_P99_GOAL_MS, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"goal: p99 <= {LATENCY_P99_GOAL_MS:g} ms at {LATENCY_GOAL_FRACTION:.0%}",
            (x[0], LATENCY_P99_GOAL_MS),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
            color="grey",
        )
        ax.set_yscale("log")
        # Plain milliseconds on the log axis, not powers of ten.
        plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(
            x, [f"{xi:.0f}%\n{level['rate']:,.0f}/s" for xi, level in zip(x, levels, strict=True)]
        )
        ax.set_xlabel("load (share of the sustained rate)")
        ax.set_ylabel("ms (median of rounds, min-max)")
        ax.legend()
        save("latency", fig)

    series = [
        (f"{serve['count']:,} x ~1 KB, round {r['round']}", r["rss_mib"])
        for r in rounds_of(serve, "routerd")
        if r.get("rss_mib")
    ]
    big = figures.get("big_bodies") or {}
    big_series = [
        (f"{r['count']} x 1 MiB, window {r['window']}", r["rss_mib"])
        for r in big.get("runs", [])
        if r.get("rss_mib")
    ]
    scale = figures.get("scale")
    backlog_series = [
        (f"{d['loaded']:,} x ~1 KB", d["rss_mib"][0])
        for d in memory_drains(scale, "backlog")
        if d["rss_mib"] and d["rss_mib"][0]
    ]
    big_series += [
        (f"{d['loaded']} x ~1 MB (bench_scale)", d["rss_mib"][0])
        for d in memory_drains(scale, "big")
        if d["rss_mib"] and d["rss_mib"][0]
    ]
    panels = [
        (title, s)
        for title, s in (
            ("Backlog of ~1 KB requests (bench_scale)", backlog_series),
            ("Throughput rounds (bench_serve)", series),
            ("1 MiB bodies", big_series),
        )
        if s
    ]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
        for ax, (title, lines) in zip(axes[0], panels, strict=True):
            for label, points in lines:
                got = [(t, mib) for t, mib in points if mib is not None]
                ax.plot([t for t, _ in got], [mib for _, mib in got], label=label)
            ax.axhline(MEMORY_GOAL_BYTES / MIB, color="grey", linestyle="--", linewidth=1)
            ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], MEMORY_GOAL_BYTES / MIB * 1.1))
            ax.set_title(title)
            ax.set_xlabel("s since the daemon started")
            ax.set_ylabel("RSS MiB (goal dashed)")
            ax.legend(fontsize=7)
        save("rss", fig)

    counts = scale_rounds(scale)
    if counts:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = list(counts)
        spread(ax, x, [summary(r["rate"] for r in counts[n]) for n in x], "total msg/s")
        ax.set_xticks(x)
        ax.set_xlabel("competing daemons on one queue")
        ax.set_ylabel("total msg/s (median, min-max)")
        ax.set_ylim(bottom=0)
        cpu_ax = ax.twinx()
        cpu = [summary(r["cpu_ms_per_request"] for r in counts[n]) for n in x]
        cpu_ax.plot(
            [n for n, c in zip(x, cpu, strict=True) if c],
            [c.median for c in cpu if c],
            color="tab:orange",
            marker="s",
            linestyle="--",
            label="CPU ms per request",
        )
        cpu_ax.set_ylabel("CPU ms per request (median)")
        cpu_ax.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + cpu_ax.get_legend_handles_labels()[0]
        ax.legend(handles, [str(h.get_label()) for h in handles], fontsize=8, loc="lower right")
        ax.set_title(f"Draining {scale['scale']['count']:,} requests per run")
        save("scale", fig)
    return drawn


# --------------------------------------------------------------------------- machine


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git(*args: str) -> str:
    run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return run.stdout.strip()


def rabbitmq_version(url: str) -> str:
    async def ask() -> str:
        import aiormq

        connection = await aiormq.connect(url)
        try:
            properties = connection.server_properties or {}
            return str(properties.get("version", "?"))
        finally:
            await connection.close()

    try:
        return asyncio.run(asyncio.wait_for(ask(), 10))
    except Exception as e:  # the report says why rather than fail for a version string
        return f"? ({type(e).__name__})"


def machine(url: str) -> dict[str, str]:
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu_model(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": rabbitmq_version(url),
        "aiormq": version("aiormq"),
        "commit": git("rev-parse", "--short", "HEAD")
        + (" with uncommitted changes" if dirty else ""),
    }


# --------------------------------------------------------------------------- running


def run_benchmarks(
    names: list[str], quick: bool, extra: dict[str, list[str]], json_dir: Path
) -> dict[str, dict[str, Any]]:
    runs = {}
    for name in names:
        script, full, tiny = BENCHMARKS[name]
        out = json_dir / f"{name}.json"
        out.unlink(missing_ok=True)
        command = [sys.executable, str(SCRIPTS_DIR / script), *(tiny if quick else full)]
        command += [*extra.get(name, []), "--json", str(out)]
        shown = shlex.join(["scripts/" + script, *command[2:-2]])
        print(f"\n=== {shown}", flush=True)
        started = time.monotonic()
        exit_code = subprocess.run(command, cwd=ROOT, check=False).returncode
        runs[name] = {"command": shown, "exit": exit_code, "seconds": time.monotonic() - started}
    (json_dir / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    return runs


def read_figures(names: list[str], json_dir: Path) -> dict[str, Any]:
    figures = {}
    for name in names:
        path = json_dir / f"{name}.json"
        if path.exists():
            figures[name] = json.loads(path.read_text())
    return figures


def render(
    figures: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    info: dict[str, str],
    out: Path,
) -> str:
    images = {
        name: str(path.relative_to(out.parent))
        for name, path in plots(figures, out.parent / "img").items()
    }
    serve, latency, big = figures.get("serve"), figures.get("latency"), figures.get("big_bodies")
    pipeline, scale, config = figures.get("pipeline"), figures.get("scale"), figures.get("config")
    goals = [
        throughput_goal(serve),
        latency_goal(latency),
        memory_backlog_goal(scale),
        memory_big_goal(big, scale, shipped_window()),
        rule_scale_goal(pipeline),
        scale_goal(scale),
        lint_goal(config),
        reload_goal(latency),
        stall_goal(latency),
    ]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `scripts/bench_report.py` from the run of {info['date']}; every figure, "
        f"table and plot below comes from that run (the benchmarks took "
        f"{sum(run['seconds'] for run in runs.values()):.0f} s). Rerun with `make bench`, "
        "which starts the broker first, or:",
        "",
        f"    {info['command']}",
        "",
        "Read the ratios and the spread: absolute figures move with the machine's load. "
        "[performance.md](performance.md) explains the benchmarks and keeps earlier figures.",
        "",
    ]
    lines += table(
        ["machine", ""],
        [
            ["cores", f"{info['cores']} ({info['cpu']})"],
            [
                "load average (1, 5, 15 min) before / after",
                f"{info['load_before']} / {info['load_after']}",
            ],
            ["system", info["system"]],
            [
                "Python / aiormq / RabbitMQ",
                f"{info['python']} / {info['aiormq']} / {info['rabbitmq']}",
            ],
            ["commit", info["commit"]],
        ],
    )
    lines += ["## Goals", ""]
    lines += table(
        ["goal", "target", "this run", "verdict"],
        ([g.name, g.goal, g.measured, g.verdict] for g in goals),
    )
    lines += table(
        ["benchmark", "command", "exit", "seconds"],
        (
            [name, f"`{run['command']}`", str(run["exit"]), f"{run['seconds']:.0f}"]
            for name, run in runs.items()
        ),
    )
    # Each section with the benchmarks its figures come from.
    sections = [
        (["serve"], throughput_section(serve, images)),
        (["latency"], latency_section(latency, images)),
        (["scale", "big_bodies"], memory_section(serve, big, scale, images)),
        (["scale"], scale_section(scale, images)),
        (["config", "latency"], config_section(config, latency)),
        (["pipeline"], pipeline_section(pipeline)),
        (["publish"], publish_section(figures.get("publish"))),
        (["profile"], profile_section(figures.get("profile"))),
    ]
    for names, section in sections:
        lines += section
        for name in names:
            if name not in figures:
                lines += not_run(name, runs)
    return "\n".join(lines).rstrip() + "\n"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs: shows it all works")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(BENCHMARKS),
        help=f"benchmarks to run, of {','.join(BENCHMARKS)} (all)",
    )
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar='NAME="ARGS"',
        help='more arguments for one benchmark\'s script, e.g. serve="--count 5000"',
    )
    parser.add_argument("--json-dir", type=Path, default=None, help="keep the scripts' JSON here")
    parser.add_argument(
        "--render-only", action="store_true", help="write the report from --json-dir's JSON"
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="the broker the benchmarks use (for its version; they read ROUTERD_TEST_AMQP_URL)",
    )
    args = parser.parse_args()
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.render_only and args.json_dir is None:
        parser.error("--render-only reads --json-dir")
    extra: dict[str, list[str]] = {}
    for item in args.args:
        name, sep, words = item.partition("=")
        if not sep or name not in BENCHMARKS:
            parser.error(f"--args wants NAME=ARGS with NAME one of {', '.join(BENCHMARKS)}")
        extra.setdefault(name, []).extend(shlex.split(words))
    args.extra = extra
    return args


def main() -> None:
    args = parse()
    out = args.out.resolve()
    command = shlex.join([".venv/bin/python", "scripts/bench_report.py", *sys.argv[1:]])
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_average(),
        "command": command,
        **machine(args.amqp_url),
    }
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        json_dir = args.json_dir or Path(tmp)
        json_dir.mkdir(parents=True, exist_ok=True)
        runs_file, machine_file = json_dir / "runs.json", json_dir / "machine.json"
        if args.render_only:
            runs = json.loads(runs_file.read_text()) if runs_file.exists() else {}
            # The date, load and command of the run that measured, not of this rendering.
            if machine_file.exists():
                info = json.loads(machine_file.read_text())
        else:
            runs = run_benchmarks(args.only, args.quick, args.extra, json_dir)
            info["load_after"] = load_average()
            machine_file.write_text(json.dumps(info, indent=1) + "\n")
        info.setdefault("load_after", load_average())
        figures = read_figures(args.only, json_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(figures, runs, info, out))
    print(f"\nwrote {out}")
    failed = [name for name, run in runs.items() if run["exit"] != 0]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see their sections in {out})")


if __name__ == "__main__":
    main()
