"""Regular expressions: one dialect, ECMA-262, on one engine that matches in linear time.

JSON Schema says `pattern` and `patternProperties` hold ECMA-262 regular expressions, and a
send request is untrusted input. So every regex routerd runs, in a schema or in a
`routes.yaml` `regex` condition, compiles here: jsonschema-rs's ECMA-262 front end (`\\d` and
`\\w` are ASCII, `\\s` includes U+FEFF, `$` is the end of the text, `\\p{Letter}` works) over
Rust's `regex` crate, whose matching time grows linearly with the text whatever the
pattern. Python's backtracking `re` took 15.7 s on one hostile 100 KB address.

Lookaround and backreferences can only be run by backtracking, which a hostile text can
make exponential, so they are refused when the config loads, with a message that says so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema_rs

__all__ = ["LINEAR_ENGINE", "Regex", "RegexError", "compile_regex"]

# The options every schema validator and every condition compiles its regexes with.
LINEAR_ENGINE = jsonschema_rs.RegexOptions()
_BACKTRACKING_ENGINE = jsonschema_rs.FancyRegexOptions()
# Lookaround, or a backreference (a backslash and a digit or k<, unless the backslash is
# itself escaped).
_BACKTRACKING_ONLY = re.compile(r"\(\?<?[=!]|(?<!\\)(?:\\\\)*\\(?:[1-9]|k<)")


class RegexError(ValueError):
    """A regex routerd will not run; the message says why and what to write instead."""


@dataclass(frozen=True, slots=True)
class Regex:
    """A compiled regex; `search(text)` says whether it matches anywhere in `text`."""

    pattern: str
    search: Callable[[str], bool]


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> Regex:
    """Compile an ECMA-262 `pattern` for linear-time matching, or raise `RegexError`."""
    try:
        matcher = _matcher(pattern, LINEAR_ENGINE)
    except jsonschema_rs.ValidationError:
        raise RegexError(_why_refused(pattern)) from None
    return Regex(pattern, matcher)


def _matcher(
    pattern: str, engine: jsonschema_rs.RegexOptions | jsonschema_rs.FancyRegexOptions
) -> Callable[[str], bool]:
    # A one-keyword schema is the public way into jsonschema-rs's regex translation;
    # `pattern` ignores non-strings, and callers only ever pass text.
    validator = jsonschema_rs.validator_for(
        {"pattern": pattern}, pattern_options=engine, validate_formats=False
    )
    return validator.is_valid


def _diagnosis(pattern: str) -> str:
    # jsonschema-rs says only "not a regex"; where the dialects share the syntax, Python's
    # compiler says where the mistake is. Compiling is safe: only matching can backtrack.
    try:
        re.compile(pattern)
    except re.error as exc:
        return f": {exc.msg} at position {exc.pos}"
    return ""


def _why_refused(pattern: str) -> str:
    if _BACKTRACKING_ONLY.search(pattern):
        return (
            "uses lookaround ((?=, (?!, (?<=, (?<!) or a backreference (\\1, \\k<name>), which "
            "need a backtracking engine that a hostile request can stall; routerd matches every "
            "regex in linear time, so rewrite it without them"
        )
    try:
        _matcher(pattern, _BACKTRACKING_ENGINE)
    except jsonschema_rs.ValidationError:
        return "is not a valid ECMA-262 regular expression (the dialect JSON Schema specifies)" + (
            _diagnosis(pattern)
        )
    return (
        "compiles to more than the linear engine allows (repetitions of repetitions, such as "
        "a{1000}{1000}, multiply); write smaller bounds"
    )
