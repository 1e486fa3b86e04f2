"""`routerd lint`: the loader's problems plus the static checks, one line each.

Exit 0 when there is no error (warnings alone pass), 1 when there is one, 2 when the config
file itself cannot be read or the usage is wrong, so scripts can tell "fix the config" from
"fix the command".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from routerd.config.loader import build
from routerd.config.model import Location, Problem, RouteTable

log = logging.getLogger(__name__)

FORMATS = ("text", "json")
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
_UNREADABLE = ("file-not-found", "file-unreadable")


@dataclass(frozen=True, slots=True)
class Report:
    path: Path
    problems: tuple[Problem, ...]
    table: RouteTable | None
    unreadable: bool

    @property
    def errors(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for p in self.problems if p.severity == "warning")

    @property
    def exit_code(self) -> int:
        if self.unreadable:
            return EXIT_USAGE
        return EXIT_PROBLEMS if self.errors else EXIT_OK

    def summary(self) -> str:
        shown = _display(self.path)
        if self.unreadable:
            return f"cannot read {shown}; give the path of a route config (routerd lint PATH)"
        if self.errors or self.warnings:
            counts = [_plural(self.errors, "error")] if self.errors else []
            counts += [_plural(self.warnings, "warning")] if self.warnings else []
            return f"{', '.join(counts)} in {shown}"
        assert self.table is not None
        return (
            f"{shown}: ok ({_plural(len(self.table.rules), 'rule')}, "
            f"{_plural(len(self.table.schemas), 'schema')}, "
            f"{_plural(len(self.table.targets) + 1, 'target')})"
        )


def lint(path: Path) -> Report:
    """Every problem of the config at `path`, sorted by file and position."""
    path = Path(path)
    result = build(path)
    problems = list(result.problems)
    unreadable = result.document is None and any(
        p.code in _UNREADABLE and p.location.file == path for p in problems
    )
    shown = sorted(
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
    return Report(path, tuple(shown), result.table, unreadable)


def run_lint(path: Path, fmt: str, out: TextIO) -> int:
    if fmt not in FORMATS:
        out.write(f"routerd lint: unknown format {fmt!r}; use one of {', '.join(FORMATS)}\n")
        return EXIT_USAGE
    report = lint(path)
    if fmt == "json":
        out.write(json.dumps(_as_json(report), indent=2) + "\n")
    else:
        for problem in report.problems:
            out.write(f"{problem}\n")
        out.write(report.summary() + "\n")
    log.debug("lint %s: exit %d", path, report.exit_code)
    return report.exit_code


def _as_json(report: Report) -> dict[str, object]:
    data: dict[str, object] = {
        "file": _display(report.path),
        "ok": report.exit_code == EXIT_OK,
        "exit_code": report.exit_code,
        "errors": report.errors,
        "warnings": report.warnings,
        "summary": report.summary(),
        "problems": [p.as_dict() for p in report.problems],
    }
    if report.table is not None:
        data["counts"] = {
            "rules": len(report.table.rules),
            "schemas": len(report.table.schemas),
            "targets": len(report.table.targets) + 1,
        }
    return data


def _relative(location: Location) -> Location:
    """Schema files are known by absolute path; show them the way the user named the config."""
    return replace(location, file=Path(_display(location.file)))


def _display(path: Path) -> str:
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return str(path)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
