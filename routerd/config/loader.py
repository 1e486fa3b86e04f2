"""`load(path) -> RouteTable`: the one loader behind lint, test, explain, startup and reload.

Steps, each of which collects every problem it finds before giving up, so one run of
`routerd lint` shows them all: parse YAML with positions → check the config against its own
JSON Schema → load, check and compile the request schemas → compile targets and rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routerd.config.checks import run_checks
from routerd.config.conditions import always, compile_condition
from routerd.config.hints import did_you_mean
from routerd.config.model import (
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    Condition,
    ConfigError,
    Limits,
    Location,
    Partitioning,
    Problem,
    QueueSpec,
    RouteTable,
    RoutingKeyTemplate,
    Rule,
    Schema,
    SchemaVersionSource,
    Source,
    Target,
)
from routerd.config.paths import FieldPath, absolute, parse_path
from routerd.config.schemas import SchemaSet, load_schema_set
from routerd.config.shape import check_shape, config_schema
from routerd.config.source import Document, read_document
from routerd.config.validator import compile_schema

log = logging.getLogger(__name__)

RESERVED_KEY_FIELDS = ("partition", "category", "rule", "schema_version")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")

__all__ = ["Build", "build", "config_schema", "load"]


@dataclass(frozen=True, slots=True)
class Build:
    """What one pass over a config found. `table` is there whenever the config had the right
    shape, even if parts of it are broken (those parts are left out), so `lint` can go on to
    its own checks and report everything in one run; `load` accepts it only without problems."""

    problems: tuple[Problem, ...]
    table: RouteTable | None = None
    document: Document | None = None
    schemas: SchemaSet | None = None


def load(path: Path) -> RouteTable:
    """Build the route table from `path`, refusing it for every error `routerd lint` would
    report (raises ConfigError listing them all); its warnings travel on the table.

    `serve` at start and on reload, `explain`, `test` and the client all load through here,
    so a config that lint rejects never goes live anywhere."""
    result = build(path)
    errors = tuple(p for p in result.problems if p.severity == "error")
    if errors or result.table is None:
        raise ConfigError(errors or result.problems)
    warnings = tuple(p for p in result.problems if p.severity == "warning")
    return dataclasses.replace(result.table, warnings=warnings)


def build(path: Path) -> Build:
    """Parse, check and compile the config at `path`, then run every lint check on what
    compiled, collecting every problem (errors and warnings)."""
    result = _parse_and_compile(path)
    if result.table is None or result.document is None or result.schemas is None:
        return result
    checked = run_checks(result.table, result.document, result.schemas)
    return dataclasses.replace(result, problems=(*result.problems, *checked))


def _parse_and_compile(path: Path) -> Build:
    path = Path(path)
    try:
        doc = read_document(path)
    except ConfigError as exc:
        return Build(exc.problems)
    if not isinstance(doc.data, dict):
        message = (
            "the config must be a YAML mapping with version, source, schemas, targets, "
            "rejected and rules"
        )
        return Build((Problem(doc.locate(()), "error", message, "config-schema"),), document=doc)
    problems = check_shape(doc) or _one_source_form(doc)
    if problems:
        # The rest of the loader relies on the shape; a wrong one would only add noise.
        return Build(tuple(problems), document=doc)
    try:
        table, schemas = _build(doc, problems)
    except Exception as exc:
        # A bug here must not take down a daemon reloading a config: it keeps its table.
        log.exception("loading %s failed", path)
        message = (
            f"routerd failed on this config ({type(exc).__name__}: {exc}); this is a bug in "
            f"routerd, please report it with the config"
        )
        return Build((*problems, Problem(doc.locate(()), "error", message, "internal-error")))
    return Build(tuple(problems), table, doc, schemas)


def _build(doc: Document, problems: list[Problem]) -> tuple[RouteTable, SchemaSet]:
    data: dict[str, Any] = doc.data
    base = doc.path.parent
    sources = _sources(data, doc, problems)
    raw_limits = data.get("limits", {})
    limits = Limits(
        max_body_bytes=raw_limits.get("max_body_bytes", 1024 * 1024),
        max_depth=raw_limits.get("max_depth", 32),
        max_reasons=raw_limits.get("max_reasons", 50),
    )
    raw_version = data.get("schema_version", {"field": "schema_version"})
    version_source = SchemaVersionSource(
        header=raw_version.get("header"),
        field=parse_path(raw_version["field"]) if "field" in raw_version else None,
    )

    schema_files = [absolute(base / entry["file"]) for entry in data["schemas"]]
    schema_set = load_schema_set(schema_files, problems)
    schemas: dict[str, Schema] = {}
    sound: dict[str, bool] = {}
    for i, entry in enumerate(data["schemas"]):
        location = doc.locate(("schemas", i, "file"))
        file, version = schema_files[i], str(entry["version"])
        if version in schemas:
            problems.append(
                Problem(
                    doc.locate(("schemas", i, "version")),
                    "error",
                    f"schema version {version} is declared twice "
                    f"(first by {schemas[version].name} at {schemas[version].location}); "
                    f"give each version one schema",
                    "schema-duplicate-version",
                )
            )
            continue
        uri = file.as_uri()
        if uri not in schema_set.documents:
            if not any(p.location.file == file for p in problems):
                problems.append(
                    Problem(
                        location,
                        "error",
                        f"schema file {entry['file']!r} not found (schema files are found "
                        f"relative to the config's folder){_nearby(file)}",
                        "file-not-found",
                    )
                )
            continue
        compiled = compile_schema(schema_set, uri, location, problems, sound)
        if compiled is not None:
            is_valid, errors = compiled
            schemas[version] = Schema(
                entry["name"],
                version,
                file,
                schema_set.documents[uri].data,
                location,
                is_valid,
                errors,
            )

    targets = {
        name: _target(name, raw, ("targets", name), doc, problems)
        for name, raw in data["targets"].items()
    }
    rejected = _target("rejected", data["rejected"], ("rejected",), doc, problems)
    if any(not isinstance(part, str) for part in rejected.routing_key.parts):
        problems.append(
            Problem(
                doc.locate(("rejected", "routing_key")),
                "error",
                "the rejected routing key must be plain text: a rejected request may have no "
                "fields to fill in",
                "routing-key-invalid",
            )
        )
    rules = _rules(data["rules"], targets, doc, problems)
    unmatched = None
    if "unmatched" in data:
        name = data["unmatched"]
        if name == "rejected":
            unmatched = rejected
        elif name in targets:
            unmatched = targets[name]
        else:
            problems.append(_unknown_target(doc.locate(("unmatched",)), name, targets))
    # Judged on the raw rules: a catch-all whose target is misspelt is still a catch-all.
    if not any("when" not in raw for raw in data["rules"]) and "unmatched" not in data:
        problems.append(
            Problem(
                doc.locate_key(("rules",)),
                "error",
                "no rule matches every request: add a last rule without `when` (a catch-all) "
                "or set `unmatched: <target>` (`unmatched: rejected` rejects them)",
                "no-catch-all",
            )
        )
    files = (doc.path, *(Path(d.path) for d in schema_set.documents.values()))
    digest = hashlib.sha256(doc.text)
    for d in sorted(schema_set.documents.values(), key=lambda d: str(d.path)):
        digest.update(str(d.path.name).encode() + b"\0" + d.text)
    table = RouteTable(
        path=doc.path,
        content_hash=digest.hexdigest()[:12],
        sources=sources,
        limits=limits,
        schema_version=version_source,
        schemas=schemas,
        targets=targets,
        rules=tuple(rules),
        unmatched=unmatched,
        rejected=rejected,
        files=files,
        raw=data,
        positions=doc.positions,
    )
    return table, schema_set


def _one_source_form(doc: Document) -> list[Problem]:
    """`source:` or `sources:`, exactly one of them: the JSON Schema cannot word that well."""
    data: dict[str, Any] = doc.data
    if "source" in data and "sources" in data:
        message = (
            "both `source` and `sources` are set: write one source as `source:`, or list "
            "every source under `sources:`"
        )
        return [Problem(doc.locate_key(("sources",)), "error", message, "source-conflict")]
    if "source" not in data and "sources" not in data:
        message = (
            "missing required key 'source': name the queue routerd consumes (`source: "
            "{queue: email.send}`), or list several under `sources:`"
        )
        return [Problem(doc.locate(()), "error", message, "config-schema")]
    return []


def _sources(data: dict[str, Any], doc: Document, problems: list[Problem]) -> tuple[Source, ...]:
    if "source" in data:
        return (_source(data["source"]),)
    sources: list[Source] = []
    seen: dict[str, int] = {}
    raw_sources: list[dict[str, Any]] = data["sources"]
    last = len(raw_sources) - 1
    for i, raw in enumerate(raw_sources):
        path: FieldPath = ("sources", i)
        queue = raw["queue"]
        if queue in seen:
            problems.append(
                Problem(
                    doc.locate((*path, "queue")),
                    "error",
                    f"source queue {queue!r} is listed twice (first as source {seen[queue] + 1}); "
                    f"give each source its own queue",
                    "source-duplicate-queue",
                )
            )
        seen.setdefault(queue, i)
        accepts = None
        if "accepts" in raw:
            accepts = compile_condition(raw["accepts"], (*path, "accepts"), doc.locate, problems)
            if i == last:
                problems.append(
                    Problem(
                        doc.locate_key((*path, "accepts")),
                        "error",
                        f"the last source ({queue!r}) has `accepts`: the last source takes "
                        f"every request no earlier source accepts; remove its `accepts` or "
                        f"add a last source without one",
                        "source-catch-all",
                    )
                )
        elif i != last:
            problems.append(
                Problem(
                    doc.locate(path),
                    "error",
                    f"source {queue!r} has no `accepts` but is not the last source: it would "
                    f"take every request and leave none for the sources after it; give it an "
                    f"`accepts` condition or move it last",
                    "source-catch-all",
                )
            )
        sources.append(_source(raw, accepts))
    return tuple(sources)


def _source(raw: dict[str, Any], accepts: Condition | None = None) -> Source:
    queue_type = raw.get("type", "classic")
    arguments = dict(raw.get("arguments", {}))
    if dead_letter := raw.get("dead_letter"):
        arguments["x-dead-letter-exchange"] = dead_letter["exchange"]
        if "routing_key" in dead_letter:
            arguments["x-dead-letter-routing-key"] = dead_letter["routing_key"]
    spec = QueueSpec(raw["queue"], queue_type, raw.get("durable", True), None, arguments)
    return Source(
        queue=raw["queue"],
        prefetch=raw.get("prefetch", 256),
        declare=raw.get("declare", False),
        queue_spec=spec,
        max_redeliveries=raw.get("max_redeliveries", 5),
        accepts=accepts,
        accepts_canonical=accepts.canonical if accepts is not None else "",
        max_in_flight_bytes=raw.get("max_in_flight_bytes", DEFAULT_MAX_IN_FLIGHT_BYTES),
    )


def _target(
    name: str,
    raw: dict[str, Any],
    path: FieldPath,
    doc: Document,
    problems: list[Problem],
) -> Target:
    exchange = raw["exchange"]
    queues = tuple(
        QueueSpec(
            q["name"],
            q.get("type", "classic"),
            q.get("durable", True),
            q.get("binding_key", raw["routing_key"] if exchange else None),
            dict(q.get("arguments", {})),
        )
        for q in raw.get("queues", [])
    )
    partition = None
    if "partition" in raw:
        partition = Partitioning(parse_path(raw["partition"]["by"]), raw["partition"]["count"])
    template = _template(raw["routing_key"], (*path, "routing_key"), doc, problems)
    if partition is None and ("$partition",) in template.parts:
        problems.append(
            Problem(
                doc.locate((*path, "routing_key")),
                "error",
                f"target {name!r}: routing key {raw['routing_key']!r} uses {{partition}} "
                f"but the target has no `partition`",
                "routing-key-invalid",
            )
        )
    if exchange == "" and raw.get("declare", False):
        problems.append(
            Problem(
                doc.locate((*path, "declare")),
                "error",
                f'target {name!r}: the default exchange "" cannot be declared',
                "target-invalid",
            )
        )
    return Target(
        name=name,
        exchange=exchange,
        exchange_type=raw.get("type", "direct"),
        declare=raw.get("declare", bool(exchange)),
        routing_key=template,
        partition=partition,
        queues=queues,
        location=doc.locate(path),
    )


def _template(
    text: str, path: FieldPath, doc: Document, problems: list[Problem]
) -> RoutingKeyTemplate:
    parts: list[str | FieldPath] = []
    end = 0
    literals = []
    for match in _TEMPLATE_FIELD.finditer(text):
        literals.append(text[end : match.start()])
        if match.start() > end:
            parts.append(text[end : match.start()])
        field = match.group(1).strip()
        if not field:
            problems.append(
                Problem(
                    doc.locate(path),
                    "error",
                    f"routing key {text!r} has an empty {{}}; write a field path inside, "
                    f"like {{customer_id}}",
                    "routing-key-invalid",
                )
            )
        elif field in RESERVED_KEY_FIELDS:
            parts.append(("$" + field,))
        else:
            parts.append(parse_path(field))
        end = match.end()
    rest = text[end:]
    literals.append(rest)
    if any("{" in literal or "}" in literal for literal in literals):
        problems.append(
            Problem(
                doc.locate(path),
                "error",
                f"routing key {text!r} has an unbalanced brace; fields are written {{name}}",
                "routing-key-invalid",
            )
        )
    if rest:
        parts.append(rest)
    return RoutingKeyTemplate(text, tuple(parts))


def _rules(
    raw_rules: list[dict[str, Any]],
    targets: dict[str, Target],
    doc: Document,
    problems: list[Problem],
) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, Location] = {}
    for i, raw in enumerate(raw_rules):
        path: FieldPath = ("rules", i)
        location = doc.locate(path)
        name = raw["name"]
        if name in seen:
            problems.append(
                Problem(
                    doc.locate((*path, "name")),
                    "error",
                    f"rule name {name!r} is used twice (first at line {seen[name].line}); "
                    f"rule names "
                    f"travel in the x-rule header and must tell rules apart",
                    "rule-duplicate-name",
                )
            )
        seen.setdefault(name, location)
        if "when" in raw:
            when = compile_condition(raw["when"], (*path, "when"), doc.locate, problems)
        else:
            when = always(location)
        target = targets.get(raw["target"])
        if target is None:
            problems.append(_unknown_target(doc.locate((*path, "target")), raw["target"], targets))
        if when is None or target is None:
            continue
        headers = dict(raw.get("headers", {}))
        rules.append(
            Rule(name, when, raw["category"], target, raw.get("priority"), headers, location)
        )
    return rules


def _unknown_target(location: Location, name: str, targets: dict[str, Target]) -> Problem:
    known = ", ".join(sorted(targets)) or "none"
    return Problem(
        location,
        "error",
        f"unknown target {name!r} (targets: {known}){did_you_mean(name, sorted(targets))}",
        "target-unknown",
    )


def _nearby(file: Path) -> str:
    try:
        names = sorted(p.name for p in file.parent.iterdir())
    except OSError:
        return ""
    return did_you_mean(file.name, names)
