"""What `routerd lint` calls an error, every loader of a route table refuses.

A rule after the catch-all or a misspelt routing-key field made lint exit 1 while `serve`
started, and a hot reload took it live, on such a config. Every corpus case is run through
lint and through each path a table goes live by: `load` (explain, test, the client),
`serve`'s start and the reloader. Errors refuse all three; warnings let the table through
and travel with it, to be logged once when it goes live.
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import anyio
import pytest

from routerd.config.loader import load
from routerd.config.model import ConfigError, Problem
from routerd.daemon import ServeExit, serve_async
from routerd.observe import Metrics
from routerd.ops.lint import lint
from routerd.reload import Reloader, TableHolder
from routerd.settings import Settings

CORPUS = Path(__file__).resolve().parents[1] / "lint_corpus"
CASES = sorted(p.parent.name for p in CORPUS.glob("*/routes.yaml"))


def expected_exit(case: str) -> int:
    """The exit code the corpus case's expected.txt states, independently of the code."""
    for line in (CORPUS / case / "expected.txt").read_text().splitlines():
        if line.startswith("# exit: "):
            return int(line.removeprefix("# exit: "))
    raise AssertionError(f"{case}/expected.txt has no '# exit:' line")


ERROR_CASES = [c for c in CASES if expected_exit(c) == 1]
WARNING_CASES = [c for c in CASES if expected_exit(c) == 0]


def shown(problems: tuple[Problem, ...] | list[Problem]) -> set[tuple[str, int, int, str, str]]:
    """Problems as lint and the loader both locate them, whatever the path display."""
    return {
        (p.location.file.name, p.location.line, p.location.column, p.code, p.message)
        for p in problems
    }


def lint_problems(config: Path, severity: str) -> set[tuple[str, int, int, str, str]]:
    return shown([p for p in lint(config).problems if p.severity == severity])


def copy_case(case: str, folder: Path) -> Path:
    shutil.copytree(CORPUS / case, folder, dirs_exist_ok=True)
    return folder / "routes.yaml"


def replace_with_case(folder: Path, case: str) -> None:
    """The files of `folder` become those of a corpus case, as an ops edit would make them."""
    for old in folder.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    copy_case(case, folder)


def test_the_corpus_has_cases_of_both_kinds() -> None:
    assert len(ERROR_CASES) > 30
    assert {"rule-shadowed-by-catch-all", "routing-key-field", "clean"} <= set(CASES)
    assert "clean" in WARNING_CASES


@pytest.mark.parametrize("case", ERROR_CASES)
def test_load_refuses_every_error_lint_reports(case: str) -> None:
    config = CORPUS / case / "routes.yaml"
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert shown(caught.value.problems) == lint_problems(config, "error")


@pytest.mark.parametrize("case", WARNING_CASES)
def test_load_accepts_warnings_and_carries_them(case: str) -> None:
    config = CORPUS / case / "routes.yaml"
    assert shown(load(config).warnings) == lint_problems(config, "warning")


@pytest.mark.anyio
@pytest.mark.parametrize("case", ERROR_CASES)
async def test_serve_does_not_start_on_a_config_lint_rejects(case: str) -> None:
    config = CORPUS / case / "routes.yaml"
    err = io.StringIO()
    # An unreachable broker: the refusal must come before any connection attempt.
    settings = Settings(config_path=config, http_port=0, amqp_url="amqp://u:p@127.0.0.1:1/")
    with anyio.fail_after(30):  # a started daemon would retry the broker for ever
        assert await serve_async(settings, err=err) == ServeExit.STARTUP
    printed = err.getvalue().splitlines()
    for file, line, column, code, message in lint_problems(config, "error"):
        where = f"{file}:{line}:{column}: error: " if line else f"{file}: error: "
        assert any(where in p and p.endswith(f"{message} [{code}]") for p in printed), printed
    assert "not starting (check it with `routerd lint`)" in printed[-1]


@pytest.mark.anyio
@pytest.mark.parametrize("case", ERROR_CASES)
async def test_a_reload_keeps_the_running_table_when_lint_rejects_the_new_files(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = copy_case("clean", tmp_path)
    holder = TableHolder(load(config))
    running = holder.table
    metrics = Metrics()
    reloader = Reloader(config, holder, metrics)
    replace_with_case(tmp_path, case)
    caplog.set_level(logging.WARNING, logger="routerd.reload")
    assert await reloader.reload("test") is False
    assert holder.table is running
    assert metrics.registry.get_sample_value("routerd_reloads_total", {"result": "refused"}) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    expected = lint_problems(config, "error")
    assert expected
    for _, _, _, code, message in expected:
        assert message in logged and f"[{code}]" in logged


@pytest.mark.anyio
async def test_warnings_are_logged_once_when_a_table_goes_live(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = copy_case("clean", tmp_path)
    holder = TableHolder(load(config))
    reloader = Reloader(config, holder, Metrics())
    copy_case("yaml-ambiguous", tmp_path)
    caplog.set_level(logging.WARNING, logger="routerd.reload")
    assert await reloader.reload("test") is True
    assert await reloader.reload("test") is True  # unchanged: not logged again
    warned = [r.getMessage() for r in caplog.records if "[yaml-ambiguous]" in r.getMessage()]
    assert len(warned) == len(holder.table.warnings) == 3
