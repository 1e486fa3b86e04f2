"""Suggestions for likely typos, so an error can say what was probably meant."""

from __future__ import annotations

import difflib
import logging

log = logging.getLogger(__name__)


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
