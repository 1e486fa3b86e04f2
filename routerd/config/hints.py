"""Wording of error messages: what was probably meant, and values not read back whole."""

from __future__ import annotations

import difflib
from typing import Any


def closest(word: str, choices: list[str]) -> str | None:
    """The choice `word` is most probably a typo of, if any is close enough."""
    close = difflib.get_close_matches(word, choices, n=1)
    return close[0] if close else None


def did_you_mean(word: str, choices: list[str]) -> str:
    meant = closest(word, choices)
    return f"; did you mean {meant!r}?" if meant is not None else ""


def readable_message(message: str, instance: Any) -> str:
    """Drop a whole object or array dumped at the front of a message: a customer needs to
    know what is wrong with it, not to read it back (it can be megabytes)."""
    if isinstance(instance, dict | list) and message[:1] in ("{", "["):
        cut = max(message.rfind(" is "), message.rfind(" has "))
        if cut > 0:
            message = ("object" if isinstance(instance, dict) else "array") + message[cut:]
    return message
