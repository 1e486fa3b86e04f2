"""What every ops tool shares: exit codes, output formats, paths as shown, the JSON envelope.

- Exit codes mean the same for every command: 0 good (clean, routed, all passed), 1 the
  answer is "no" (lint errors, a rejected request, a failed route test), 2 something to fix
  before there is an answer (the config, an input file or the usage).
- Problems are printed in lint's format, `file:line:col: severity: message [code]`, on
  standard output by every command, followed by a summary line; standard error carries
  only usage errors and logs.
- `--format json` prints one JSON object, the envelope below plus the command's own keys,
  always the same shape, also when the config itself is broken. Its JSON Schema is
  routerd/ops/output.schema.json (docs/ops-output.md describes it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum, StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from routerd.config.model import Location, Problem

# Bumped when a key changes meaning or goes away; new keys keep the version.
FORMAT_VERSION = 1


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BROKEN = 2


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Command(StrEnum):
    LINT = "lint"
    EXPLAIN = "explain"
    TEST = "test"
    SEND = "send"
    REJECTIONS = "rejections"


def display(path: Path | str) -> str:
    """A path as the user would write it: relative to the working folder when inside it."""
    path = Path(path)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return str(path)


def location_json(location: Location) -> dict[str, Any]:
    """The location fields every located object of the JSON output carries."""
    return {"file": display(location.file), "line": location.line, "column": location.column}


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        **location_json(problem.location),
        "severity": problem.severity,
        "code": problem.code,
        "message": problem.message,
    }


def shown(problem: Problem) -> str:
    """A problem in lint's one-line format, its file as the user would write it."""
    where = problem.location
    location = Location(Path(display(where.file)), where.line, where.column)
    return str(Problem(location, problem.severity, problem.message, problem.code))


def envelope(
    command: Command, exit_code: ExitCode, problems: Iterable[Problem], **extra: Any
) -> dict[str, Any]:
    """The JSON object every command prints: format version, command, exit code, whether
    the answer is good, the config problems found, then the command's own keys."""
    return {
        "format_version": FORMAT_VERSION,
        "command": str(command),
        "exit_code": int(exit_code),
        "ok": exit_code is ExitCode.OK,
        "problems": [problem_json(p) for p in problems],
        **extra,
    }


def write_json(out: TextIO, data: Mapping[str, Any]) -> None:
    out.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def write_problems(out: TextIO, problems: Iterable[Problem], summary: str) -> None:
    for problem in problems:
        out.write(shown(problem) + "\n")
    out.write(summary + "\n")


def report_broken(
    command: Command,
    problems: Sequence[Problem],
    fmt: OutputFormat,
    out: TextIO,
    what: str,
    *,
    config: bool = True,
) -> ExitCode:
    """The config (or, not `config`, another input) is broken: its problems in lint's
    format and a summary, or the JSON envelope with them; no answer until they are fixed."""
    errors = sum(1 for p in problems if p.severity == "error")
    hint = " (routerd lint checks a config)" if config else ""
    summary = f"{plural(errors, 'error')} in {what}; fix them first{hint}"
    if fmt is OutputFormat.JSON:
        write_json(out, envelope(command, ExitCode.BROKEN, problems, summary=summary))
    else:
        write_problems(out, problems, summary)
    return ExitCode.BROKEN


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def output_schema() -> dict[str, Any]:
    """The JSON Schema of the `--format json` output of every command."""
    text = resources.files("routerd.ops").joinpath("output.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema
