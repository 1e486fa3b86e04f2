"""Every benchmark script still runs end to end, on tiny inputs.

The figures in the docs come from `scripts/bench_*.py`, and nothing else exercises those
scripts: a change of the config's shape (one `source` becoming `sources`) once broke three
of them silently. Each runs here against the real broker with inputs small enough to take
seconds; the figures it prints are not checked (they mean nothing at this size), only that
it finishes and prints its headline, and that what `--json` writes has the rounds
scripts/bench_report.py reads. The report itself runs end to end with `--quick`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (script, tiny arguments, a line it must print, needs the broker)
SCRIPTS = [
    ("bench_serve.py", ["--count", "300", "--rounds", "1"], "ratio routerd/raw", True),
    ("bench_latency.py", ["--seconds", "1", "--max-rate", "300", "--raw"], "p99", True),
    (
        "bench_latency.py",
        ["--seconds", "1", "--max-rate", "300", "--basis", "drain", "--reload", "--rounds", "2"],
        "reload to 200 schemas / 505 rules",
        True,
    ),
    (
        "bench_big_bodies.py",
        ["--kind", "text", "--count", "3", "--budgets", "4"],
        "(window   4)",
        True,
    ),
    (
        "bench_scale.py",
        ["--backlog", "2000", "--big", "3", "--scale", "1500", "--rounds", "2"],
        "bodies of ~1 MB",
        True,
    ),
    ("bench_spike.py", ["--bulk", "400", "--rate", "20", "--seconds", "1"], "password reset", True),
    ("bench_publish.py", ["--count", "200", "--rounds", "1"], "CPU per publish", True),
    (
        "bench_queue_ceiling.py",
        ["--count", "400", "--shards", "1", "--publishers", "1"],
        "msg/s",
        True,
    ),
    (
        "bench_api.py",
        ["--count", "6", "--concurrency", "2", "--size", "200000", "--rounds", "1"],
        "requests/s (6 x 202)",
        True,
    ),
    ("bench_config.py", ["--schemas", "4", "--rules", "10", "--rounds", "1"], "lint", False),
    ("bench_rejections.py", ["--count", "1000"], "rows/s", True),
    (
        "bench_pipeline.py",
        ["--repeat", "1", "--min-time", "0.001", "--rounds", "1"],
        "Rule scale",
        False,
    ),
    ("bench_profile.py", ["--count", "1000"], "top 15 functions by self time", True),
]

# The scripts bench_report.py runs, and the lists (dotted paths) their --json must hold
# entries in.
JSON_LISTS = {
    "bench_serve.py": ["rounds"],
    "bench_latency.py": ["levels"],
    "bench_big_bodies.py": ["runs"],
    "bench_publish.py": ["kinds"],
    "bench_pipeline.py": ["rule_scale"],
    "bench_profile.py": ["functions"],
    "bench_scale.py": ["memory", "scale.rounds"],
    "bench_config.py": ["rounds"],
}


def at(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def arg(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def check_rounds(script: str, args: list[str], written: dict[str, Any]) -> None:
    """Every round the arguments ask for is in the JSON, not only a summary."""
    rounds = int(arg(args, "--rounds", "1"))
    if script == "bench_latency.py":
        # routerd's own share of every round, read from its histogram.
        each = [r for level in written["levels"] for r in level["rounds"]]
        own = [(r["routerd_p99_le_ms"], r["confirm_p99_le_ms"]) for r in each]
        assert own and all(ms is not None and ms > 0 for pair in own for ms in pair), own
    if script == "bench_latency.py" and "--raw" in args:
        # The raw forwarder's round beside each of routerd's, every request arrived.
        raw = [level.get("raw_rounds", []) for level in written["levels"]]
        assert all(len(each) == rounds for each in raw), raw
        assert all(r["arrived"] == r["sent"] > 0 for each in raw for r in each), raw
    if script == "bench_latency.py" and "--reload" in args:
        assert len(at(written, "reload.rounds")) == rounds, written.get("reload")
        # The daemon's own loop-lag histogram was read around each reload.
        assert all(r["loop_lag_timers"] > 0 for r in at(written, "reload.rounds"))
    if script == "bench_scale.py":
        replicas = [int(n) for n in arg(args, "--replicas", "1,2,3").split(",")]
        # Round by round, the order of counts alternating.
        order = [n for i in range(rounds) for n in (replicas if i % 2 == 0 else replicas[::-1])]
        assert [r["replicas"] for r in written["scale"]["rounds"]] == order
        assert all(r["lost"] == 0 for r in written["scale"]["rounds"]), written["scale"]
        assert [d["phase"] for d in written["memory"]] == ["backlog", "big"]
    if script == "bench_config.py":
        assert len(written["rounds"]) == rounds


@pytest.mark.parametrize(
    ("script", "args", "headline", "broker"),
    [
        pytest.param(
            *entry, id=f"{entry[0]} {' '.join(entry[1])}", marks=[pytest.mark.broker] * entry[3]
        )
        for entry in SCRIPTS
    ],
)
def test_the_benchmark_runs_on_tiny_inputs(
    script: str, args: list[str], headline: str, broker: bool, tmp_path: Path
) -> None:
    figures = tmp_path / "figures.json"
    json_args = ["--json", str(figures)] if script in JSON_LISTS else []
    stdout, output = run_script(script, [*args, *json_args], timeout=240)
    assert headline in stdout, f"{script} did not print {headline!r}:\n{output[-3000:]}"
    if json_args:
        written = json.loads(figures.read_text())
        for path in JSON_LISTS[script]:
            assert at(written, path), f"{script} --json wrote no {path}"
        check_rounds(script, args, written)


def run_script(script: str, args: list[str], *, timeout: float) -> tuple[str, str]:
    """Run `scripts/SCRIPT ARGS`, which must exit 0; its stdout, and stdout and stderr."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{script} exited {run.returncode}:\n{output[-5000:]}"
    return run.stdout, output


