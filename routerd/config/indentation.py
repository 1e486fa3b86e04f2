"""What an indentation slip probably was, where the YAML parser's own words are cryptic.

"expected <block end>, but found '?'" and "mapping values are not allowed here" are what
PyYAML says about a key indented one step too far in or out. Looking at the offending line
and the lines above it says which key it was meant to line up with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The parser's messages that usually mean a slip of indentation.
_CRYPTIC = (
    "expected <block end>",
    "mapping values are not allowed here",
    "did not find expected key",
    "did not find expected '-' indicator",
    "could not find expected ':'",
)
_KEY = re.compile(
    r"^(?P<indent> *)(?P<dash>- +)?(?P<key>[^\s#:'\"\[\]{}-][^:#]*?) *:"
    r"(?: +(?P<value>[^#\s].*?))? *$"
)


@dataclass(frozen=True, slots=True)
class _Line:
    number: int  # 1-based
    indent: int
    key: str
    column: int  # 0-based column where the key starts
    item: bool  # the line starts a list item (`- key: ...`)
    value: str | None


def indentation_hint(problem: str, text: str, line_number: int) -> str:
    """A hint such as "indented under `target:` (line 18)?" for a parser problem at
    `line_number` of `text`, or "" when the problem is not about indentation."""
    if not any(problem.startswith(cryptic) for cryptic in _CRYPTIC):
        return ""
    lines = text.splitlines()
    here = _parse(lines, line_number)
    if here is None:
        return ""
    above = next(
        (p for n in range(line_number - 1, 0, -1) if (p := _parse(lines, n)) is not None),
        None,
    )
    if above is None:
        return ""
    if here.indent > above.column and above.value is not None:
        return (
            f"`{here.key}:` is indented under `{above.key}:` (line {above.number}), which "
            f"already has a value: line it up with `{above.key}:` (column {above.column + 1})?"
        )
    if here.indent < above.column:
        owner = next(
            (
                p
                for n in range(above.number, 0, -1)
                if (p := _parse(lines, n)) is not None and p.item and p.indent < above.column
            ),
            None,
        )
        shown = f"- {owner.key}: {owner.value}" if owner and owner.value else ""
        under = f" in the item `{shown}` (line {owner.number})" if owner and shown else ""
        return (
            f"`{here.key}:` at column {here.indent + 1} lines up with no key above it: is it "
            f"meant to line up with `{above.key}:` (column {above.column + 1}){under}?"
        )
    return ""


def _parse(lines: list[str], number: int) -> _Line | None:
    if not 0 < number <= len(lines):
        return None
    found = _KEY.match(lines[number - 1])
    if found is None:
        return None
    indent = len(found["indent"])
    dash = found["dash"] or ""
    return _Line(
        number, indent, found["key"], indent + len(dash), bool(dash), found["value"] or None
    )
