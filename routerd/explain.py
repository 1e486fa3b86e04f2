"""`routerd explain`: where one send request would go, and why.

It runs the very `decide(table, envelope, explain=True)` the daemon runs and turns the
decision into an explanation: the schema chosen, each validation error, each rule tried with
each condition's answer and the value each test saw, and the resulting target, routing key
and headers (or the reasons the request is rejected). One explanation object feeds both the
text and the JSON output, so the two never disagree. `routerd test` reuses the envelope and
decision helpers here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson

from routerd.config.loader import load
from routerd.config.model import ConditionKind, ConfigError, RouteTable, TraceNode
from routerd.config.paths import MISSING, resolve
from routerd.explain_text import render_text
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import AMQP_PROPERTIES, Decision, Envelope, Reason, RuleTrace
from routerd.pipeline.render import partition_of

log = logging.getLogger(__name__)

# Exit codes, also documented in the command's help.
ROUTED, REJECTED, BROKEN = 0, 1, 2

FORMAT_VERSION = 1
DEFAULT_PROPERTIES: Mapping[str, Any] = {"content_type": "application/json"}
# AMQP basic properties a send request can carry (headers are given with -H instead).
PROPERTY_NAMES = AMQP_PROPERTIES
_INTEGER_PROPERTIES = frozenset({"delivery_mode", "priority", "timestamp"})

# Where the pipeline stopped, by the code of the first reason of a rejected decision.
_STAGES = {
    "decode": (
        "too_large",
        "unsupported_content_type",
        "unsupported_content_encoding",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "too_deep",
    ),
    "schema": ("missing_schema_version", "unknown_schema_version"),
    "validate": ("schema_violation", "too_many_errors"),
    "categorize": ("unmatched",),
    "route": ("routing_key_unrenderable",),
}
STAGE_OF = {code: stage for stage, codes in _STAGES.items() for code in codes}


class UsageError(Exception):
    """A command-line value that cannot be used; the message says which and why."""


def parse_assignments(items: Sequence[str], what: str) -> dict[str, Any]:
    """`NAME=VALUE` gives text, `NAME:=VALUE` gives a JSON value (`x-retries:=3`)."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or name == ":":
            raise UsageError(f"{what} {item!r} must be written NAME=VALUE or NAME:=JSON")
        if name.endswith(":"):
            name = name[:-1]
            try:
                parsed[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{what} {name}: {value!r} is not JSON ({exc.msg})") from None
        else:
            parsed[name] = value
    return parsed


def parse_properties(items: Sequence[str]) -> dict[str, Any]:
    """AMQP properties over the defaults; an empty value removes one (`content_type=`)."""
    properties = dict(DEFAULT_PROPERTIES)
    for name, value in parse_assignments(items, "property").items():
        if name not in PROPERTY_NAMES:
            known = ", ".join(sorted(PROPERTY_NAMES))
            raise UsageError(f"unknown AMQP property {name!r} (properties: {known})")
        if value == "":
            properties.pop(name, None)
        elif name in _INTEGER_PROPERTIES and isinstance(value, str):
            try:
                properties[name] = int(value)
            except ValueError:
                raise UsageError(f"property {name} takes a whole number, got {value!r}") from None
        else:
            properties[name] = value
    return properties


def run_explain(
    config: Path,
    message: str,
    headers: Sequence[str],
    fmt: str,
    out: TextIO,
    *,
    properties: Sequence[str] = (),
    err: TextIO | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """The `explain` command: 0 routed, 1 rejected, 2 config, input or usage problem."""
    err = err if err is not None else sys.stderr
    try:
        header_values = parse_assignments(headers, "header")
        property_values = parse_properties(properties)
    except UsageError as exc:
        print(f"routerd explain: {exc}", file=err)
        return BROKEN
    try:
        table = load(config)
    except ConfigError as exc:
        report_config_error(exc, fmt, out, err)
        return BROKEN
    try:
        body = _read_message(message, stdin)
    except OSError as exc:
        print(f"routerd explain: cannot read {message}: {exc.strerror or exc}", file=err)
        return BROKEN
    envelope = Envelope(body, header_values, property_values)
    decision = decide(table, envelope, explain=True)
    log.debug("explained %s: rejected=%s", message, decision.rejected)
    explanation = explain_decision(
        table, envelope, decision, source="stdin" if message == "-" else message
    )
    if fmt == "json":
        out.write(json.dumps(explanation, indent=2, default=str) + "\n")
    else:
        out.write(render_text(explanation, color=use_color(out)))
    return REJECTED if decision.rejected else ROUTED


def report_config_error(exc: ConfigError, fmt: str, out: TextIO, err: TextIO) -> None:
    """Config problems in lint's format: lines on stderr, or a JSON object on stdout."""
    if fmt == "json":
        problems = [p.as_dict() for p in exc.problems]
        out.write(json.dumps({"problems": problems}, indent=2) + "\n")
    else:
        for problem in exc.problems:
            print(problem, file=err)


def use_color(out: TextIO) -> bool:
    # Color codes only for a person at a terminal; never into files, pipes or CI logs.
    return "NO_COLOR" not in os.environ and hasattr(out, "isatty") and out.isatty()


def _read_message(message: str, stdin: BinaryIO | None) -> bytes:
    if message == "-":
        return (stdin or sys.stdin.buffer).read()
    return Path(message).read_bytes()


def explain_decision(
    table: RouteTable, envelope: Envelope, decision: Decision, *, source: str
) -> dict[str, Any]:
    """The explanation as plain data: the JSON output, and what the text output renders."""
    stage = None
    if decision.rejected:
        stage = STAGE_OF.get(decision.reasons[0].code, "pipeline")
    schema = table.schemas.get(decision.schema_version or "")
    errors = [_reason(r) for r in decision.reasons if r.code in _STAGES["validate"]]
    return {
        "format": FORMAT_VERSION,
        "config": {"path": str(table.path), "hash": table.content_hash},
        "request": {
            "source": source,
            "size": len(envelope.body),
            "headers": dict(envelope.headers),
            "properties": dict(envelope.properties),
        },
        "stopped_at": stage,
        "schema": None
        if schema is None
        else {
            "name": schema.name,
            "version": schema.version,
            "file": _shown_path(schema.file),
            "version_from": _version_from(table, envelope),
        },
        "validation": None if schema is None else {"valid": stage != "validate", "errors": errors},
        "rules": _rules(table, decision.trace),
        "decision": decision_summary(table, envelope, decision),
    }


def decision_summary(table: RouteTable, envelope: Envelope, decision: Decision) -> dict[str, Any]:
    """What a decision amounts to for a person: where it goes, as what, and with what."""
    target = decision.target
    return {
        "rejected": decision.rejected,
        "target": target.name,
        "exchange": target.exchange,
        "exchange_type": target.exchange_type,
        "routing_key": decision.routing_key,
        "partition": None if decision.rejected else _partition(decision, envelope),
        "category": decision.category,
        "rule": decision.rule,
        "schema_version": decision.schema_version,
        "priority": decision.properties.get("priority"),
        "headers": dict(decision.headers),
        "properties": dict(decision.properties),
        "reasons": [_reason(r) for r in decision.reasons],
    }


def _reason(reason: Reason) -> dict[str, Any]:
    return {
        "code": reason.code,
        "message": reason.message,
        "pointer": reason.pointer,
        "keyword": reason.keyword,
    }


def _version_from(table: RouteTable, envelope: Envelope) -> str:
    # Mirrors the pipeline's order: the header wins when present, then the body field.
    source = table.schema_version
    if source.header is not None and source.header in envelope.headers:
        return f"header {source.header}"
    return "field " + ".".join(map(str, source.field or ()))


def _partition(decision: Decision, envelope: Envelope) -> dict[str, Any] | None:
    partitioning = decision.target.partition
    if partitioning is None:
        return None
    try:
        value = resolve(orjson.loads(envelope.body), partitioning.by)
    except orjson.JSONDecodeError:
        return None
    if value is MISSING or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return {
        "by": ".".join(map(str, partitioning.by)),
        "value": value,
        "number": partition_of(str(value), partitioning.count),
        "count": partitioning.count,
    }


def _rules(table: RouteTable, trace: tuple[RuleTrace, ...]) -> list[dict[str, Any]]:
    """Every rule in order: matched, no match, or not tried (after the match, or when the
    request was rejected before categorizing)."""
    rules = []
    for i, rule in enumerate(table.rules):
        entry: dict[str, Any] = {
            "rule": rule.name,
            "at": str(rule.location),
            "category": rule.category,
            "target": rule.target.name,
            "result": "not tried",
            "condition": None,
        }
        if i < len(trace) and trace[i].rule == rule.name:
            entry["result"] = "matched" if trace[i].matched else "no match"
            entry["condition"] = condition_tree(trace[i])
        rules.append(entry)
    return rules


def condition_tree(trace: RuleTrace) -> dict[str, Any]:
    """The rule's condition as evaluated: each node's answer and, for each test, the value
    it saw. A trace written by hand, without its tree, shows its answers as a flat list."""
    if trace.tree is None:
        return {
            "condition": "all",
            "held": trace.matched,
            "kind": ConditionKind.ALL.value,
            "children": [{"condition": d, "held": held} for d, held in trace.conditions],
        }
    return trace_node(trace.tree)


def trace_node(node: TraceNode) -> dict[str, Any]:
    """One evaluated node as plain data: `condition` (its description) and `held` as they
    always were, then `kind`, `seen` (subject, present, value) for a test, `children`."""
    data: dict[str, Any] = {
        "condition": node.description,
        "held": node.matched,
        "kind": node.kind.value,
    }
    if node.seen is not None:
        present = node.seen.present
        data["seen"] = {
            "subject": node.seen.subject,
            "present": present,
            "value": node.seen.value if present else None,
        }
    if node.children:
        data["children"] = [trace_node(child) for child in node.children]
    return data


def _shown_path(path: Path) -> str:
    """Relative to the working directory when below it: shorter, and what ops typed."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
