"""Loading the request schemas: YAML/JSON files, local `$ref`s only, checked at load.

Validation runs on `jsonschema-rs` (about 100x faster than `jsonschema` on a send request,
see scripts/bench_pipeline.py); the Python `jsonschema` and `referencing` packages check
every schema against its draft's meta-schema and resolve every `$ref` at load time, as the
draft says (`$id`s inside a schema, `$anchor`, `$dynamicAnchor`, the standard meta-schemas),
so errors name the file and line of the offending keyword. Nothing is ever fetched from the
network: only local files and the bundled meta-schemas can be referenced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlparse
from urllib.request import url2pathname

import jsonschema
import jsonschema_rs
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import best_match
from jsonschema_specifications import REGISTRY as META_SCHEMAS

from routerd.config.hints import did_you_mean, readable_message
from routerd.config.model import ConfigError, Problem
from routerd.config.paths import FieldPath, absolute, pointer
from routerd.config.reference import reference_validator_class
from routerd.config.regex import RegexError, compile_regex
from routerd.config.source import Document, read_document
from routerd.config.subschemas import (
    ScopedRef,
    iter_refs,
    iter_scoped_refs,
    iter_subschemas,
    non_json_values,
    patterns,
)

__all__ = ["SchemaSet", "check_document", "iter_refs", "iter_subschemas"]

SCHEMA_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_DRAFT = "https://json-schema.org/draft/2020-12/schema"
# The drafts both validators implement, by the `$schema` that names them.
DRAFTS: dict[str, Any] = {
    str(cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id")).rstrip("#"): cls
    for cls in (
        jsonschema.Draft4Validator,
        jsonschema.Draft6Validator,
        jsonschema.Draft7Validator,
        jsonschema.Draft201909Validator,
        jsonschema.Draft202012Validator,
    )
}


@dataclass(frozen=True, slots=True)
class SchemaSet:
    """Every schema document the configured schemas can reach, keyed by file URI."""

    documents: Mapping[str, Document]
    registry: referencing.Registry[Any]
    # The folders of the configured schema files: the only place schemas are read from.
    folders: tuple[Path, ...] = ()
    # `reachable` per URI: the loader and lint ask it several times for every schema, and
    # each answer walks every `$ref` of the shared files again. Documents never change.
    _reachable: dict[str, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # `scoped_refs` per URI, for the same reason: a file every schema refers to (common.yaml)
    # was walked once per schema.
    _refs: dict[str, list[ScopedRef]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Every `$ref` to common.yaml asks whether it is inside the folders, and whether its
    # target resolves: answered once per target URI (a failed lookup is not kept, so each
    # `$ref` that fails is reported at its own place).
    _holds: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)
    _resolved: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def holds(self, uri: str) -> bool:
        """Whether the file at `uri` is inside the schema folders (or below them)."""
        found = self._holds.get(uri)
        if found is None:
            found = self._holds[uri] = _inside(self.folders, uri)
        return found

    def reference_validator(self, uri: str, fragment: str = "") -> jsonschema.protocols.Validator:
        """The Python `jsonschema` validator for one schema (or, with `fragment`, one
        subschema of it): the reference implementation."""
        document = self.documents[uri].data
        cls = reference_validator_class(draft_of(document) or jsonschema.Draft202012Validator)
        # A root that only refers to the file by URI, so relative `$ref`s inside it resolve
        # against the file's own location, exactly as the fast validator resolves them.
        validator: jsonschema.protocols.Validator = cls(
            {"$ref": f"{uri}#{fragment}" if fragment else uri}, registry=self.registry
        )
        return validator

    def reachable(self, uri: str) -> tuple[str, ...]:
        """`uri` and every document its `$ref`s lead to, transitively, in discovery order."""
        found = self._reachable.get(uri)
        if found is None:
            found = self._reachable[uri] = self._walk_refs(uri)
        return found

    def refs(self, uri: str) -> list[ScopedRef]:
        """Every reference in the document at `uri` (see `scoped_refs`); callers must not
        change the list."""
        found = self._refs.get(uri)
        if found is None:
            found = self._refs[uri] = scoped_refs(uri, self.documents[uri].data)
        return found

    def _walk_refs(self, uri: str) -> tuple[str, ...]:
        seen = [uri]
        for current in seen:
            if current not in self.documents:
                continue
            for ref in self.refs(current):
                target = urldefrag(ref.target).url
                if target in self.documents and target not in seen:
                    seen.append(target)
        return tuple(seen)


def scoped_refs(uri: str, data: Any) -> list[ScopedRef]:
    """Every reference in the schema document at `uri`, with the base it resolves against."""
    return list(iter_scoped_refs(data, (), uri, _specification(data)))


def draft_of(data: Any) -> Any:
    """The validator class for a schema's `$schema`, the default draft when it names none,
    None when it names a draft routerd does not know."""
    if not isinstance(data, dict) or "$schema" not in data:
        return jsonschema.Draft202012Validator
    return DRAFTS.get(str(data["$schema"]).rstrip("#"))


def load_schema_set(files: list[Path], problems: list[Problem]) -> SchemaSet:
    """Read the configured schema files, every schema file in their folders, and every local
    file their `$ref`s name."""
    documents: dict[str, Document] = {}
    unreadable: dict[str, ConfigError] = {}
    wanted = list(dict.fromkeys(absolute(path).as_uri() for path in files))
    folders = tuple(sorted({Path(os.path.normpath(absolute(f).parent)) for f in files}))
    siblings = [
        absolute(p).as_uri()
        for folder in sorted({f.parent for f in files})
        if folder.is_dir()
        for p in sorted(folder.iterdir())
        if p.suffix in SCHEMA_SUFFIXES and p.is_file()
    ]
    for uri in dict.fromkeys([*wanted, *siblings]):
        _read(uri, documents, unreadable)
    for uri in wanted:
        # A configured file that is missing is reported by the loader, at its config line.
        if uri in unreadable and unreadable[uri].problems[0].code != "file-not-found":
            problems.extend(unreadable[uri].problems)
    # Follow `$ref`s to local files wherever they are. A missing one is reported where the
    # `$ref` is; one that is there but broken is reported here, as an unreferenced broken
    # sibling need not be.
    queue = [uri for uri in wanted if uri in documents]
    visited = set(wanted)
    refs: dict[str, list[ScopedRef]] = {}
    while queue:
        uri = queue.pop()
        refs[uri] = scoped_refs(uri, documents[uri].data)
        for ref in refs[uri]:
            target = urldefrag(ref.target).url
            if (
                urlparse(target).scheme != "file"
                or target in visited
                or not _inside(folders, target)
            ):
                continue
            visited.add(target)
            if target not in documents and target not in unreadable:
                _read(target, documents, unreadable)
            if target in documents:
                queue.append(target)
            elif unreadable[target].problems[0].code != "file-not-found":
                problems.extend(unreadable[target].problems)
    resources = [
        (uri, _resource(doc.data))
        for uri, doc in documents.items()
        if isinstance(doc.data, dict | bool)
    ]
    # The standard meta-schemas are bundled, so a schema may refer to them offline; crawled
    # once here so every `$id` and anchor inside the documents is known to each lookup.
    registry: referencing.Registry[Any] = META_SCHEMAS.with_resources(resources).crawl()
    schema_set = SchemaSet(documents, registry, folders)
    schema_set._refs.update(refs)
    return schema_set


def _inside(folders: tuple[Path, ...], uri: str) -> bool:
    path = Path(os.path.normpath(_local_path(uri)))
    return any(path.is_relative_to(folder) for folder in folders)


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def _local_path(uri: str) -> Path:
    return Path(url2pathname(urlparse(uri).path))


def _read(uri: str, documents: dict[str, Document], unreadable: dict[str, ConfigError]) -> None:
    try:
        documents[uri] = read_document(_local_path(uri))
    except ConfigError as exc:
        unreadable[uri] = exc


def check_document(schemas: SchemaSet, uri: str, problems: list[Problem]) -> bool:
    """Everything that can be wrong with one schema file, each problem at its location:
    an unknown draft, values JSON cannot hold, the draft's meta-schema, regexes, `$ref`s.
    Returns whether the file is sound enough to compile."""
    doc = schemas.documents[uri]
    if not isinstance(doc.data, dict | bool):
        problems.append(
            Problem(
                doc.locate(()),
                "error",
                "a schema must be a mapping (or true/false)",
                "schema-invalid",
            )
        )
        return False
    before = len(problems)
    cls = draft_of(doc.data)
    if cls is None:
        known = ", ".join(sorted(DRAFTS))
        problems.append(
            Problem(
                doc.locate(("$schema",)),
                "error",
                f"unknown $schema {_get(doc.data, '$schema')!r}: routerd validates with one of "
                f"{known}",
                "schema-invalid",
            )
        )
        cls = jsonschema.Draft202012Validator
    for path, value in non_json_values(doc.data, ()):
        problems.append(
            Problem(
                doc.locate(path),
                "error",
                f"{pointer(path) or '/'}: {value!s} is a YAML {type(value).__name__}, which JSON "
                f"cannot hold; quote it to make it text",
                "schema-invalid",
            )
        )
    if len(problems) > before:
        return False
    seen: set[tuple[FieldPath, str]] = set()
    # jsonschema-rs answers "valid?" ~100x faster, which keeps reloads of big configs quick;
    # the Python reference words the errors when there are any.
    valid = _meta_valid(doc.data)
    for error in () if valid else cls(cls.META_SCHEMA).iter_errors(doc.data):
        # anyOf/oneOf errors of the meta-schema say little; their best sub-error says what.
        error = best_match(error.context) if error.context else error
        path = tuple(error.absolute_path)
        message = _with_suggestion(error)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        problems.append(
            Problem(
                doc.locate(path),
                "error",
                f"not a valid JSON Schema ({_draft_name(cls)}) at {pointer(path) or '/'}: "
                f"{message}",
                "schema-invalid",
            )
        )
    for path, regex in patterns(doc.data):
        try:
            compile_regex(regex)
        except RegexError as exc:
            problems.append(
                Problem(
                    doc.locate(path),
                    "error",
                    f"regex {regex!r} at {pointer(path)} {exc}",
                    "regex-invalid",
                )
            )
    refs_sound = _check_refs(schemas, uri, problems)
    return refs_sound and len(problems) == before


def _check_refs(schemas: SchemaSet, uri: str, problems: list[Problem]) -> bool:
    doc = schemas.documents[uri]
    sound = True
    for ref in schemas.refs(uri):
        location = doc.locate((*ref.path, ref.keyword))
        target = ref.target
        document = urldefrag(target).url
        if urlparse(document).scheme == "file" and not schemas.holds(document):
            shown = ", ".join(f"{folder.name}/" for folder in schemas.folders)
            problems.append(
                Problem(
                    location,
                    "error",
                    f"{ref.keyword} {ref.ref!r} leads outside the schema folders ({shown}): "
                    f"routerd reads schemas only from the folders "
                    f"of the configured schema files, so that what is deployed with the config "
                    f"is all it needs; move that file into the schema folder",
                    "schema-ref-outside",
                )
            )
            sound = False
            continue
        if (
            document not in schemas.documents
            and urlparse(document).scheme == "file"
            and _local_path(document).exists()
        ):
            sound = False  # there but unreadable: its own problem says why
            continue
        if ref.keyword == "$ref" and target in schemas._resolved:
            continue
        try:
            schemas.registry.resolver(base_uri=ref.base).lookup(ref.ref)
        except referencing.exceptions.Unresolvable as exc:
            found = isinstance(
                exc, referencing.exceptions.PointerToNowhere | referencing.exceptions.NoSuchAnchor
            )
            if not found and urlparse(document).scheme not in ("", "file"):
                resolved = "" if urldefrag(ref.ref).url == document else f" ({document})"
                problems.append(
                    Problem(
                        location,
                        "error",
                        f"{ref.keyword} {ref.ref!r} is remote{resolved}, and routerd never "
                        f"fetches schemas from the network: save that schema as a file beside "
                        f"this one and refer to it by its file name",
                        "schema-ref-unresolved",
                    )
                )
                continue
            why = _unresolvable(exc, schemas, ref.ref, target)
        except Exception as exc:
            # A pointer through a malformed document (into a list by name, into a number).
            why = f"{type(exc).__name__}: {exc}"
        else:
            if ref.keyword == "$ref":
                schemas._resolved.add(target)
            continue
        problems.append(
            Problem(
                location,
                "error",
                f"{ref.keyword} {ref.ref!r} does not resolve: {why}",
                "schema-ref-unresolved",
            )
        )
    return sound


def _meta_valid(data: Any) -> bool:
    try:
        return bool(jsonschema_rs.meta.is_valid(data))
    except Exception:  # a draft jsonschema-rs does not know, or a value it cannot take
        return False


def _with_suggestion(error: jsonschema.ValidationError) -> str:
    message = readable_message(error.message, error.instance)
    expected: Any = error.validator_value
    if error.validator == "enum" and isinstance(error.instance, str):
        choices = [str(c) for c in expected]
        message = f"{error.instance!r} is not one of {', '.join(choices)}" + did_you_mean(
            error.instance, choices
        )
    return message


def _resource(data: Any) -> referencing.Resource[Any]:
    return _specification(data).create_resource(data)


def _specification(data: Any) -> referencing.Specification[Any]:
    dialect = _get(data, "$schema")
    return referencing.jsonschema.specification_with(
        dialect if isinstance(dialect, str) else DEFAULT_DRAFT,
        default=referencing.jsonschema.DRAFT202012,
    )


def _unresolvable(
    exc: referencing.exceptions.Unresolvable, schemas: SchemaSet, ref: str, target: str
) -> str:
    if isinstance(exc, referencing.exceptions.PointerToNowhere):
        where = urldefrag(target)
        known = schemas.documents.get(where.url)
        name = _local_path(where.url).name
        fragment = exc.ref.split("#", 1)[-1] or where.fragment
        hint = ""
        parts = fragment.strip("/").split("/")
        if known is not None and len(parts) == 2 and isinstance(known.data, dict):
            defs = known.data.get(parts[0])
            if isinstance(defs, dict):
                hint = did_you_mean(parts[1], [str(k) for k in defs])
        return f"{name} has nothing at {fragment!r}{hint}"
    if isinstance(exc, referencing.exceptions.NoSuchAnchor):
        return f"no `$anchor` or `$dynamicAnchor` {exc.anchor!r} in {urldefrag(target).url}"
    missing = _local_path(urldefrag(target).url)
    nearby = (
        [p.name for p in missing.parent.iterdir() if p.suffix in SCHEMA_SUFFIXES]
        if missing.parent.is_dir()
        else []
    )
    return f"no schema file {urldefrag(ref).url} (relative to this file)" + did_you_mean(
        missing.name, sorted(nearby)
    )


def _draft_name(cls: Any) -> str:
    return str(cls.__name__).removesuffix("Validator")
