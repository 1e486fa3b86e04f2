"""Seconds to lint and to load (what a reload runs) a big config: 200 schemas, 500 rules.

    .venv/bin/python scripts/bench_config.py [--schemas 200] [--rules 500] [--rounds 3]
                                             [--json PATH]

The config is generated into a temporary folder from the shipped one: `--schemas` schema
versions (copies of the shipped v1 and v2 schemas, alternating, each with its own version)
and `--rules` per-customer rules ("customer_id equals X", some with an `and`, some with a
list) before the shipped rules. `load` runs every lint check, as a reload does. Nothing is
asserted; the goal is under 2 s for each. `--json PATH` also writes every round's seconds
and what lint found in the generated config.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_serve import write_json  # noqa: E402

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


def write_config(
    folder: Path, *, schemas: int = 2, rules: int = 500, base: dict[str, Any] | None = None
) -> Path:
    """The shipped config (or `base`, a parsed routes.yaml with the same schema files) with
    `rules` customer rules first and `schemas` schema versions (1 and 2 are the shipped
    ones; the rest are copies under new versions). Returns the path of routes.yaml in
    `folder`."""
    config: dict[str, Any] = (
        dict(base)
        if base is not None
        else yaml.safe_load((ROOT / "config" / "routes.yaml").read_text())
    )
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


# Run in a fresh interpreter per measurement, as `routerd lint` and a daemon's first load
# are: nothing cached from an earlier round.
_TIMED = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from routerd.config.loader import build, load
imported = time.perf_counter()
{call}(Path(sys.argv[1]))
done = time.perf_counter()
print(json.dumps([done - start, done - imported]))
"""


def timed(tree: Path, call: str, config: Path) -> float:
    """Seconds for `call` (build: what lint runs; load: what a reload runs) in a new
    process with routerd from `tree`, imports left out."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMED.format(call=call), str(config)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    _, work = json.loads(out)
    return float(work)


def cli_lint(tree: Path, config: Path) -> float:
    """Wall seconds of `routerd lint CONFIG` with routerd from `tree`."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "routerd", "lint", str(config)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - start


def spread(times: list[float]) -> str:
    return f"{min(times):5.2f} {statistics.median(times):6.2f} {max(times):5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=200)
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write every round here")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another routerd source tree (e.g. `git archive main | tar -x -C DIR`) to "
        "measure in the same rounds, interleaved",
    )
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), schemas=args.schemas, rules=args.rules)
        result = build(path)
        errors = [p for p in result.problems if p.severity == "error"]
        if errors:
            sys.exit("the generated config has errors:\n" + "\n".join(map(str, errors[:10])))
        table = load(path)
        print(
            f"{len(table.schemas)} schemas, {len(table.rules)} rules, "
            f"{len(result.problems)} warnings; seconds, min / median / max of {args.rounds} "
            f"rounds, each in a new process"
        )
        figures: dict[tuple[str, str], list[float]] = {}
        rounds: list[dict[str, Any]] = []
        for round_ in range(args.rounds):
            for tree_name, tree in trees.items():
                row: dict[str, Any] = {"round": round_ + 1, "tree": tree_name}
                row["lint_cli_s"] = cli_lint(tree, path)
                figures.setdefault((tree_name, "routerd lint (CLI, wall)"), []).append(
                    row["lint_cli_s"]
                )
                for call in ("build", "load"):
                    work = row[f"{call}_s"] = timed(tree, call, path)
                    what = "lint's build" if call == "build" else "load (start, reload)"
                    figures.setdefault((tree_name, f"{what}, without imports"), []).append(work)
                rounds.append(row)
        names = sorted({name for _, name in figures}, key=lambda n: n[0] != "r")
        for name in names:
            cells = "   ".join(
                f"{tree_name}: {spread(figures[(tree_name, name)])}" for tree_name in trees
            )
            print(f"  {name:36} {cells}")
        if args.baseline:
            for name in names:
                ratio = statistics.median(figures[("this tree", name)]) / statistics.median(
                    figures[("baseline", name)]
                )
                print(f"  {name:36} this tree / baseline: {ratio:.2f}")
        if args.json is not None:
            severities = [p.severity for p in result.problems]
            write_json(
                args.json,
                {
                    "schemas": len(table.schemas),
                    "rules": len(table.rules),
                    # Lint's findings on the timed config, by severity (errors stopped
                    # this script above): the report shows what the timed lint checked.
                    "problems": {s: severities.count(s) for s in sorted(set(severities))},
                    "trees": list(trees),
                    "rounds": rounds,
                },
            )


if __name__ == "__main__":
    main()