def tables(markdown: str) -> dict[str, list[list[list[str]]]]:
    """Under each `## ` heading of `markdown`, its tables' data rows (header and --- left
    out), in order."""
    found: dict[str, list[list[list[str]]]] = {}
    for block in re.split(r"\n(?=## )", markdown):
        lines = block.splitlines()
        found[lines[0]] = []
        current: list[list[str]] | None = None
        for line in lines:
            if not line.startswith("|"):
                current = None
                continue
            if current is None:
                current = []
                found[lines[0]].append(current)
                continue  # the header
            if not line.startswith("| ---"):
                current.append([cell.strip() for cell in line.strip("|").split("|")])
    return found


@pytest.mark.broker
def test_the_report_runs_end_to_end_on_tiny_inputs(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    run_script("bench_report.py", ["--quick", "--out", str(out)], timeout=600)
    markdown = out.read_text()
    for name in ("throughput", "latency", "rss", "scale"):
        image = tmp_path / "img" / f"bench-{name}.png"
        assert image.read_bytes().startswith(b"\x89PNG"), f"{image} is not a PNG"
        assert f"](img/bench-{name}.png)" in markdown
    sections = tables(markdown)
    goals = sections["## Goals"][0]
    assert [row[0] for row in goals] == [
        "throughput",
        "latency",
        "memory, backlog",
        "memory, 1 MiB bodies",
        "rule scale",
        "scale-out",
        "config lint",
        "config reload",
        "reload stall",
    ]
    assert all(row[3] in ("met", "**not met**") for row in goals), goals
    for heading in (
        "## Throughput: `routerd serve` beside a raw aiormq forwarder",
        "## Latency: publish to arrival in the target queue",
        "## Memory: RSS while routerd drains a backlog",
        "## Scale-out: competing daemons on one queue",
        "## Config scale: lint and reload of 200 schemas and 500 rules",
        "## Pipeline: µs per send request, in one process",
        "## Publishing: CPU per confirmed publish",
        "## Where the time goes: a profile of the hot path",
    ):
        found = sections.get(heading)
        assert found and all(found), f"a table without rows under {heading!r}:\n{markdown}"
    assert "No figures" not in markdown
    scale = sections["## Scale-out: competing daemons on one queue"][0]
    assert [row[0] for row in scale] == ["1", "2", "3"]
    assert all(row[-1].startswith("0 of ") for row in scale), scale
    config, reload = sections["## Config scale: lint and reload of 200 schemas and 500 rules"]
    assert [row[0] for row in config] == [
        "`routerd lint` (CLI, wall)",
        "lint's build, without imports",
        "load (start, reload), without imports",
    ]
    assert [row[0] for row in reload] == ["with a reload", "without"]
