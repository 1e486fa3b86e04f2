"""Hints for indentation slips, where the YAML parser's own message is cryptic."""

from __future__ import annotations

import pytest

from routerd.config.indentation import indentation_hint

ITEM = """\
rules:
  - name: everything
    category: transactional
{slip}
"""


@pytest.mark.parametrize(
    ("problem", "slip", "hint"),
    [
        (
            "expected <block end>, but found '?'",
            "  target: transactional",
            "`target:` at column 3 lines up with no key above it: is it meant to line up with "
            "`category:` (column 5) in the item `- name: everything` (line 2)?",
        ),
        (
            "mapping values are not allowed here",
            "      target: transactional",
            "`target:` is indented under `category:` (line 3), which already has a value: "
            "line it up with `category:` (column 5)?",
        ),
        ("mapping values are not allowed here", "    target: transactional", ""),
        ("found character '\\t' that cannot start any token", "  target: x", ""),
    ],
)
def test_hints(problem: str, slip: str, hint: str) -> None:
    assert indentation_hint(problem, ITEM.format(slip=slip), 4) == hint


def test_no_hint_without_a_key_on_the_line() -> None:
    assert indentation_hint("expected <block end>", ITEM.format(slip="  - oops"), 4) == ""
    assert indentation_hint("expected <block end>", "", 1) == ""
