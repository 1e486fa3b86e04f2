from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.observe import Metrics
from routerd.reload import (
    RELOAD_SWITCH_INTERVAL,
    Reloader,
    TableHolder,
    _loop_first,
    restart_needed,
    watch_dirs,
)
from tests.harness.config import catch_all_source

pytestmark = pytest.mark.anyio


def read(path: Path) -> str:
    return path.read_text()


def write(path: Path, text: str) -> None:
    path.write_text(text)


def remove(path: Path) -> None:
    path.unlink()


def edit(path: Path, change: Any) -> None:
    data = yaml.safe_load(read(path))
    change(data)
    write(path, yaml.safe_dump(data, sort_keys=False))


def reloads(metrics: Metrics, result: str) -> float:
    return sample(metrics, "routerd_reloads_total", result=result)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0


def make(config: Path, **kwargs: Any) -> tuple[Reloader, TableHolder, Metrics]:
    holder = TableHolder(load(config))
    metrics = Metrics()
    return Reloader(config, holder, metrics, **kwargs), holder, metrics


def set_priority(data: dict[str, Any]) -> None:
    data["rules"][0]["priority"] = 7


def test_holder_swaps_the_whole_table_and_counts_generations(isolated_config: Path) -> None:
    first, second = load(isolated_config), load(isolated_config)
    holder = TableHolder(first)
    assert (holder.table, holder.generation) == (first, 1)
    assert holder.swap(second) == 2
    assert holder.table is second


