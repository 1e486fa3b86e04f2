"""routes.yaml on disk: read and dump it, save it the ways editors do, and lay it out as a
Kubernetes ConfigMap volume whose `..data` symlink is swapped like kubelet swaps it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def read_config(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    return data


def source_entries(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every source of a parsed routes.yaml, in order, whether it has `source:` or `sources:`."""
    if "sources" in data:
        return list(data["sources"])
    return [data["source"]]


def catch_all_source(data: Mapping[str, Any]) -> dict[str, Any]:
    """The last source, which takes every request no other source accepts."""
    return source_entries(data)[-1]


def catch_all_and_targets(path: Path, queues: list[str]) -> tuple[str, list[str]]:
    """(the catch-all source queue, every queue of `queues` that is not a source): where a
    benchmark loads its backlog, and where routed requests arrive."""
    data = read_config(path)
    sources = {source["queue"] for source in source_entries(data)}
    return catch_all_source(data)["queue"], [q for q in queues if q not in sources]


def full_prefetch_in_flight(path: Path) -> None:
    """Give every source a byte budget that keeps its whole prefetch in flight, as before
    the budget existed: for scenarios of retries, where each refused request holds its
    slot for the nack patience and a smaller window only makes the test wait longer."""
    data = read_config(path)
    limit = data.get("limits", {}).get("max_body_bytes", 1024 * 1024)
    for source in source_entries(data):
        source["max_in_flight_bytes"] = source.get("prefetch", 256) * limit
    path.write_text(dump_config(data))


def keep_one_source(path: Path) -> Path:
    """Rewrite a config with `sources:` to the one-source form, keeping its catch-all: for
    tests of publishing itself, where which source a request goes to is not the point."""
    data = read_config(path)
    if "sources" in data:
        source = dict(catch_all_source(data))
        data = {
            ("source" if k == "sources" else k): (source if k == "sources" else v)
            for k, v in data.items()
        }
        path.write_text(dump_config(data))
    return path


def dump_config(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False)


def write_in_place(path: Path, text: str) -> None:
    """How `echo > file` or a simple editor saves: truncate and write the same inode."""
    with open(path, "w") as f:
        f.write(text)


def write_by_rename(path: Path, text: str) -> None:
    """How vim and most tools save: write a temp file beside it, rename it over the original."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_configmap(volume: Path, config: Path) -> Path:
    """Lay `config` and its schemas out like a kubelet-mounted ConfigMap volume.

    volume/..2024_01_01_00_00_00.000000001/{routes.yaml, send_request.v1.yaml, ...}
    volume/..data -> ..2024_...   volume/routes.yaml -> ..data/routes.yaml   (one per key)
    Schema paths are rewritten to the flat layout. Returns volume/routes.yaml.
    """
    data = read_config(config)
    files: dict[str, str] = {}
    base = config.parent
    schema_dirs = set()
    for schema in data.get("schemas", []):
        src = (base / schema["file"]).resolve()
        schema_dirs.add(src.parent)
        schema["file"] = src.name
    for d in schema_dirs:  # $ref'd siblings such as common.yaml come along
        for f in d.glob("*.yaml"):
            files[f.name] = f.read_text()
    files["routes.yaml"] = dump_config(data)
    volume.mkdir(parents=True, exist_ok=True)
    _configmap_publish(volume, files, "..2024_01_01_00_00_00.000000001")
    for name in files:
        os.symlink(f"..data/{name}", volume / name)
    return volume / "routes.yaml"


def configmap_update(volume: Path, changes: Mapping[str, str]) -> None:
    """Update the volume the way kubelet does: new timestamped dir, `..data` swapped by rename."""
    old = os.readlink(volume / "..data")
    files = {p.name: p.read_text() for p in (volume / old).iterdir()}
    files.update(changes)
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 10**9:09d}"
    _configmap_publish(volume, files, stamp)
    shutil.rmtree(volume / old)


def _configmap_publish(volume: Path, files: Mapping[str, str], stamp: str) -> None:
    (volume / stamp).mkdir()
    for name, text in files.items():
        (volume / stamp / name).write_text(text)
    tmp = volume / "..data_tmp"
    os.symlink(stamp, tmp)
    os.replace(tmp, volume / "..data")
