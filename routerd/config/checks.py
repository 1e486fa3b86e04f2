"""The static checks `routerd lint` runs on top of the loader, on a config that loaded.

Each check returns problems located in the config or in a schema file. They look for what
loads fine yet routes wrongly: rules that never match, routing keys that cannot be rendered,
examples a schema rejects, targets and schema files nothing uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routerd.config.bindings import unreachable_queues
from routerd.config.coverage import Analysis, Coverage, analyse, guarantees, leaves
from routerd.config.fields import FieldFacts, FieldOracle
from routerd.config.hints import closest
from routerd.config.model import Condition, Location, Problem, RouteTable, Severity, Target
from routerd.config.paths import FieldPath, absolute, parse_path, pointer
from routerd.config.schemas import SchemaSet
from routerd.config.source import Document
from routerd.config.subschemas import iter_subschemas
from routerd.config.validator import ITER_ERRORS_BOUND, compile_validator
from routerd.config.value_checks import impossible_values, yaml_ambiguous

log = logging.getLogger(__name__)

# What render_routing_key accepts for a field: text or a whole number.
_RENDERABLE = frozenset({"string", "integer"})


@dataclass(frozen=True, slots=True)
class Context:
    table: RouteTable
    doc: Document
    schemas: SchemaSet
    versions: tuple[str, ...]  # every declared version, loaded or not, in declared order
    oracles: dict[str, FieldOracle | None]

    @classmethod
    def of(cls, table: RouteTable, doc: Document, schemas: SchemaSet) -> Context:
        versions = tuple(dict.fromkeys(str(e["version"]) for e in table.raw["schemas"]))
        oracles: dict[str, FieldOracle | None] = {
            v: FieldOracle(schemas, s.file.as_uri()) if (s := table.schemas.get(v)) else None
            for v in versions
        }
        return cls(table, doc, schemas, versions, oracles)

    def schema_name(self, version: str) -> str:
        schema = self.table.schemas.get(version)
        return f"{schema.name} v{version}" if schema else f"version {version}"


def run_checks(table: RouteTable, doc: Document, schemas: SchemaSet) -> list[Problem]:
    ctx = Context.of(table, doc, schemas)
    problems: list[Problem] = []
    checks: list[tuple[str, Callable[[], Iterable[Problem]]]] = [
        ("unknown_versions", lambda: unknown_versions(ctx)),
        ("binding_keys", lambda: binding_keys(ctx)),
        ("unbound_routing_keys", lambda: unbound_routing_keys(ctx)),
        ("unused_targets", lambda: unused_targets(ctx)),
        ("accepts_fields", lambda: accepts_fields(ctx)),
        ("unused_schema_files", lambda: unused_schema_files(ctx)),
        ("examples", lambda: examples(ctx)),
        ("yaml_ambiguous", lambda: yaml_ambiguous(doc, schemas)),
    ]
    try:
        analysis = Analysis(ctx.versions, ctx.oracles)
        coverage = analyse(table.rules, table.raw["rules"], doc, analysis)
    except Exception as exc:
        problems.append(_internal("coverage", doc, exc))
    else:
        problems.extend(coverage.problems)
        checks += [
            ("unreachable_sources", lambda: unreachable_sources(ctx, analysis)),
            ("condition_fields", lambda: condition_fields(ctx, coverage)),
            ("unrouted_versions", lambda: unrouted_versions(ctx, coverage)),
            ("routing_key_fields", lambda: routing_key_fields(ctx, coverage)),
            ("impossible_values", lambda: impossible_values(ctx, coverage)),
        ]
    for name, check in checks:
        # One check's bug must not hide what the others find.
        try:
            problems.extend(check())
        except Exception as exc:
            problems.append(_internal(name, doc, exc))
    return problems


def _internal(name: str, doc: Document, exc: Exception) -> Problem:
    log.exception("lint check %s failed", name)
    return Problem(
        doc.locate(()),
        "error",
        f"the {name} check failed ({type(exc).__name__}: {exc}); this is a bug in routerd, "
        f"please report it with the config",
        "internal-error",
    )


def unknown_versions(ctx: Context) -> Iterator[Problem]:
    """`schema_version: 3` when no schema has version 3: such a request is rejected before
    any rule runs, so that test can never hold."""
    known = ", ".join(ctx.versions)
    for when, _, base in _rule_conditions(ctx):
        for leaf in leaves(when, base):
            value = leaf.raw.get("schema_version")
            if value is None:
                continue
            listed = value if isinstance(value, list) else [value]
            for i, item in enumerate(listed):
                if str(item) not in ctx.versions:
                    index = (i,) if isinstance(value, list) else ()
                    where = (*leaf.path, "schema_version", *index)
                    yield Problem(
                        ctx.doc.locate(where),
                        "error",
                        f"schema_version {item} names no configured schema (versions: {known}); "
                        f"requests of an unknown version are rejected before rules run",
                        "schema-version-unknown",
                    )


def unreachable_sources(ctx: Context, analysis: Analysis) -> Iterator[Problem]:
    """A source no request can reach: its `accepts` never holds for any schema version, or
    an earlier source accepts every request. Publishers would never use its queue, and its
    consumers would wait forever."""
    taken_by: str | None = None
    for i, source in enumerate(ctx.table.sources):
        location = ctx.doc.locate(("sources", i))
        if taken_by is not None:
            yield Problem(
                location,
                "error",
                f"source {source.queue!r} gets no request: source {taken_by!r} before it "
                f"accepts every request; move it up or remove it",
                "source-unreachable",
            )
            continue
        if source.accepts is None:
            continue
        verdicts = list(analysis.verdicts(source.accepts).values())
        if verdicts and all(v is False for v in verdicts):
            reasons = "; ".join(
                f"for schema version {v}, {analysis.why_false(source.accepts, v)}"
                for v in ctx.versions
            )
            yield Problem(
                location,
                "error",
                f"source {source.queue!r} gets no request, its `accepts` never holds: {reasons}",
                "source-unreachable",
            )
        elif verdicts and all(v is True for v in verdicts):
            taken_by = source.queue


def condition_fields(ctx: Context, coverage: Coverage) -> Iterator[Problem]:
    """A condition on a field none of the schemas the rule can see declares: a typo, or a
    field of another version."""
    for reach in coverage.reaches:
        if not reach.reachable or reach.raw_when is None:
            continue
        base = ("rules", reach.index, "when")
        yield from _unknown_fields(
            ctx, reach.rule.when, base, reach.offered, f"rule {reach.rule.name!r}"
        )


def accepts_fields(ctx: Context) -> Iterator[Problem]:
    """The same for a source's `accepts`, which sees every version: a misspelt field there
    sends every request it meant to pick out to the sources after it, silently."""
    for i, source in enumerate(ctx.table.sources):
        if source.accepts is not None:
            base = ("sources", i, "accepts")
            yield from _unknown_fields(
                ctx, source.accepts, base, ctx.versions, f"source {source.queue!r}"
            )


def _unknown_fields(
    ctx: Context, when: Condition, base: FieldPath, versions: Iterable[str], owner: str
) -> Iterator[Problem]:
    offered = list(versions)
    # A version whose schema did not load could declare anything: no claim then.
    if not offered or any(ctx.oracles.get(v) is None for v in offered):
        return
    for leaf in leaves(when, base):
        subject = "field" if "field" in leaf.raw else "count" if "count" in leaf.raw else None
        if subject is None:
            continue
        texts = [leaf.raw["field"]] if subject == "field" else list(leaf.raw["count"])
        for i, text in enumerate(texts):
            path = parse_path(text)
            # Most fields are declared by the first version asked: ask no further then.
            if any(_facts(ctx, v, path).presence in ("required", "optional") for v in offered):
                continue
            facts = [_facts(ctx, v, path) for v in offered]
            names = ", ".join(ctx.schema_name(v) for v in offered)
            where = (*leaf.path, subject, *((i,) if subject == "count" else ()))
            never = all(f.presence == "forbidden" for f in facts)
            yield Problem(
                ctx.doc.locate(where),
                "warning",
                f"{owner}: field {text} is not declared by {names}"
                + ("; no valid request has it" if never else "")
                + "; check the spelling and the schema version"
                + _field_suggestion(ctx, offered, text),
                "condition-field-unknown",
            )


def unrouted_versions(ctx: Context, coverage: Coverage) -> Iterator[Problem]:
    """A schema version no rule can match: all its requests go to `unmatched`."""
    if "unmatched" not in ctx.table.raw:
        return
    for i, entry in enumerate(ctx.table.raw["schemas"]):
        version = str(entry["version"])
        if any(version in reach.sees for reach in coverage.reaches):
            continue
        yield Problem(
            ctx.doc.locate(("schemas", i, "version")),
            "warning",
            f"no rule can match a request of schema version {version}: every one goes to "
            f"`unmatched` ({ctx.table.raw['unmatched']}); add rules for it or drop the version",
            "schema-version-unrouted",
        )


def routing_key_fields(ctx: Context, coverage: Coverage) -> Iterator[Problem]:
    """Every field a routing key or a partition uses must be there, as text or a whole number,
    in every request of every version a rule routes to that target."""
    routes: dict[str, dict[str, list[tuple[str, Condition, Any]]]] = {}
    for reach in coverage.reaches:
        for version in reach.sees:
            routes.setdefault(reach.rule.target.name, {}).setdefault(version, []).append(
                (reach.rule.name, reach.rule.when, reach.raw_when)
            )
    unmatched = ctx.table.unmatched
    if unmatched is not None and unmatched is not ctx.table.rejected:
        for version in coverage.fall_through:
            routes.setdefault(unmatched.name, {}).setdefault(version, [])
    for name, by_version in routes.items():
        target = ctx.table.targets[name]
        for field, where, label in _target_fields(target):
            location = ctx.doc.locate(("targets", name, *where))
            yield from _field_problems(ctx, target, field, label, by_version, location)


def _field_problems(
    ctx: Context,
    target: Target,
    field: FieldPath,
    label: str,
    by_version: dict[str, list[tuple[str, Condition, Any]]],
    location: Location,
) -> Iterator[Problem]:
    text = ".".join(map(str, field))
    kinds: dict[str, list[str]] = {}
    for version, routed in by_version.items():
        facts = _facts(ctx, version, field)
        if facts.presence == "forbidden":
            kinds.setdefault("forbidden", []).append(version)
        elif facts.presence == "undeclared":
            kinds.setdefault("undeclared", []).append(version)
        elif facts.types is not None and not facts.types & _RENDERABLE:
            kinds.setdefault("type:" + "/".join(sorted(facts.types)), []).append(version)
        elif facts.presence == "optional" and not (
            routed and all(guarantees(cond, field) for _, cond, _ in routed)
        ):
            kinds.setdefault("optional", []).append(version)
    for kind, versions in kinds.items():
        schemas = " and ".join(ctx.schema_name(v) for v in versions)
        # Name the rules that bring such requests here, not those whose condition already
        # makes sure the field is there.
        rules = sorted(
            {
                rule
                for v in versions
                for rule, cond, _ in by_version[v]
                if kind != "optional" or not guarantees(cond, field)
            }
        )
        if not rules:
            who = "`unmatched` routes"
        else:
            who = f"rule{'s' if len(rules) > 1 else ''} {', '.join(map(repr, rules))} route"
            who += "" if len(rules) > 1 else "s"
        head = f"target {target.name!r}: {label} {text}"
        severity: Severity
        if kind == "optional":
            severity, code = "warning", "routing-key-field-optional"
            message = (
                f"{head} is optional in {schemas}, which {who} here: a request without it is "
                f"rejected (routing_key_unrenderable); make it required in the schema or test "
                f"`exists: true` in the rule"
            )
        elif kind == "forbidden":
            severity, code = "error", "routing-key-field"
            message = (
                f"{head} does not exist in {schemas}, which {who} here: every such request "
                f"would be rejected (routing_key_unrenderable); use a field the schema requires"
                + _field_suggestion(ctx, versions, text)
            )
        elif kind == "undeclared":
            severity, code = "error", "routing-key-field"
            message = (
                f"{head} is not among the properties of {schemas}, which {who} here: nothing "
                f"makes a request carry it as text or a whole number; declare it in the schema "
                f"and make it required" + _field_suggestion(ctx, versions, text)
            )
        else:
            severity, code = "error", "routing-key-field"
            message = (
                f"{head} is {kind.removeprefix('type:')} in {schemas}, which {who} here: a "
                f"routing key needs text or a whole number, so every such request would be "
                f"rejected (routing_key_unrenderable)"
            )
        yield Problem(location, severity, message, code)


def binding_keys(ctx: Context) -> Iterator[Problem]:
    """A queue bound with a templated routing key receives nothing: the binding key is
    literal, the routing key is rendered."""
    for name, target in ctx.table.targets.items():
        templated = any(not isinstance(part, str) for part in target.routing_key.parts)
        # Fanout and headers exchanges ignore binding keys; the default exchange binds none.
        if not templated or not target.exchange or target.exchange_type in ("fanout", "headers"):
            continue
        for i, raw in enumerate(ctx.table.raw["targets"][name].get("queues", [])):
            if "binding_key" in raw:
                continue
            yield Problem(
                ctx.doc.locate_key(("targets", name, "queues", i, "name")),
                "error",
                f"queue {raw['name']!r} of target {name!r} would be bound with the routing key "
                f"template {target.routing_key.source!r} as literal text and receive nothing; "
                f"set its binding_key (for a topic exchange, * matches one word)",
                "binding-key-template",
            )


def unbound_routing_keys(ctx: Context) -> Iterator[Problem]:
    """A routing key no binding of the target's queues can match: every request routed
    there comes back unroutable and is rejected."""
    named = [(("targets", name), target) for name, target in ctx.table.targets.items()]
    for at, target in [*named, (("rejected",), ctx.table.rejected)]:
        name = target.name
        unreachable = unreachable_queues(target)
        if not unreachable:
            continue
        kind = f"{target.exchange_type} exchange {target.exchange!r}"
        hint = (
            "* is exactly one word, # zero or more"
            if target.exchange_type == "topic"
            else ("a direct binding must equal the routing key")
        )
        everyone = len(unreachable) == len(target.queues)
        for i, queue in enumerate(target.queues):
            if queue.name not in unreachable:
                continue
            bound = f"queue {queue.name!r} is bound with {queue.binding_key!r} on the {kind}"
            key = f"target {name!r}: routing key {target.routing_key.source!r}"
            where = ctx.doc.locate((*at, "queues", i, "binding_key"))
            if everyone:
                yield Problem(
                    where,
                    "error",
                    f"{key} can match no binding of its queues ({bound}): every request "
                    f"routed here would come back unroutable and be rejected; change the "
                    f"routing key or the binding_key ({hint})",
                    "routing-key-unbound",
                )
            else:
                yield Problem(
                    where,
                    "warning",
                    f"{key} can never match the binding of one of its queues ({bound}): that "
                    f"queue receives nothing from this target ({hint})",
                    "routing-key-unbound",
                )


def unused_targets(ctx: Context) -> Iterator[Problem]:
    used = {raw["target"] for raw in ctx.table.raw["rules"]}
    used.add(ctx.table.raw.get("unmatched", ""))
    for name in ctx.table.raw["targets"]:
        if name not in used:
            yield Problem(
                ctx.doc.locate_key(("targets", name)),
                "warning",
                f"target {name!r} is not used by any rule nor by `unmatched`; route to it or "
                f"remove it",
                "target-unused",
            )


def unused_schema_files(ctx: Context) -> Iterator[Problem]:
    """A schema file beside the configured ones that nothing configures or refers to."""
    reachable = _reachable(ctx)
    config = absolute(ctx.doc.path)
    for uri, document in ctx.schemas.documents.items():
        if uri in reachable or absolute(Path(document.path)) == config:
            continue
        yield Problem(
            Location(document.path, 1, 1),
            "warning",
            f"schema file {Path(document.path).name} is neither configured under `schemas` "
            f"nor referred to by a configured schema; add it or remove it",
            "schema-unused",
        )


def examples(ctx: Context) -> Iterator[Problem]:
    """`examples` in a schema must validate against the (sub)schema that holds them."""
    loaded: dict[str, None] = {}
    for schema in ctx.table.schemas.values():
        loaded.update(dict.fromkeys(ctx.schemas.reachable(schema.file.as_uri())))
    for uri in loaded:
        document = ctx.schemas.documents[uri]
        for path, node in iter_subschemas(document.data, ()):
            listed = node.get("examples")
            if not isinstance(listed, list) or not listed:
                continue
            failed: list[Problem] = []
            compiled = compile_validator(
                ctx.schemas, uri, document.locate((*path, "examples")), failed, pointer(path)
            )
            yield from failed
            if compiled is None:
                continue
            _, errors = compiled
            where = Path(document.path).name + (f"#{pointer(path)}" if path else "")
            for i, example in enumerate(listed):
                # Every error of an example (it is the author's own, not a hostile body).
                for error in errors(example, ITER_ERRORS_BOUND)[0]:
                    yield Problem(
                        document.locate((*path, "examples", i, *_parts(error.pointer, example))),
                        "error",
                        f"example {i + 1} of {where} does not validate at "
                        f"{error.pointer or '/'}: {error.message}; fix the example or the schema",
                        "schema-example-invalid",
                    )


def _rule_conditions(ctx: Context) -> Iterator[tuple[Condition, Any, FieldPath]]:
    index_of = {ctx.doc.locate(("rules", i)): i for i in range(len(ctx.table.raw["rules"]))}
    for rule in ctx.table.rules:
        i = index_of[rule.location]
        raw_when = ctx.table.raw["rules"][i].get("when")
        if raw_when is not None:
            yield rule.when, raw_when, ("rules", i, "when")


def _reachable(ctx: Context) -> dict[str, None]:
    # Configured files count as used even when broken: the loader reported those.
    found: dict[str, None] = {}
    for entry in ctx.table.raw["schemas"]:
        uri = absolute(ctx.doc.path.parent / entry["file"]).as_uri()
        found.update(dict.fromkeys(ctx.schemas.reachable(uri)))
    return found


def _target_fields(
    target: Target,
) -> Iterator[tuple[FieldPath, tuple[str, ...], str]]:
    for part in target.routing_key.parts:
        if isinstance(part, tuple) and not str(part[0]).startswith("$"):
            yield part, ("routing_key",), "field"
    if target.partition is not None and ("$partition",) in target.routing_key.parts:
        yield target.partition.by, ("partition", "by"), "partition field"


def _field_suggestion(ctx: Context, versions: Iterable[str], text: str) -> str:
    """The "; did you mean 'region'?" for a field path the schemas nearly declare."""
    *parent, last = parse_path(text)
    declared = {
        name
        for version in versions
        if (oracle := ctx.oracles.get(version)) is not None
        for name in oracle.names(tuple(parent))
    }
    meant = closest(str(last), sorted(declared))
    if meant is None:
        return ""
    return f"; did you mean {'.'.join([*map(str, parent), meant])!r}?"


def _facts(ctx: Context, version: str, path: FieldPath) -> FieldFacts:
    oracle = ctx.oracles.get(version)
    return oracle.facts(path) if oracle is not None else FieldFacts("required")


def _parts(json_pointer: str, data: Any) -> FieldPath:
    """A JSON pointer back to a path, with list indexes as ints so it can be located."""
    parts: list[str | int] = []
    for raw in json_pointer.split("/")[1:]:
        text = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(data, list) and text.isdigit() and int(text) < len(data):
            parts.append(int(text))
            data = data[int(text)]
        else:
            parts.append(text)
            data = data.get(text) if isinstance(data, dict) else None
    return tuple(parts)
