"""`routerd explain`: where one send request would go, and why.

It runs the very `decide(table, envelope, explain=True)` the daemon runs and turns the
decision into an explanation: the schema chosen, each validation error, each rule tried with
each condition's answer and the value each test saw, and the resulting target, routing key
and headers (or the reasons the request is rejected). One explanation object feeds both the
text and the JSON output, so the two never disagree. `routerd test` reuses the envelope and
decision helpers here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson

from routerd.config.bindings import receiving_queues
from routerd.config.loader import load
from routerd.config.model import Condition, ConditionKind, ConfigError, RouteTable, TraceNode
from routerd.config.paths import MISSING, resolve
from routerd.ops.common import (
    Command,
    ExitCode,
    OutputFormat,
    display,
    location_json,
    report_broken,
    write_json,
)
from routerd.ops.common import envelope as contract_envelope
from routerd.ops.explain_text import render_text
from routerd.ops.request import UsageError, parse_assignments, parse_properties, read_body
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Decision, Envelope, Reason, ReasonCode, RuleTrace, Stage
from routerd.pipeline.render import partition_of
from routerd.pipeline.sources import source_queue

log = logging.getLogger(__name__)


def run_explain(
    config: Path,
    message: str,
    headers: Sequence[str],
    fmt: OutputFormat,
    out: TextIO,
    *,
    properties: Sequence[str] = (),
    err: TextIO | None = None,
    stdin: BinaryIO | None = None,
) -> ExitCode:
    """The `explain` command: 0 routed, 1 rejected, 2 config, input or usage problem."""
    err = err if err is not None else sys.stderr
    try:
        header_values = parse_assignments(headers, "header")
        property_values = parse_properties(properties)
    except UsageError as exc:
        print(f"routerd explain: {exc}", file=err)
        return ExitCode.BROKEN
    try:
        table = load(config)
    except ConfigError as exc:
        return report_broken(Command.EXPLAIN, exc.problems, fmt, out, display(config))
    try:
        body = read_body(message, stdin)
    except OSError as exc:
        print(f"routerd explain: cannot read {message}: {exc.strerror or exc}", file=err)
        return ExitCode.BROKEN
    envelope = Envelope(body, header_values, property_values)
    decision = decide(table, envelope, explain=True)
    log.debug("explained %s: rejected=%s", message, decision.rejected)
    exit_code = ExitCode.FAILED if decision.rejected else ExitCode.OK
    explanation = explain_decision(
        table, envelope, decision, source="stdin" if message == "-" else message
    )
    if fmt is OutputFormat.JSON:
        write_json(out, contract_envelope(Command.EXPLAIN, exit_code, (), **explanation))
    else:
        out.write(render_text(explanation, color=use_color(out)))
    return exit_code


def use_color(out: TextIO) -> bool:
    # Color codes only for a person at a terminal; never into files, pipes or CI logs.
    return "NO_COLOR" not in os.environ and hasattr(out, "isatty") and out.isatty()


def explain_decision(
    table: RouteTable, envelope: Envelope, decision: Decision, *, source: str
) -> dict[str, Any]:
    """The explanation as plain data: the JSON output, and what the text output renders."""
    stage = decision.reasons[0].code.stage.value if decision.rejected else None
    schema = table.schemas.get(decision.schema_version or "")
    errors = [_reason(r) for r in decision.reasons if r.code in _VALIDATION]
    return {
        "config": {"file": display(table.path), "hash": table.content_hash},
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
            "file": display(schema.file),
            "version_from": _version_from(table, envelope),
        },
        "validation": None if schema is None else {"valid": not errors, "errors": errors},
        "rules": _rules(table, decision.trace),
        "decision": decision_summary(table, envelope, decision),
    }


def decision_summary(table: RouteTable, envelope: Envelope, decision: Decision) -> dict[str, Any]:
    """What a decision amounts to for a person: where it goes, as what, and with what."""
    target = decision.target
    return {
        # The source queue routerd.client (send, the API) publishes it to.
        "source": source_queue(table, envelope, decision),
        "rejected": decision.rejected,
        "target": target.name,
        "exchange": target.exchange,
        "exchange_type": target.exchange_type,
        "routing_key": decision.routing_key,
        "queues": receiving_queues(target, decision.routing_key),
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


_VALIDATION = frozenset(code for code in ReasonCode if code.stage is Stage.VALIDATE) - {
    ReasonCode.MISSING_SCHEMA_VERSION,
    ReasonCode.UNKNOWN_SCHEMA_VERSION,
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
    """Every rule in order: matched, no_match, or not_tried (after the match, or when the
    request was rejected before categorizing)."""
    rules = []
    for i, rule in enumerate(table.rules):
        entry: dict[str, Any] = {
            "rule": rule.name,
            **location_json(rule.location),
            "category": rule.category,
            "target": rule.target.name,
            "result": "not_tried",
            "condition": None,
        }
        if i < len(trace) and trace[i].rule == rule.name:
            entry["result"] = "matched" if trace[i].matched else "no_match"
            entry["condition"] = condition_tree(trace[i], rule.when)
        rules.append(entry)
    return rules


def condition_tree(trace: RuleTrace, condition: Condition | None = None) -> dict[str, Any]:
    """The rule's condition as evaluated: each node's answer and, for each test, the value
    it saw. A trace written by hand, without its tree, shows its answers as a flat list."""
    if trace.tree is None:
        return {
            "kind": ConditionKind.ALL.value,
            "text": "all",
            "matched": trace.matched,
            "children": [
                {"kind": ConditionKind.LEAF.value, "text": d, "matched": held}
                for d, held in trace.conditions
            ],
        }
    return trace_node(trace.tree, condition)


def trace_node(node: TraceNode, condition: Condition | None = None) -> dict[str, Any]:
    """One evaluated node as plain data: its `kind`, its `text` as explain prints it,
    whether it `matched`, where it is written and, for a test, the condition as written
    (`when`) and what it `saw` (subject, present, value); then its `children`."""
    data: dict[str, Any] = {"kind": node.kind.value, "text": node.description}
    data["matched"] = node.matched
    if condition is not None:
        data.update(location_json(condition.location))
        if not node.children and condition.source:
            data["when"] = dict(condition.source)
    if node.seen is not None:
        present = node.seen.present
        data["seen"] = {
            "subject": node.seen.subject,
            "present": present,
            "value": node.seen.value if present else None,
        }
    if node.children:
        branches = [child for _, child in condition.branches()] if condition else []
        data["children"] = [
            trace_node(child, branches[i] if i < len(branches) else None)
            for i, child in enumerate(node.children)
        ]
    return data
