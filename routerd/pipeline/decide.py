"""`decide(route_table, envelope) -> Decision`: the pure pipeline that serve, explain and test call.

decode → pick the schema by version → validate → categorize (first matching rule) → render the
routing key and headers. No I/O, no clock, no globals; nothing a request contains can make it
raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routerd.config.model import MatchContext, RouteTable, Rule, Target
from routerd.pipeline.categorize import categorize
from routerd.pipeline.decode import MAX_HEADER_BYTES, DecodeError, decode, header_bytes
from routerd.pipeline.envelope import Decision, Envelope, Reason, ReasonCode, RuleTrace
from routerd.pipeline.render import RenderError, render_routing_key
from routerd.pipeline.validate import schema_version, validate

CATEGORY_HEADER = "x-category"
RULE_HEADER = "x-rule"
VERSION_HEADER = "x-schema-version"
REASON_HEADER = "x-rejected-reason"
REASONS_HEADER = "x-rejected-reasons"
UNMATCHED_CATEGORY = "unmatched"

# Bytes of x-rejected-reasons: with the request's headers (MAX_HEADER_BYTES) it must fit in
# one frame of the broker's (128 KiB); max_reasons alone does not bound it.
MAX_REASONS_BYTES = 32 * 1024

_REJECTION_HEADERS = frozenset({REASON_HEADER, REASONS_HEADER})

# Properties the publisher owns; the rest travel on unchanged.
_OWN_PROPERTIES = ("headers", "delivery_mode")


def decide(table: RouteTable, envelope: Envelope, *, explain: bool = False) -> Decision:
    try:
        return _decide(table, envelope, explain)
    except Exception as exc:
        # A bug in routerd must reject one request with a reason, never stop routing.
        return reject(
            table,
            envelope,
            (
                Reason(
                    ReasonCode.INTERNAL_ERROR,
                    f"routerd failed on this request: {type(exc).__name__}: {exc}",
                ),
            ),
        )


def reject(
    table: RouteTable,
    envelope: Envelope,
    reasons: tuple[Reason, ...],
    *,
    schema_version: str | None = None,
    trace: tuple[RuleTrace, ...] = (),
) -> Decision:
    """A decision for the rejected target; the body travels unchanged so nothing is lost.

    Headers too large to travel (refused by decode) are cut to what fits, in their order.
    """
    headers = {
        **_fitting(envelope.headers),
        REASON_HEADER: reasons[0].code,
        REASONS_HEADER: _listed(reasons),
    }
    target = table.rejected
    return Decision(
        target=target,
        routing_key=_static_key(target),
        body=envelope.body,
        headers=headers,
        properties=_properties(envelope, None),
        category=None,
        rule=None,
        schema_version=schema_version,
        reasons=reasons,
        trace=trace,
    )


def _decide(table: RouteTable, envelope: Envelope, explain: bool) -> Decision:
    try:
        body = decode(envelope, table.limits)
    except DecodeError as exc:
        return reject(table, envelope, (exc.reason,))
    version = schema_version(table, envelope, body)
    if isinstance(version, Reason):
        return reject(table, envelope, (version,))
    errors = validate(table.schemas[version], body, table.limits.max_reasons)
    if errors:
        return reject(table, envelope, errors, schema_version=version)

    ctx = MatchContext(body, envelope.headers, envelope.properties, version)
    rule, trace = categorize(table.rules, ctx, explain)
    if rule is not None:
        routed = _route(rule.target, rule, envelope, body, version, trace)
    elif table.unmatched is not None and table.unmatched is not table.rejected:
        routed = _route(table.unmatched, None, envelope, body, version, trace)
    else:
        routed = Reason(ReasonCode.UNMATCHED, "no rule matched this request")
    if isinstance(routed, Reason):
        return reject(table, envelope, (routed,), schema_version=version, trace=trace)
    return routed


def _route(
    target: Target,
    rule: Rule | None,
    envelope: Envelope,
    body: dict[str, Any],
    version: str,
    trace: tuple[RuleTrace, ...],
) -> Decision | Reason:
    category = rule.category if rule else UNMATCHED_CATEGORY
    rule_name = rule.name if rule else ""
    try:
        routing_key = render_routing_key(target, body, category, rule_name, version)
    except RenderError as exc:
        return Reason(ReasonCode.ROUTING_KEY_UNRENDERABLE, str(exc))
    headers = {
        # routerd's own headers say what routerd decided: a publisher's copies of them
        # (a spoofed reason, a request replayed from rejected) do not travel on.
        **{k: v for k, v in envelope.headers.items() if k not in _REJECTION_HEADERS},
        CATEGORY_HEADER: category,
        RULE_HEADER: rule_name,
        VERSION_HEADER: version,
    }
    if rule is not None and rule.headers:
        headers.update(rule.headers)
    return Decision(
        target=target,
        routing_key=routing_key,
        body=envelope.body,
        headers=headers,
        properties=_properties(envelope, rule.priority if rule else None),
        category=category,
        rule=rule_name or None,
        schema_version=version,
        trace=trace,
    )


def _properties(envelope: Envelope, priority: int | None) -> dict[str, Any]:
    properties = dict(envelope.properties)
    for name in _OWN_PROPERTIES:
        properties.pop(name, None)
    if priority is not None:
        properties["priority"] = priority
    return properties


def _fitting(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers, or when too large to travel, as many of them as fit: the smallest
    first (the largest is what made them too large), in their order."""
    if header_bytes(headers) <= MAX_HEADER_BYTES:
        return dict(headers)
    sizes = sorted((header_bytes({key: value}), key) for key, value in headers.items())
    kept: set[str] = set()
    total = 0
    for size, key in sizes:
        if total + size > MAX_HEADER_BYTES:
            break
        kept.add(key)
        total += size
    return {key: value for key, value in headers.items() if key in kept}


def _listed(reasons: tuple[Reason, ...]) -> list[dict[str, str]]:
    listed: list[dict[str, str]] = []
    total = 0
    for reason in reasons:
        item = reason.as_dict()
        total += header_bytes(item)
        if total > MAX_REASONS_BYTES:
            rest = Reason(
                ReasonCode.TOO_MANY_ERRORS,
                f"{len(reasons) - len(listed)} more reasons not listed",
            )
            listed.append(rest.as_dict())
            break
        listed.append(item)
    return listed


def _static_key(target: Target) -> str:
    return "".join(p for p in target.routing_key.parts if isinstance(p, str))
