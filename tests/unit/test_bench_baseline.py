"""`bench_serve --baseline DIR` must start the routerd in DIR, not this checkout's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import daemon
from tests.unit.test_bench_report import load_script

serve = load_script("bench_serve")


def test_the_baseline_command_runs_the_other_trees_routerd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "routerd"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("def main() -> None:\n    print('the other tree')\n")
    for name, value in serve.routerd_from(tmp_path).items():
        monkeypatch.setenv(name, value)
    # As the harness starts a daemon: from this checkout, where `python -c` would find
    # this checkout's routerd first unless told not to look there.
    out = subprocess.run(
        daemon.routerd_command(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=daemon.ROOT,
        env=daemon._child_env(),
        check=True,
    )
    assert out.stdout.strip() == "the other tree"


def test_without_a_tree_the_harness_runs_this_checkout() -> None:
    assert serve.routerd_from(None) == {}
