"""`load(path) -> RouteTable`: the one loader behind lint, test, explain, startup and reload.

Steps, each of which collects every problem it finds before giving up, so one run of
`routerd lint` shows them all: parse YAML with positions → check the config against its own
JSON Schema → load, check and compile the request schemas → compile targets and rules.
"""

from __future__ import annotations

import hashlib
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from routerd.config.conditions import always, compile_condition
from routerd.config.model import (
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
from routerd.config.paths import parse_path, pointer
from routerd.config.schemas import check_schema, compile_validator, load_schema_set
from routerd.config.source import Document, read_document

log = logging.getLogger(__name__)

RESERVED_KEY_FIELDS = ("partition", "category", "rule", "schema_version")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")

_config_schema: jsonschema.protocols.Validator | None = None


def config_schema() -> jsonschema.protocols.Validator:
    global _config_schema
    if _config_schema is None:
        text = resources.files("routerd.config").joinpath("routes.schema.yaml").read_text()
        _config_schema = jsonschema.Draft202012Validator(yaml.safe_load(text))
    return _config_schema


def load(path: Path) -> RouteTable:
    """Build the route table from `path`; raise ConfigError listing every problem found."""
    path = Path(path)
    doc = read_document(path)
    problems: list[Problem] = []
    if not isinstance(doc.data, dict):
        raise ConfigError(
            (
                Problem(
                    doc.locate(()), "error", "the config must be a YAML mapping", "config-schema"
                ),
            )
        )
    for error in sorted(
        config_schema().iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))
    ):
        where = tuple(error.absolute_path)
        problems.append(
            Problem(
                doc.locate(where),
                "error",
                f"{pointer(where) or '/'}: {_schema_message(error)}",
                "config-schema",
            )
        )
    if problems:
        raise ConfigError(tuple(problems))
    return _build(doc, problems)


def _build(doc: Document, problems: list[Problem]) -> RouteTable:
    data: dict[str, Any] = doc.data
    base = doc.path.parent
    source = _source(data["source"])
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

    schema_files = [(base / entry["file"]).resolve() for entry in data["schemas"]]
    schema_set = load_schema_set(schema_files, problems)
    schemas: dict[str, Schema] = {}
    for i, entry in enumerate(data["schemas"]):
        location = doc.locate(("schemas", i, "file"))
        file, version = schema_files[i], str(entry["version"])
        if version in schemas:
            problems.append(
                Problem(
                    doc.locate(("schemas", i, "version")),
                    "error",
                    f"schema version {version} is declared twice "
                    f"(first by {schemas[version].name} at {schemas[version].location})",
                    "schema-duplicate-version",
                )
            )
            continue
        uri = file.as_uri()
        if uri not in schema_set.documents:
            if not any(p.location.file == file for p in problems):
                problems.append(
                    Problem(location, "error", f"schema file {file} not found", "file-not-found")
                )
            continue
        before = len(problems)
        check_schema(schema_set, uri, problems)
        compiled = (
            compile_validator(schema_set, uri, location, problems)
            if len(problems) == before
            else None
        )
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
    if rules and not any(r.is_catch_all for r in rules) and "unmatched" not in data:
        problems.append(
            Problem(
                doc.locate(("rules",)),
                "error",
                "no rule matches every request: add a last rule without `when` (a catch-all) "
                "or set `unmatched: <target>` (`unmatched: rejected` rejects them)",
                "no-catch-all",
            )
        )
    if problems:
        raise ConfigError(tuple(problems))

    files = (doc.path, *(Path(d.path) for d in schema_set.documents.values()))
    digest = hashlib.sha256(doc.text)
    for d in sorted(schema_set.documents.values(), key=lambda d: str(d.path)):
        digest.update(str(d.path.name).encode() + b"\0" + d.text)
    return RouteTable(
        path=doc.path,
        content_hash=digest.hexdigest()[:12],
        source=source,
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


def _source(raw: dict[str, Any]) -> Source:
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
    )


def _target(
    name: str,
    raw: dict[str, Any],
    path: tuple[str | int, ...],
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
    text: str, path: tuple[str | int, ...], doc: Document, problems: list[Problem]
) -> RoutingKeyTemplate:
    parts: list[str | tuple[str | int, ...]] = []
    end = 0
    for match in _TEMPLATE_FIELD.finditer(text):
        if match.start() > end:
            parts.append(text[end : match.start()])
        field = match.group(1).strip()
        if not field:
            problems.append(
                Problem(
                    doc.locate(path),
                    "error",
                    f"routing key {text!r} has an empty {{}}",
                    "routing-key-invalid",
                )
            )
        elif field in RESERVED_KEY_FIELDS:
            parts.append(("$" + field,))
        else:
            parts.append(parse_path(field))
        end = match.end()
    rest = text[end:]
    if "{" in rest or "}" in rest:
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
        path: tuple[str | int, ...] = ("rules", i)
        location = doc.locate(path)
        name = raw["name"]
        if name in seen:
            problems.append(
                Problem(
                    doc.locate((*path, "name")),
                    "error",
                    f"rule name {name!r} is used twice (first at {seen[name]})",
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
        location, "error", f"unknown target {name!r} (targets: {known})", "target-unknown"
    )


def _schema_message(error: jsonschema.ValidationError) -> str:
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, dict)
    ):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra and allowed:
            return f"unknown key {extra[0]!r}; expected one of: {', '.join(allowed)}"
    return error.message
