"""Checks about values: conditions comparing with values a request can never hold, and YAML
scalars that other tools read as other values.

A rule testing `stream: broadcst` where the schema says `enum: [transactional, broadcast]`
never holds, and nothing at run time says so: the request just goes elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from routerd.config.coverage import Coverage, LeafAt, Reach, leaves
from routerd.config.fields import same
from routerd.config.hints import did_you_mean
from routerd.config.model import Problem
from routerd.config.nodes import Leaf
from routerd.config.schemas import SchemaSet
from routerd.config.source import Document
from routerd.config.subjects import FieldSubject

if TYPE_CHECKING:
    from routerd.config.checks import Context


# Operators whose argument is a value (or values) the field itself must equal.
_EQUALITY = ("equals", "in")


def impossible_values(ctx: Context, coverage: Coverage) -> Iterator[Problem]:
    """`equals`/`in` values that the schema's `enum`/`const` forbid in every version a rule
    can see: that comparison never holds."""
    for reach in coverage.reaches:
        if not reach.reachable or reach.raw_when is None or not reach.offered:
            continue
        oracles = [o for v in reach.offered if (o := ctx.oracles.get(v)) is not None]
        if len(oracles) < len(reach.offered):
            continue  # a version whose schema did not load could allow anything
        for leaf in leaves(reach.rule.when, ("rules", reach.index, "when")):
            node = leaf.condition
            if not isinstance(node, Leaf) or not isinstance(node.subject, FieldSubject):
                continue
            allowed_by: list[list[Any]] = []
            for oracle in oracles:
                only = oracle.allowed_values(node.subject.path)
                if only is None:
                    break  # this version lets the field hold other values: no claim
                allowed_by.append(only)
            else:
                yield from _never_equal(ctx, reach, leaf, node, node.subject, allowed_by)


def _never_equal(
    ctx: Context,
    reach: Reach,
    leaf: LeafAt,
    node: Leaf,
    subject: FieldSubject,
    allowed_by: list[list[Any]],
) -> Iterator[Problem]:
    allowed: list[Any] = []
    for value in (v for values in allowed_by for v in values):
        if not any(same(value, a) for a in allowed):
            allowed.append(value)
    for check in node.checks:
        name = check.operator.name
        if name not in _EQUALITY:
            continue
        values = check.argument if name == "in" else [check.argument]
        for i, value in enumerate(values):
            if any(same(value, a) for a in allowed):
                continue
            where = (*leaf.path, name, *((i,) if name == "in" else ()))
            hint = did_you_mean(str(value), [str(a) for a in allowed])
            names = ", ".join(ctx.schema_name(v) for v in reach.offered)
            yield Problem(
                ctx.doc.locate(where),
                "warning",
                f"rule {reach.rule.name!r}: field {subject.written} is never "
                f"{json.dumps(value)} in {names} (the schema allows "
                f"{', '.join(json.dumps(a) for a in allowed)}), so this comparison "
                f"never holds{hint}",
                "condition-value-impossible",
            )


def yaml_ambiguous(doc: Document, schemas: SchemaSet) -> Iterator[Problem]:
    """Plain YAML scalars that YAML 1.1 tools (PyYAML, many editors' linters) read
    differently from routerd, which reads them as JSON and YAML 1.2 do."""
    for document in (doc, *schemas.documents.values()):
        for path, (text, value, old) in document.ambiguous.items():
            yield Problem(
                document.locate(path),
                "warning",
                f"{text} is read as {_shown(value)} (as JSON and YAML 1.2 read it), but YAML "
                f"1.1 tools read {_shown(old)}: quote it, or write it so both agree",
                "yaml-ambiguous",
            )


def _shown(data: Any) -> str:
    if isinstance(data, str):
        return f"the text {json.dumps(data)}"
    if isinstance(data, bool) or data is None:
        return json.dumps(data)
    if isinstance(data, int | float):
        return f"the number {data!r}"
    return f"a {type(data).__name__} ({data})"
