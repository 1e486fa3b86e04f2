"""Loading the request schemas: YAML/JSON files, local `$ref`s only, compiled validators.

Validation runs on `jsonschema-rs` (about 100x faster than `jsonschema` on a send request,
see scripts/bench_pipeline.py); the Python `jsonschema` package stays the reference: it checks
every schema against its draft's meta-schema and resolves every `$ref` at load time, so
errors name the file and line of the offending keyword. Nothing is ever fetched from the
network: only files beside the configured schemas can be referenced.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import referencing
import referencing.exceptions
import referencing.jsonschema

from routerd.config.model import ConfigError, ErrorDetail, Location, Problem
from routerd.config.paths import pointer
from routerd.config.source import Document, read_document

SCHEMA_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, slots=True)
class SchemaSet:
    """Every schema document the configured schemas can reach, keyed by file URI."""

    documents: Mapping[str, Document]
    registry: referencing.Registry[Any]
    rs_registry: jsonschema_rs.Registry

    def reference_validator(self, uri: str) -> jsonschema.protocols.Validator:
        """The Python `jsonschema` validator for one schema: the reference implementation."""
        document = self.documents[uri].data
        cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
        # A root that only refers to the file by URI, so relative `$ref`s inside it resolve
        # against the file's own location, exactly as the fast validator resolves them.
        return cls({"$ref": uri}, registry=self.registry)


def load_schema_set(files: list[Path], problems: list[Problem]) -> SchemaSet:
    """Read the configured schema files and every schema file in their folders."""
    documents: dict[str, Document] = {}
    folders = sorted({f.parent for f in files})
    candidates = [*files]
    for folder in folders:
        if folder.is_dir():
            candidates.extend(sorted(p for p in folder.iterdir() if p.suffix in SCHEMA_SUFFIXES))
    for path in candidates:
        uri = path.resolve().as_uri()
        if uri in documents:
            continue
        try:
            documents[uri] = read_document(path)
        except ConfigError as exc:
            if path in files:
                problems.extend(exc.problems)
    resources = []
    for uri, doc in documents.items():
        if not isinstance(doc.data, dict | bool):
            if Path(doc.path) in files:
                problems.append(
                    Problem(doc.locate(()), "error", "a schema must be a mapping", "schema-invalid")
                )
            continue
        resources.append((uri, _resource(doc.data)))
    registry: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse).with_resources(  # type: ignore[call-arg]
        resources
    )
    rs_registry = jsonschema_rs.Registry(
        [(uri, doc.data) for uri, doc in documents.items() if isinstance(doc.data, dict | bool)]
    )
    return SchemaSet(documents, registry, rs_registry)


def check_schema(schemas: SchemaSet, uri: str, problems: list[Problem]) -> None:
    """Meta-schema validity and resolvable `$ref`s of one schema file, each with its location."""
    doc = schemas.documents[uri]
    cls = jsonschema.validators.validator_for(doc.data, default=jsonschema.Draft202012Validator)
    for error in cls(cls.META_SCHEMA).iter_errors(doc.data):
        path = tuple(error.absolute_path)
        problems.append(
            Problem(
                doc.locate(path),
                "error",
                f"not a valid JSON Schema ({_draft_name(cls)}) at {pointer(path) or '/'}: "
                f"{error.message}",
                "schema-invalid",
            )
        )
    resolver = schemas.registry.resolver(base_uri=uri)
    for path, ref in iter_refs(doc.data, ()):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as exc:
            problems.append(
                Problem(
                    doc.locate((*path, "$ref")),
                    "error",
                    f"$ref {ref!r} does not resolve: {_unresolvable(exc)}; only schema files "
                    f"beside the configured ones can be referenced",
                    "schema-ref-unresolved",
                )
            )


def compile_validator(
    schemas: SchemaSet, uri: str, location: Location, problems: list[Problem]
) -> tuple[Any, Any] | None:
    """The fast validator's `is_valid` and error listing for one schema file."""
    try:
        validator = jsonschema_rs.validator_for(
            schemas.documents[uri].data,
            registry=schemas.rs_registry,
            base_uri=uri,
            # Formats differ between validators; schemas use `pattern` instead.
            validate_formats=False,
        )
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        problems.append(
            Problem(location, "error", f"schema does not compile: {exc}", "schema-invalid")
        )
        return None

    def errors(instance: Any) -> tuple[ErrorDetail, ...]:
        return tuple(
            ErrorDetail(
                pointer(e.instance_path),
                str(e.schema_path[-1]) if e.schema_path else "",
                readable_message(e.message, e.instance),
            )
            for e in validator.iter_errors(instance)
        )

    return validator.is_valid, errors


def readable_message(message: str, instance: Any) -> str:
    """Drop a whole object or array dumped at the front of a message: a customer needs to
    know what is wrong with it, not to read it back (it can be megabytes)."""
    if isinstance(instance, dict | list) and message[:1] in ("{", "["):
        cut = max(message.rfind(" is "), message.rfind(" has "))
        if cut > 0:
            return ("object" if isinstance(instance, dict) else "array") + message[cut:]
    return message


def iter_refs(
    node: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield path, ref
        for key, value in node.items():
            if key in ("enum", "const", "examples", "default"):
                continue  # data, not schema: a "$ref" key there is just a value
            yield from iter_refs(value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from iter_refs(item, (*path, i))


def _resource(data: Any) -> referencing.Resource[Any]:
    specification = referencing.jsonschema.specification_with(
        data.get("$schema", DEFAULT_DRAFT) if isinstance(data, dict) else DEFAULT_DRAFT,
        default=referencing.jsonschema.DRAFT202012,
    )
    return specification.create_resource(data)


def _refuse(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


def _unresolvable(exc: referencing.exceptions.Unresolvable) -> str:
    if isinstance(exc, referencing.exceptions.PointerToNowhere):
        return f"no {exc.ref.split('#', 1)[-1]!r} in that document"
    if isinstance(exc, referencing.exceptions.NoSuchResource):
        return "no such schema file"
    return type(exc).__name__


def _draft_name(cls: Any) -> str:
    return str(cls.__name__).removesuffix("Validator")
