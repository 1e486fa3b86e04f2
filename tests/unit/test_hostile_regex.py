"""No request, whatever its content, holds a replica in validation or categorization.

Python's backtracking `re` took 15.7 s in `decide` on one 100 KB hostile address, and the
time grew with the square of its length. Every regex now runs on a linear-time engine.
The time bound below is no benchmark: the quadratic engine needs minutes on these inputs
and the linear one milliseconds, so a bound of a quarter second tells them apart on any
machine, however loaded, and cannot pass with a backtracking engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from routerd.config.loader import load
from routerd.config.model import ConfigError, RouteTable
from routerd.config.regex import RegexError, compile_regex
from routerd.config.source import read_document
from routerd.config.subschemas import patterns
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope
from tests import factories
from tests.conftest import ROOT, SHIPPED_CONFIG
from tests.unit.test_decide import small_table

BOUND_SECONDS = 0.25
MAX_BODY = 1024 * 1024

# Classic catastrophic patterns for a backtracking engine (nested quantifiers, overlapping
# alternations), each with the text that makes such an engine explode on it.
CATASTROPHIC = [
    (r"^(a+)+$", "a" * 50_000 + "!"),
    (r"^(a|a)*$", "a" * 50_000 + "!"),
    (r"^(a|aa)+$", "a" * 50_000 + "!"),
    (r"^(\w+\s?)*$", "word " * 10_000 + "!"),
    (
        r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
        "a" * 50_000 + "!",
    ),
    (r"^(.*a){12}$", "a" * 50_000),
    (r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "a@" + "a." * 25_000 + "@"),
]


def timed(action: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


@pytest.fixture(scope="module")
def shipped() -> RouteTable:
    return load(SHIPPED_CONFIG)


def test_the_reported_request_is_rejected_at_once(shipped: RouteTable) -> None:
    request = factories.valid_v1(1)
    # The report's request, grown to the size limit: 15.7 s at 100 KB, minutes at 1 MiB.
    room = MAX_BODY - len(orjson.dumps(request)) - 16
    request["from"]["email"] = "a@" + "a." * (room // 2 - 2) + "@"
    body = orjson.dumps(request)
    assert len(body) <= MAX_BODY
    seconds, decision = timed(lambda: decide(shipped, Envelope(body)))
    assert decision.rejected
    assert {r.pointer for r in decision.reasons} == {"/from/email"}
    assert {r.keyword for r in decision.reasons} == {"maxLength", "pattern"}
    assert seconds < BOUND_SECONDS, f"decide took {seconds:.3f} s"


@pytest.mark.parametrize(("pattern", "text"), CATASTROPHIC)
def test_catastrophic_patterns_in_a_schema(tmp_path: Path, pattern: str, text: str) -> None:
    schema = {
        "type": "object",
        "properties": {"v": {"const": 1}, "s": {"type": "string", "pattern": pattern}},
        "patternProperties": {pattern: {"type": "string"}},
    }
    table = small_table(tmp_path, schema=schema, limits={"max_body_bytes": MAX_BODY})
    body = orjson.dumps({"v": 1, "s": text, text: 1})
    seconds, decision = timed(lambda: decide(table, Envelope(body)))
    assert decision.rejected
    assert seconds < BOUND_SECONDS, f"{pattern}: decide took {seconds:.3f} s"


def regex_rule_table(tmp_path: Path, field: str, pattern: str, **overrides: Any) -> RouteTable:
    """A config whose first rule (category `hit`) matches `field` against `pattern`, and
    whose catch-all gives category `miss`."""
    rules = [
        {"name": "hit", "when": {"field": field, "regex": pattern}, "category": "hit"},
        {"name": "rest", "category": "miss"},
    ]
    return small_table(tmp_path, rules=[{**r, "target": "out"} for r in rules], **overrides)


@pytest.mark.parametrize(("pattern", "text"), CATASTROPHIC)
def test_catastrophic_patterns_in_a_rule(tmp_path: Path, pattern: str, text: str) -> None:
    table = regex_rule_table(tmp_path, "s", pattern, limits={"max_body_bytes": MAX_BODY})
    body = orjson.dumps({"v": 1, "customer": "c", "s": text})
    seconds, decision = timed(lambda: decide(table, Envelope(body)))
    assert not decision.rejected
    assert seconds < BOUND_SECONDS, f"{pattern}: decide took {seconds:.3f} s"


def test_lookaround_and_backreferences_are_refused() -> None:
    for pattern in (r"^(?!test-)cus-\d+$", r"(?<=a)b", r"^(a+)+\1$", r"(?<n>a)\k<n>"):
        with pytest.raises(RegexError, match="linear time"):
            compile_regex(pattern)


def _regexes_of(config: Path) -> Iterator[tuple[str, str]]:
    """Every regex in a config's conditions and in the schema files beside it."""
    try:
        data = read_document(config).data
    except ConfigError:
        return  # a corpus case whose config is not even YAML
    for found in _condition_regexes(data.get("rules", []) if isinstance(data, dict) else []):
        yield str(config), found
    for folder in {config.parent, config.parent / "schemas", ROOT / "schemas"}:
        for file in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            if file.name == "routes.yaml":
                continue
            try:
                schema = read_document(file).data
            except ConfigError:
                continue
            for _, regex in patterns(schema):
                yield str(file), regex


def _condition_regexes(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("regex"), str):
            yield node["regex"]
        for value in node.values():
            yield from _condition_regexes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _condition_regexes(item)


CONFIGS = [SHIPPED_CONFIG, *sorted((ROOT / "tests" / "lint_corpus").glob("*/routes.yaml"))]
# Corpus cases whose point is a regex routerd refuses.
REFUSED = {"condition-bad-regex", "schema-bad-pattern", "schema-pattern-lookaround"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_shipped_and_corpus_regexes_are_linear(config: Path) -> None:
    """A regression guard: every regex ships on the linear engine, and none of them, fed
    long texts built from its own characters, takes a backtracking engine's time."""
    for where, regex in _regexes_of(config):
        try:
            search = compile_regex(regex).search
        except RegexError:
            assert config.parent.name in REFUSED, f"{where}: {regex!r} refused"
            continue
        alphabet = {c for c in regex if c.isprintable()} | {"a", "@", ".", " ", "0"}
        for char in sorted(alphabet):
            text = char * 100_000 + "\u0000"
            started = time.perf_counter()
            search(text)
            seconds = time.perf_counter() - started
            assert seconds < BOUND_SECONDS, f"{where}: {regex!r} on {char!r}* took {seconds} s"
