"""Seconds to lint and to load (what a reload runs) a big config: 200 schemas, 500 rules.

    .venv/bin/python scripts/bench_config.py [--schemas 200] [--rules 500] [--rounds 3]

The config is generated into a temporary folder from the shipped one: `--schemas` schema
versions (copies of the shipped v1 and v2 schemas, alternating, each with its own version)
and `--rules` per-customer rules ("customer_id equals X", some with an `and`, some with a
list) before the shipped rules. `load` runs every lint check, as a reload does. Nothing is
asserted; the goal is under 2 s for each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routerd.config.loader import build, load  # noqa: E402


def customer_rules(count: int) -> list[dict[str, Any]]:
    """Per-customer rules as ops write them: dedicated pools and overrides for big senders.
    Customers are `big-0`, `big-1`, ...; none is a customer the test factories make."""
    rules: list[dict[str, Any]] = []
    for i in range(count):
        customer = {"field": "customer_id"}
        match i % 3:
            case 0:
                when: dict[str, Any] = {**customer, "equals": f"big-{i}"}
            case 1:
                when = {
                    "all": [
                        {**customer, "equals": f"big-{i}"},
                        {"field": "stream", "equals": "broadcast"},
                    ]
                }
            case _:
                when = {**customer, "in": [f"big-{i}", f"big-{i}-eu"]}
        rules.append(
            {
                "name": f"customer-{i}",
                "when": when,
                "category": "bulk" if i % 2 else "transactional",
                "target": "bulk" if i % 2 else "transactional",
            }
        )
    return rules


def write_config(folder: Path, *, schemas: int = 2, rules: int = 500) -> Path:
    """The shipped config with `rules` customer rules first and `schemas` schema versions
    (1 and 2 are the shipped ones; the rest are copies under new versions). Returns the
    path of routes.yaml in `folder`."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "config" / "routes.yaml").read_text())
    schema_dir = folder / "schemas"
    schema_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "schemas" / "common.yaml", schema_dir / "common.yaml")
    shapes = {
        1: yaml.safe_load((ROOT / "schemas" / "send_request.v1.yaml").read_text()),
        2: yaml.safe_load((ROOT / "schemas" / "send_request.v2.yaml").read_text()),
    }
    entries = []
    for version in range(1, schemas + 1):
        shape = 1 if version % 2 else 2
        document = dict(shapes[shape])
        document["properties"] = {
            **document["properties"],
            "schema_version": {"const": version},
        }
        document["title"] = f"Send request v{version} (shaped as v{shape})"
        document.pop("examples", None)
        name = f"send_request.v{version}.yaml"
        (schema_dir / name).write_text(yaml.safe_dump(document, sort_keys=False))
        entries.append({"name": "send-request", "version": version, "file": f"schemas/{name}"})
    config["schemas"] = entries
    config["rules"] = [*customer_rules(rules), *config["rules"]]
    path = folder / "routes.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def seconds(fn: Any, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=200)
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), schemas=args.schemas, rules=args.rules)
        result = build(path)
        errors = [p for p in result.problems if p.severity == "error"]
        if errors:
            sys.exit("the generated config has errors:\n" + "\n".join(map(str, errors[:10])))
        warnings = len(result.problems)
        table = load(path)
        print(
            f"{len(table.schemas)} schemas, {len(table.rules)} rules, "
            f"{warnings} warnings; seconds, min / median / max of {args.rounds}"
        )
        for name, fn in (
            ("lint (build + every check)", lambda: build(path)),
            ("load", lambda: load(path)),
        ):
            times = seconds(fn, args.rounds)
            print(
                f"  {name:28} {min(times):6.2f} {statistics.median(times):6.2f} {max(times):6.2f}"
            )


if __name__ == "__main__":
    main()
