"""`routerd lint`: every problem `load` would refuse a config for, and every warning.

The problems come from `build`, the very step `serve` (at start and on reload), `explain`
and `test` load through, so what lint calls an error is refused everywhere. Several
configs can be checked in one run; `--strict` fails on warnings too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from routerd.config.loader import build
from routerd.config.model import Location, Problem, RouteTable
from routerd.ops.common import (
    Command,
    ExitCode,
    OutputFormat,
    display,
    envelope,
    plural,
    write_json,
    write_problems,
)

log = logging.getLogger(__name__)

_UNREADABLE = ("file-not-found", "file-unreadable")


@dataclass(frozen=True, slots=True)
class Report:
    path: Path
    problems: tuple[Problem, ...]
    table: RouteTable | None
    unreadable: bool
    strict: bool = False

    @property
    def errors(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for p in self.problems if p.severity == "warning")

    @property
    def exit_code(self) -> ExitCode:
        if self.unreadable:
            return ExitCode.BROKEN
        failed = self.errors or (self.strict and self.warnings)
        return ExitCode.FAILED if failed else ExitCode.OK

    def summary(self) -> str:
        shown = display(self.path)
        if self.unreadable:
            return f"cannot read {shown}; give the path of a route config (routerd lint PATH)"
        if self.errors or self.warnings:
            counts = [plural(self.errors, "error")] if self.errors else []
            counts += [plural(self.warnings, "warning")] if self.warnings else []
            strict = " (--strict: warnings fail)" if self.strict and not self.errors else ""
            return f"{', '.join(counts)} in {shown}{strict}"
        assert self.table is not None
        counted = (plural(n, kind.removesuffix("s")) for kind, n in self.counts().items())
        return f"{shown}: ok ({', '.join(counted)})"

    def counts(self) -> dict[str, int]:
        if self.table is None:
            return {}
        return {
            "rules": len(self.table.rules),
            "schemas": len(self.table.schemas),
            "targets": len(self.table.targets) + 1,
        }


def lint(path: Path, *, strict: bool = False) -> Report:
    """Every problem of the config at `path`, sorted by file and position."""
    path = Path(path)
    result = build(path)
    problems = list(result.problems)
    unreadable = result.document is None and any(
        p.code in _UNREADABLE and p.location.file == path for p in problems
    )
    ordered = sorted(
        (replace(p, location=_relative(p.location)) for p in dict.fromkeys(problems)),
        key=lambda p: (
            str(p.location.file),
            p.location.line,
            p.location.column,
            p.severity,
            p.code,
            p.message,
        ),
    )
    return Report(path, tuple(ordered), result.table, unreadable, strict)


def run_lint(
    paths: Sequence[Path], fmt: OutputFormat, out: TextIO, *, strict: bool = False
) -> ExitCode:
    """The `lint` command over one or more configs; the worst exit code wins."""
    reports = [lint(path, strict=strict) for path in paths]
    exit_code = max((r.exit_code for r in reports), default=ExitCode.OK)
    if fmt is OutputFormat.JSON:
        write_json(out, _as_json(reports, exit_code))
    else:
        for report in reports:
            write_problems(out, report.problems, report.summary())
    log.debug("lint %s: exit %d", ", ".join(map(str, paths)), exit_code)
    return exit_code


def _as_json(reports: list[Report], exit_code: ExitCode) -> dict[str, Any]:
    problems = [p for r in reports for p in r.problems]
    errors = sum(r.errors for r in reports)
    warnings = sum(r.warnings for r in reports)
    summary = (
        reports[0].summary()
        if len(reports) == 1
        else f"{plural(errors, 'error')}, {plural(warnings, 'warning')} in "
        f"{plural(len(reports), 'config')}"
    )
    configs = [
        {
            "file": display(r.path),
            "exit_code": int(r.exit_code),
            "ok": r.exit_code is ExitCode.OK,
            "errors": r.errors,
            "warnings": r.warnings,
            "summary": r.summary(),
            "counts": r.counts(),
        }
        for r in reports
    ]
    return envelope(
        Command.LINT,
        exit_code,
        problems,
        errors=errors,
        warnings=warnings,
        summary=summary,
        configs=configs,
    )


def _relative(location: Location) -> Location:
    """Schema files are known by absolute path; show them the way the user named the config."""
    return replace(location, file=Path(display(location.file)))
