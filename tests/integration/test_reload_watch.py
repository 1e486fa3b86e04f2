"""The Reloader against real files: editors' saves, ConfigMap swaps, SIGHUP, broken edits."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from routerd.config.loader import load
from routerd.observe import Metrics
from routerd.reload import Reloader, TableHolder
from tests.harness.config import catch_all_source

pytestmark = pytest.mark.anyio


def read(path: Path) -> str:
    return path.read_text()


def write(path: Path, text: str) -> None:
    path.write_text(text)


DEBOUNCE = 0.05


def reloads(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("routerd_reloads_total", {"result": result}) or 0


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    write(path, edited(read(path), change))


def edited(text: str, change: Callable[[dict[str, Any]], None]) -> str:
    data = yaml.safe_load(text)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def priority(value: int) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["rules"][0]["priority"] = value

    return change


async def until(condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds; the state polled here has no event to wait on."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


@asynccontextmanager
async def running(config: Path, **kwargs: Any) -> AsyncIterator[tuple[Reloader, TableHolder]]:
    holder = TableHolder(load(config))
    reloader = Reloader(config, holder, Metrics(), debounce=DEBOUNCE, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(reloader.run)
        yield reloader, holder
        tg.cancel_scope.cancel()


async def test_edit_in_place_is_picked_up(isolated_config: Path) -> None:
    async with running(isolated_config) as (reloader, holder):
        with isolated_config.open("r+") as f:
            text = edited(f.read(), priority(7))
            f.seek(0)
            f.truncate()
            f.write(text)
        await until(lambda: holder.generation == 2)
        assert holder.table.rules[0].priority == 7
        assert reloads(reloader.metrics, "accepted") == 1


async def test_write_temp_and_rename_is_picked_up(isolated_config: Path) -> None:
    async with running(isolated_config) as (_, holder):
        temp = isolated_config.with_name(".routes.yaml.tmp1234")
        write(temp, edited(read(isolated_config), priority(6)))
        os.replace(temp, isolated_config)
        await until(lambda: holder.generation == 2)
        assert holder.table.rules[0].priority == 6


async def test_a_burst_of_writes_is_loaded_once_whole(isolated_config: Path) -> None:
    async with running(isolated_config) as (reloader, holder):
        original = read(isolated_config)
        for value in range(1, 6):
            write(isolated_config, edited(original, priority(value)))
        await until(lambda: holder.generation == 2)
        assert holder.table.rules[0].priority == 5
        assert reloads(reloader.metrics, "accepted") == 1


def configmap(volume: Path, files: dict[str, str], stamp: str) -> None:
    """Update `volume` the way kubelet's atomic writer does."""
    data_dir = volume / f"..{stamp}"
    data_dir.mkdir(parents=True)
    for name, text in files.items():
        write((data_dir / name), text)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    os.symlink(data_dir.name, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            os.symlink(f"..data/{name}", volume / name)
    if old is not None:
        shutil.rmtree(volume / old)


async def test_configmap_symlink_swap_of_the_config_is_picked_up(isolated_config: Path) -> None:
    volume = isolated_config.parent.parent / "configmap"
    original = read(isolated_config)
    configmap(volume, {"routes.yaml": original}, "2026_01_01_00_00_00.000000001")
    config = volume / "routes.yaml"
    async with running(config) as (_, holder):
        configmap(volume, {"routes.yaml": edited(original, priority(4))}, "2026_01_01_00_01_00.2")
        await until(lambda: holder.generation == 2)
        assert holder.table.rules[0].priority == 4
        configmap(volume, {"routes.yaml": edited(original, priority(3))}, "2026_01_01_00_02_00.3")
        await until(lambda: holder.generation == 3)
        assert holder.table.rules[0].priority == 3


async def test_configmap_swap_of_the_schemas_is_picked_up(isolated_config: Path) -> None:
    # The loader resolves schema paths through the symlinks into the timestamped folder that
    # the next swap deletes; the reloader must keep watching the volume above it.
    schemas = isolated_config.parent.parent / "schemas"
    # Files only: schemas/rejections/ holds the rejections' JSON contract, not route schemas.
    files = {p.name: read(p) for p in schemas.iterdir() if p.is_file()}
    shutil.rmtree(schemas)
    configmap(schemas, files, "2026_01_01_00_00_00.1")
    async with running(isolated_config) as (_, holder):
        for generation, limit in ((2, 990), (3, 980)):
            changed = dict(files)
            changed["send_request.v1.yaml"] = files["send_request.v1.yaml"].replace(
                "maxLength: 998", f"maxLength: {limit}"
            )
            assert changed != files
            configmap(schemas, changed, f"2026_01_01_00_0{generation}_00.1")
            await until(lambda generation=generation: holder.generation == generation)  # type: ignore[misc]


async def test_broken_edit_is_refused_and_the_table_kept(
    isolated_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routerd.reload")
    async with running(isolated_config) as (reloader, holder):
        good = holder.table
        original = read(isolated_config)
        write(isolated_config, original + "\nrules: [unclosed\n")
        await until(lambda: reloads(reloader.metrics, "refused") >= 1)
        assert holder.table is good
        problems = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert problems[0].startswith(f"{isolated_config}:")
        assert "[yaml-syntax]" in problems[0]
        # Fixing the file brings the new table in.
        write(isolated_config, edited(original, priority(2)))
        await until(lambda: holder.generation == 2)
        assert holder.table.rules[0].priority == 2


async def test_request_reload_loads_what_the_watcher_missed(isolated_config: Path) -> None:
    # A change made before the watcher started is only seen by a SIGHUP-style request.
    holder = TableHolder(load(isolated_config))
    rewrite(isolated_config, priority(1))
    reloader = Reloader(isolated_config, holder, Metrics(), debounce=DEBOUNCE)
    async with anyio.create_task_group() as tg:
        await tg.start(reloader.run)
        assert holder.generation == 1
        reloader.request_reload("SIGHUP")
        await until(lambda: holder.generation == 2)
        assert holder.table.rules[0].priority == 1
        reloader.request_reload("SIGHUP")
        await until(lambda: reloads(reloader.metrics, "unchanged") == 1)
        tg.cancel_scope.cancel()


async def test_source_change_is_refused_as_needing_a_restart(
    isolated_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def rename_source(data: dict[str, Any]) -> None:
        catch_all_source(data)["queue"] += ".v2"

    async with running(isolated_config) as (reloader, holder):
        rewrite(isolated_config, rename_source)
        await until(lambda: reloads(reloader.metrics, "refused") == 1)
        assert holder.generation == 1
        assert any("[restart-required]" in r.getMessage() for r in caplog.records)


async def test_watch_follows_schemas_that_moved(isolated_config: Path) -> None:
    root = isolated_config.parent.parent
    shutil.copytree(root / "schemas", root / "schemas-next")

    def move(data: dict[str, Any]) -> None:
        for entry in data["schemas"]:
            entry["file"] = entry["file"].replace("/schemas/", "/schemas-next/")

    async with running(isolated_config) as (_, holder):
        rewrite(isolated_config, move)
        await until(lambda: holder.generation == 2)
        assert all("schemas-next" in str(s.file) for s in holder.table.schemas.values())
        schema = root / "schemas-next" / "send_request.v1.yaml"
        write(schema, read(schema).replace("maxLength: 998", "maxLength: 900"))
        await until(lambda: holder.generation == 3)


async def test_a_failing_before_swap_keeps_the_table(isolated_config: Path) -> None:
    async def before_swap(new: object) -> None:
        raise ConnectionError("broker went away")

    async with running(isolated_config, before_swap=before_swap) as (reloader, holder):
        rewrite(isolated_config, priority(8))
        await until(lambda: reloads(reloader.metrics, "refused") == 1)
        assert holder.generation == 1


def swap_folder(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Deploy a whole new config folder by renames, as some deploy tools do."""
    staged = folder.with_name(folder.name + ".new")
    shutil.copytree(folder, staged)
    rewrite(staged / "routes.yaml", change)
    folder.rename(folder.with_name(folder.name + ".old"))
    staged.rename(folder)
    shutil.rmtree(folder.with_name(folder.name + ".old"))


async def test_a_config_folder_replaced_by_renames_is_picked_up(isolated_config: Path) -> None:
    async with running(isolated_config) as (_, holder):
        swap_folder(isolated_config.parent, priority(5))
        await until(lambda: holder.generation == 2)
        # The watch moved to the new folder: later edits are seen too.
        rewrite(isolated_config, priority(4))
        await until(lambda: holder.generation == 3)
        assert holder.table.rules[0].priority == 4


async def test_without_a_working_watcher_sighup_still_reloads(
    isolated_config: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_awatch(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr("routerd.reload.awatch", broken_awatch)
    async with running(isolated_config) as (reloader, holder):
        await until(lambda: any("cannot watch" in r.getMessage() for r in caplog.records))
        rewrite(isolated_config, priority(3))
        reloader.request_reload("SIGHUP")
        await until(lambda: holder.generation == 2)