def test_watch_dirs_are_folders_and_skip_configmap_internals(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "routes.yaml"
    files = [
        tmp_path / "etc" / "..2026_01_01_00_00_00.1" / "routes.yaml",
        tmp_path / "schemas" / "..data" / "send_request.v1.yaml",
        tmp_path / "etc" / ".." / "schemas" / "common.yaml",
    ]
    assert watch_dirs(config, files) == (tmp_path / "etc", tmp_path / "schemas")


async def test_unchanged_files_count_unchanged(isolated_config: Path) -> None:
    reloader, holder, metrics = make(isolated_config)
    assert await reloader.reload("test")
    assert holder.generation == 1
    assert reloads(metrics, "unchanged") == 1


async def test_accepted_reload_swaps_and_logs_one_line(
    isolated_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, holder, metrics = make(isolated_config)
    old = holder.table
    edit(isolated_config, set_priority)
    caplog.set_level(logging.INFO, logger="routerd.reload")
    assert await reloader.reload("test")
    assert holder.generation == 2
    assert holder.table.rules[0].priority == 7
    assert holder.table.content_hash != old.content_hash
    assert sample(metrics, "routerd_route_table_generation") == 2
    assert reloads(metrics, "accepted") == 1
    [line] = [r for r in caplog.records if r.name == "routerd.reload"]
    assert line.getMessage() == "route table reloaded"
    assert line.__dict__["rules"] == 5
    assert line.__dict__["schemas"] == 2
    assert line.__dict__["hash"] == holder.table.content_hash
    assert line.__dict__["generation"] == 2


async def test_broken_config_is_refused_in_lint_format(
    isolated_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, holder, metrics = make(isolated_config)
    old = holder.table
    text = read(isolated_config)
    write(isolated_config, text.replace("target: bulk\n", "target: nowhere\n", 1))
    assert not await reloader.reload("test")
    assert holder.table is old and holder.generation == 1
    assert reloads(metrics, "refused") == 1
    assert sample(metrics, "routerd_reload_problems_total") >= 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        m.startswith(f"{isolated_config}:") and ": error: " in m and m.endswith("]") for m in errors
    ), errors
    assert errors[-1] == "reload refused, the running route table stays"


async def test_yaml_syntax_error_and_missing_file_are_refused(isolated_config: Path) -> None:
    reloader, holder, metrics = make(isolated_config)
    write(isolated_config, "rules: [\n")
    assert not await reloader.reload("test")
    remove(isolated_config)
    assert not await reloader.reload("test")
    assert reloads(metrics, "refused") == 2
    assert holder.generation == 1


async def test_source_change_needs_a_restart(
    isolated_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, holder, metrics = make(isolated_config)

    def change(data: dict[str, Any]) -> None:
        catch_all_source(data)["queue"] += ".renamed"
        catch_all_source(data)["prefetch"] = 10
        set_priority(data)

    edit(isolated_config, change)
    assert not await reloader.reload("test")
    assert holder.generation == 1
    assert reloads(metrics, "refused") == 1
    assert sample(metrics, "routerd_reload_problems_total") == 2
    messages = [r.getMessage() for r in caplog.records if "[restart-required]" in r.getMessage()]
    assert len(messages) == 2
    assert "sources[1].prefetch changed from 256 to 10" in messages[0]
    assert "restart routerd" in messages[0]
    assert messages[1].startswith(f"{isolated_config}:")


def test_restart_needed_is_empty_for_the_same_source(isolated_config: Path) -> None:
    assert restart_needed(load(isolated_config), load(isolated_config)) == ()


async def test_before_swap_sees_the_new_table_before_handlers_do(isolated_config: Path) -> None:
    seen: list[tuple[RouteTable, RouteTable]] = []

    async def before_swap(new: RouteTable) -> None:
        seen.append((new, holder.table))

    reloader, holder, _ = make(isolated_config, before_swap=before_swap)
    old = holder.table
    edit(isolated_config, set_priority)
    assert await reloader.reload("test")
    assert seen == [(holder.table, old)]


async def test_failing_before_swap_refuses_the_reload(isolated_config: Path) -> None:
    async def before_swap(new: RouteTable) -> None:
        raise ConnectionError("channel closed")

    reloader, holder, metrics = make(isolated_config, before_swap=before_swap)
    edit(isolated_config, set_priority)
    assert not await reloader.reload("test")
    assert holder.generation == 1
    assert reloads(metrics, "refused") == 1


async def test_a_crashing_loader_is_a_refused_reload(isolated_config: Path) -> None:
    def boom(path: Path) -> RouteTable:
        raise RuntimeError("loader bug")

    reloader, _, metrics = make(isolated_config, load=boom)
    assert not await reloader.reload("test")
    assert reloads(metrics, "refused") == 1


def test_a_reload_loads_with_short_gil_turns_and_puts_them_back() -> None:
    before = sys.getswitchinterval()
    try:
        with _loop_first():
            assert sys.getswitchinterval() == pytest.approx(RELOAD_SWITCH_INTERVAL, rel=0.05)
        assert sys.getswitchinterval() == pytest.approx(before, rel=0.05)
        # A process already set to shorter turns keeps them.
        sys.setswitchinterval(RELOAD_SWITCH_INTERVAL / 5)
        with _loop_first():
            assert sys.getswitchinterval() == pytest.approx(RELOAD_SWITCH_INTERVAL / 5, rel=0.05)
    finally:
        sys.setswitchinterval(before)


async def test_a_reload_loads_with_the_collector_paused_and_turns_it_back_on(
    isolated_config: Path,
) -> None:
    seen: list[bool] = []

    def probe(path: Path) -> RouteTable:
        seen.append(gc.isenabled())
        return load(path)

    assert gc.isenabled()
    reloader, _, _ = make(isolated_config, load=probe)
    assert await reloader.reload("test")
    assert seen == [False]
    assert gc.isenabled()

    # A process that turned the collector off itself keeps it off.
    gc.disable()
    try:
        assert await reloader.reload("test")
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_failed_load_turns_the_collector_back_on(isolated_config: Path) -> None:
    def boom(path: Path) -> RouteTable:
        raise RuntimeError("loader bug")

    reloader, _, _ = make(isolated_config, load=boom)
    assert not await reloader.reload("test")
    assert gc.isenabled()
