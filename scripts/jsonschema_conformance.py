"""The official JSON Schema Test Suite, run through routerd's schema loader and validation.

    .venv/bin/python scripts/jsonschema_conformance.py PATH [--draft draft2020-12 ...] [-v]

PATH is a local checkout of github.com/json-schema-org/JSON-Schema-Test-Suite (never
vendored here: point this at a copy). For every draft routerd accepts, each test group's
schema is written to a file, loaded exactly as `routes.yaml` schemas are (meta-schema and
`$ref` checks, regex compilation, the validator), and every test's instance goes through
the pipeline's validation step. Prints wrong answers by file, groups refused at load (with
the loader's reason), and groups skipped because they need a remote reference (routerd
never fetches schemas). Exit 1 when any answer is wrong.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # routerd when not installed

from routerd.config.model import Location, Problem, Schema  # noqa: E402
from routerd.config.schemas import load_schema_set  # noqa: E402
from routerd.config.validator import compile_schema  # noqa: E402
from routerd.pipeline.validate import validate  # noqa: E402

DRAFTS = {
    "draft4": "http://json-schema.org/draft-04/schema#",
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}
OPTIONAL = ("ecmascript-regex.json",)
REMOTE = "http://localhost:1234/"


@dataclass
class Tally:
    tests: int = 0
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    refused_tests: int = 0
    skipped: list[str] = field(default_factory=list)
    skipped_tests: int = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="a checkout of JSON-Schema-Test-Suite")
    parser.add_argument("--draft", action="append", choices=sorted(DRAFTS))
    parser.add_argument("-v", "--verbose", action="store_true", help="list every refusal")
    args = parser.parse_args()
    tests = args.suite / "tests"
    if not tests.is_dir():
        parser.error(f"{args.suite} has no tests/ folder: give a JSON-Schema-Test-Suite checkout")
    print(f"suite: {args.suite} at {_commit(args.suite)}")
    any_wrong = False
    with tempfile.TemporaryDirectory(prefix="routerd-conformance-") as scratch:
        for draft in args.draft or list(DRAFTS):
            files = sorted((tests / draft).glob("*.json"))
            files += [tests / draft / "optional" / name for name in OPTIONAL]
            tally = Tally()
            for file in files:
                if file.is_file():
                    run_file(file, draft, Path(scratch) / draft, tally)
            any_wrong |= bool(tally.wrong)
            report(draft, tally, args.verbose)
    return 1 if any_wrong else 0


def run_file(file: Path, draft: str, scratch: Path, tally: Tally) -> None:
    name = file.name if file.parent.name != "optional" else f"optional/{file.name}"
    for index, group in enumerate(json.loads(file.read_text(encoding="utf-8"))):
        label = f"{name} #{index} {group['description']!r}"
        count = len(group["tests"])
        tally.tests += count
        if REMOTE in json.dumps(group["schema"]):
            tally.skipped.append(f"{label}: refers to {REMOTE}, a remote schema")
            tally.skipped_tests += count
            continue
        # A folder per group: the loader reads every schema file beside a configured one.
        path = scratch / f"{file.stem}-{index}" / "schema.json"
        schema, problems = load(group["schema"], draft, path)
        if schema is None:
            reason = next((p.message for p in problems if p.severity == "error"), "refused")
            tally.refused.append(f"{label}: {reason}")
            tally.refused_tests += count
            continue
        for test in group["tests"]:
            answer = answer_of(schema, test["data"])
            if answer == test["valid"]:
                tally.right += 1
            else:
                tally.wrong.append(
                    f"{label} / {test['description']!r}: expected "
                    f"{'valid' if test['valid'] else 'invalid'}, routerd said {answer}"
                )


def load(document: Any, draft: str, path: Path) -> tuple[Schema | None, list[Problem]]:
    """The group's schema through the loader's own steps, as a `routes.yaml` schema is."""
    if isinstance(document, dict) and "$schema" not in document:
        # The suite's schemas follow their folder's draft unless they say otherwise.
        document = {"$schema": DRAFTS[draft], **document}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    problems: list[Problem] = []
    schemas = load_schema_set([path], problems)
    location = Location(path, 1, 1)
    if path.as_uri() not in schemas.documents:
        return None, problems
    compiled = compile_schema(schemas, path.as_uri(), location, problems)
    if compiled is None or any(p.severity == "error" for p in problems):
        return None, problems
    is_valid, errors = compiled
    return Schema(path.stem, "1", path, document, location, is_valid, errors), problems


def answer_of(schema: Schema, instance: Any) -> bool | str:
    """True or False when `is_valid` and the validation step agree; what went wrong if not."""
    try:
        valid = schema.is_valid(instance)
        reasons = validate(schema, instance, max_reasons=50)
    except Exception as exc:
        return f"a crash ({type(exc).__name__}: {exc})"
    if valid != (not reasons):
        return f"is_valid={valid} but the validation step gave {len(reasons)} reasons"
    return valid


def report(draft: str, tally: Tally, verbose: bool) -> None:
    run = tally.tests - tally.refused_tests - tally.skipped_tests
    print(
        f"\n{draft}: {tally.tests} tests; {run} run: {tally.right} right, "
        f"{len(tally.wrong)} wrong; {len(tally.refused)} groups ({tally.refused_tests} tests) "
        f"refused at load; {len(tally.skipped)} groups ({tally.skipped_tests} tests) skipped"
    )
    for line in tally.wrong:
        print(f"  WRONG   {line}")
    reasons = Counter(_reason_kind(line) for line in tally.refused)
    for reason, count in reasons.most_common():
        print(f"  REFUSED {count} group(s): {reason}")
    if verbose:
        for line in tally.refused:
            print(f"  REFUSED {line}")
        for line in tally.skipped:
            print(f"  SKIPPED {line}")
    elif tally.skipped:
        print(f"  SKIPPED {len(tally.skipped)} group(s): they refer to {REMOTE}, a remote schema")


def _reason_kind(line: str) -> str:
    reason = line.split(": ", 1)[1]
    return reason.split("'", 1)[0].strip() + " ..." if "'" in reason else reason


def _commit(path: Path) -> str:
    try:
        found = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return "an unknown commit"
    return found.stdout.strip() or "an unknown commit (not a git checkout)"


if __name__ == "__main__":
    sys.exit(main())
