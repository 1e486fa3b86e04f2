"""Reading send requests for `routerd send` from files and stdin: one JSON object, an array
of objects, or JSON lines; every problem named by file and line before anything is sent."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from routerd.ops.common import display


class InputError(Exception):
    """A request file that cannot be sent: names the file, the line and what is wrong."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.problem}"


def read_requests(sources: Sequence[str], stdin: BinaryIO | None = None) -> list[dict[str, Any]]:
    """Every request of the files (`-` is stdin), in order. A file holds one JSON object,
    an array of objects, or JSON lines (one object a line, blank lines skipped). Read whole
    before anything is sent, so a broken line stops the run before the first publish."""
    out: list[dict[str, Any]] = []
    for source in sources:
        name = "stdin" if source == "-" else display(source)
        try:
            raw = (stdin or sys.stdin.buffer).read() if source == "-" else Path(source).read_bytes()
        except OSError as exc:
            raise InputError(name, 0, f"cannot read it: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(name, 0, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
        out.extend(_parse(name, text))
    return out


def _parse(name: str, text: str) -> list[dict[str, Any]]:
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return list(_json_lines(name, text))
    items = whole if isinstance(whole, list) else [whole]
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            what = f"item {n} of the array" if isinstance(whole, list) else "the document"
            raise InputError(name, 1, f"{what} is {_kind(item)}, not a send request object")
    return items


def _json_lines(name: str, text: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                name, number, f"not JSON ({exc.msg} at column {exc.colno}), nor JSON lines"
            ) from None
        if not isinstance(item, dict):
            raise InputError(name, number, f"{_kind(item)}, not a send request object")
        yield item


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
