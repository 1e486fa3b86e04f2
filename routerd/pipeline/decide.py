"""`decide(route_table, envelope) -> Decision`: the pure pipeline that serve, explain and test call.

decode → pick the schema by version → validate → categorize (first matching rule) → render the
routing key and headers. No I/O, no clock, no globals; nothing a request contains can make it
raise.
"""

from __future__ import annotations

from typing import Any

from routerd.config.model import MatchContext, RouteTable, Rule, Target
from routerd.pipeline.categorize import categorize
from routerd.pipeline.decode import DecodeError, decode
from routerd.pipeline.envelope import Decision, Envelope, Reason, ReasonCode, RuleTrace
from routerd.pipeline.render import RenderError, render_routing_key
from routerd.pipeline.validate import schema_version, validate

CATEGORY_HEADER = "x-category"
RULE_HEADER = "x-rule"
VERSION_HEADER = "x-schema-version"
REASON_HEADER = "x-rejected-reason"
REASONS_HEADER = "x-rejected-reasons"
UNMATCHED_CATEGORY = "unmatched"

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
    """A decision for the rejected target; the body travels unchanged so nothing is lost."""
    headers = {
        **envelope.headers,
        REASON_HEADER: reasons[0].code,
        REASONS_HEADER: [r.as_dict() for r in reasons],
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
    if explain:
        # Explain shows every rule tried in order, so it takes the plain path.
        rule, trace = categorize(table.rules, ctx, explain=True)
    else:
        rule, trace = table.rule_index.first_match(ctx), ()
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
        **envelope.headers,
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


def _static_key(target: Target) -> str:
    return "".join(p for p in target.routing_key.parts if isinstance(p, str))
