"""Every benchmark script still runs end to end, on tiny inputs.

The figures in the docs come from `scripts/bench_*.py`, and nothing else exercises those
scripts: a change of the config's shape (one `source` becoming `sources`) once broke three
of them silently. Each runs here against the real broker with inputs small enough to take
seconds; the figures it prints are not checked (they mean nothing at this size), only that
it finishes and prints its headline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (script, tiny arguments, a line it must print, needs the broker)
SCRIPTS = [
    ("bench_serve.py", ["--count", "300", "--rounds", "1"], "ratio routerd/raw", True),
    ("bench_latency.py", ["--seconds", "1", "--max-rate", "300"], "p99", True),
    (
        "bench_latency.py",
        ["--seconds", "2", "--max-rate", "300", "--basis", "drain", "--reload"],
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
        ["--backlog", "2000", "--big", "3", "--scale", "3000", "--replicas", "1,2"],
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
    ("bench_config.py", ["--schemas", "4", "--rules", "10", "--rounds", "1"], "lint", False),
    ("bench_rejections.py", ["--count", "1000"], "rows/s", True),
]


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
    script: str, args: list[str], headline: str, broker: bool
) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{script} exited {run.returncode}:\n{output[-3000:]}"
    assert headline in run.stdout, f"{script} did not print {headline!r}:\n{output[-3000:]}"
