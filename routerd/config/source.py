"""Reading YAML and JSON files as JSON tools would, while keeping where each node was.

Every later error names `file:line:col`, so the loader needs the position of every value,
keyed by its path from the document root (the same path jsonschema reports), and of every
mapping key, so that a problem about a key (unknown, missing a sibling) points at the key.

Schemas are JSON documents, and ops write them with JSON tools in mind. So a `.json` file is
read as JSON, and a YAML file resolves plain scalars by YAML 1.2's core schema (the one
JSON agrees with), not PyYAML's YAML 1.1: `1e-8` is a number, `yes`, `on` and `2024-01-01`
are text, `0777` is seven hundred and seventy-seven. Where YAML 1.1 tools would read a plain
scalar differently, the document remembers it, and lint says so (`yaml-ambiguous`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from routerd.config.indentation import indentation_hint
from routerd.config.model import ConfigError, Location, Problem
from routerd.config.paths import FieldPath

# Aliases let a few lines of YAML expand into billions of nodes; a config never needs this many.
MAX_NODES = 200_000
# Bytes of one file. The largest shipped file is a few KB; a config generated for thousands
# of customers stays far below this. A bigger file is a mistake (or /dev/zero), not a config.
MAX_FILE_BYTES = 8 * 1024 * 1024
# Levels of nesting. A route config nests about 8 deep and a schema rarely 20; parsers
# recurse per level (Python's limit is 1,000), so a deeper file is refused before it can
# make one fail with a RecursionError.
MAX_DEPTH = 100


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: plain data plus the location of every node by its path."""

    path: Path
    text: bytes
    data: Any
    positions: Mapping[FieldPath, Location]
    # Where the key of each mapping entry is written, by the entry's path.
    keys: Mapping[FieldPath, Location] = field(default_factory=dict)
    # Plain scalars that YAML 1.1 tools read differently: (text, value, YAML 1.1's value).
    ambiguous: Mapping[FieldPath, tuple[str, Any, Any]] = field(default_factory=dict)

    def locate(self, path: FieldPath) -> Location:
        """The location of the deepest node of `path` that exists, so errors about a
        missing key point at the mapping that lacks it."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(tuple(path[:end]))
            if found is not None:
                return found
        return Location(self.path, 1, 1)

    def locate_key(self, path: FieldPath) -> Location:
        """The location of the key that holds `path` (`bogus:` rather than its value), for
        problems about the key itself; falls back to `locate`."""
        return self.keys.get(tuple(path)) or self.locate(path)


def read_document(path: Path) -> Document:
    """Parse one YAML/JSON file; raise ConfigError naming the file and position on failure."""
    try:
        with path.open("rb") as file:
            # One byte over the limit is enough to know; a huge file is never read whole.
            text = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _single(path, "file not found", "file-not-found") from None
    except IsADirectoryError:
        raise _single(path, "is a directory, expected a YAML file", "file-unreadable") from None
    except OSError as exc:
        raise _single(path, f"cannot read file: {exc.strerror}", "file-unreadable") from None
    if len(text) > MAX_FILE_BYTES:
        raise _single(
            path,
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, more than a config or schema "
            f"can need; is it the right file?",
            "yaml-too-large",
        )
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _single(
            path, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", "yaml-syntax"
        ) from None
    if path.suffix == ".json":
        return _read_json(path, text, decoded)
    return _read_yaml(path, text, decoded)


def _read_yaml(path: Path, text: bytes, decoded: str) -> Document:
    if _FastLoader is not None:
        # libyaml parses a large config several times faster, which keeps reloads quick;
        # any failure is read again by the Python parser, whose messages lint promises.
        try:
            return _read_yaml_with(_FastLoader, path, text, decoded)
        except ConfigError:
            pass
    return _read_yaml_with(Yaml12Loader, path, text, decoded)


def _read_yaml_with(loader_class: type[Any], path: Path, text: bytes, decoded: str) -> Document:
    loader = loader_class(decoded)
    builder = _Builder(loader, path)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(path, text, None, builder.positions, builder.keys)
        data = builder.construct(node, ())
    except _Invalid as exc:
        raise ConfigError(
            (Problem(builder.at(exc.mark), "error", exc.message, exc.code),)
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError((_syntax_problem(path, exc, decoded),)) from None
    except yaml.YAMLError as exc:
        raise _single(path, f"YAML syntax: {exc}", "yaml-syntax") from None
    finally:
        loader.dispose()
    return Document(path, text, data, builder.positions, builder.keys, builder.ambiguous)


def _read_json(path: Path, text: bytes, decoded: str) -> Document:
    """JSON decides what the data is; the YAML reader (JSON is YAML 1.2) only says where
    each value was written."""
    try:
        data = json.loads(decoded, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise _single(path, _too_deep(), "yaml-too-deep") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            (
                Problem(
                    Location(path, exc.lineno, exc.colno),
                    "error",
                    f"JSON syntax: {exc.msg}",
                    "yaml-syntax",
                ),
            )
        ) from None
    except _JsonInvalid as exc:
        raise _single(path, str(exc), exc.code) from None
    try:
        located = _read_yaml(path, text, decoded)
    except ConfigError as exc:
        if any(p.code == "yaml-too-deep" for p in exc.problems):
            # json.loads manages a few hundred levels more than the bound: hold JSON to it too.
            raise
        return Document(path, text, data, {}, {})
    return Document(path, text, data, located.positions, located.keys)


class _JsonInvalid(ValueError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonInvalid(
                f"duplicate key {key!r}: JSON tools disagree on which one counts; remove or "
                f"rename one",
                "yaml-duplicate-key",
            )
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _JsonInvalid(
        f"{name} is not JSON (no JSON tool reads it); write a number or text", "yaml-syntax"
    )


_INT = "tag:routerd:yaml12:int"
_FLOAT = "tag:routerd:yaml12:float"


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema for plain scalars, and a bound on
    nesting (its composer recurses once per level)."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _Invalid(event.start_mark, _too_deep(), "yaml-too-deep")
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _too_deep() -> str:
    return (
        f"nested more than {MAX_DEPTH} levels deep, more than a config or schema needs; "
        f"write it flatter"
    )


def _resolver(tag: str, regex: str, first: str) -> None:
    Yaml12Loader.add_implicit_resolver(tag, re.compile(regex), list(first))


_resolver("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN")
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_resolver("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF")
_resolver(_INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789")
_resolver(
    _FLOAT,
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    "-+0123456789.",
)
_resolver("tag:yaml.org,2002:merge", r"^(?:<<)$", "<")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(node.value).lower()
    if text.endswith(".nan"):
        return math.nan
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    return float(text)


Yaml12Loader.add_constructor(_INT, _construct_int)
Yaml12Loader.add_constructor(_FLOAT, _construct_float)

# The libyaml classes are untyped C extension types: Any is all there is to say.
_FastLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _Yaml12CLoader(yaml.CSafeLoader):
        """The same YAML 1.2 reading on libyaml's parser."""

        yaml_implicit_resolvers = Yaml12Loader.yaml_implicit_resolvers
        yaml_constructors = Yaml12Loader.yaml_constructors

    _FastLoader = _Yaml12CLoader


class _Builder:
    """Constructs plain data from the node tree, recording where every node and key was."""

    def __init__(self, loader: yaml.SafeLoader, file: Path) -> None:
        self.loader = loader
        self.file = file
        self.positions: dict[FieldPath, Location] = {}
        self.keys: dict[FieldPath, Location] = {}
        self.count = 0
        # Nodes being constructed right now: an alias to one of them is a cycle.
        self.active: set[int] = set()
        # Entries that came from a merge key (<<), which the mapping's own keys may override.
        self.merged: set[FieldPath] = set()
        self.split: dict[int, int] = {}
        self.ambiguous: dict[FieldPath, tuple[str, Any, Any]] = {}

    def at(self, mark: yaml.Mark) -> Location:
        return Location(self.file, mark.line + 1, mark.column + 1)

    def construct(self, node: yaml.Node, path: FieldPath) -> Any:
        if len(path) >= MAX_DEPTH:  # the root is level 1
            # libyaml composed it (its own limit is 1,000 levels), building it must not recurse.
            raise _Invalid(node.start_mark, _too_deep(), "yaml-too-deep")
        # YAML's own types (`!!str 0777`; `!!timestamp`, which lint explains later) have a
        # safe constructor. Any other tag (`!!python/object`, `!custom`) asks for an object
        # a config cannot be: PyYAML's safe loader refuses it on a scalar and would
        # silently drop it on a mapping or list.
        if node.tag not in self.loader.yaml_constructors:
            raise _Invalid(
                node.start_mark,
                f"the tag {_shown_tag(node.tag)} is not allowed: a config is plain data "
                f"(text, numbers, true/false, null, lists, mappings); remove the tag",
                "yaml-tag",
            )
        self.count += 1
        if self.count > MAX_NODES:
            raise _Invalid(
                node.start_mark,
                f"more than {MAX_NODES} values: aliases expanding too far? write it out plainly",
                "yaml-too-large",
            )
        if id(node) in self.active:
            raise _Invalid(
                node.start_mark,
                "an alias refers to a value that contains it; a config cannot be recursive",
                "yaml-recursive",
            )
        self.positions[path] = self.at(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            try:
                return self._mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            try:
                return [self.construct(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        value = self.loader.construct_object(node, deep=True)
        # Plain scalars: PyYAML says style None, libyaml says "".
        if isinstance(node, yaml.ScalarNode) and not node.style:
            self._compare_with_yaml11(node, value, path)
        return value

    def _compare_with_yaml11(self, node: yaml.ScalarNode, value: Any, path: FieldPath) -> None:
        text = str(node.value)
        tag = next(
            (
                tag
                for tag, regex in yaml.SafeLoader.yaml_implicit_resolvers.get(text[:1], [])
                if regex.match(text)
            ),
            "tag:yaml.org,2002:str",
        )
        construct = yaml.SafeLoader.yaml_constructors.get(tag)
        if construct is None:
            return
        try:
            old = construct(self.loader, yaml.ScalarNode(tag, text))
        except (yaml.YAMLError, ValueError):
            return
        if type(old) is not type(value) or (old != value and value == value):
            self.ambiguous[path] = (text, value, old)

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[Any, Any]:
        # Merge keys (<<) are flattened by the constructor; do the same so paths match data.
        # Flattening puts the merged entries first, and the mapping's own keys may override
        # them: only a key written twice in the mapping itself is a duplicate.
        # An aliased mapping is flattened in place the first time, so remember the split.
        if id(node) not in self.split:
            own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)
            self.split[id(node)] = len(node.value) - own
        merged = self.split[id(node)]
        result: dict[Any, Any] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Invalid(
                    key_node.start_mark,
                    "a mapping key must be text, found a "
                    + ("list" if isinstance(key_node, yaml.SequenceNode) else "mapping"),
                    "yaml-key-invalid",
                )
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise _Invalid(
                    key_node.start_mark,
                    f"a mapping key must be text, found {type(key).__name__}",
                    "yaml-key-invalid",
                )
            child = key if isinstance(key, str | int) else str(key)
            if key in result and index >= merged and (*path, child) not in self.merged:
                first = self.keys.get((*path, child))
                raise _Invalid(
                    key_node.start_mark,
                    f"duplicate key {key!r}"
                    + (f" (first at line {first.line})" if first else "")
                    + ": YAML would silently keep only the last one; remove or rename one",
                    "yaml-duplicate-key",
                )
            self.keys[(*path, child)] = self.at(key_node.start_mark)
            if index < merged:
                self.merged.add((*path, child))
            else:
                self.merged.discard((*path, child))
            result[key] = self.construct(value_node, (*path, child))
        return result


def _shown_tag(tag: str) -> str:
    # As it was written: !!python/object:os.system, not tag:yaml.org,2002:python/...
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag


class _Invalid(Exception):
    """Well-formed YAML that a config still cannot be (duplicate key, recursion, ...)."""

    def __init__(self, mark: yaml.Mark, message: str, code: str) -> None:
        self.mark, self.message, self.code = mark, message, code
        super().__init__(message)


def _syntax_problem(path: Path, exc: yaml.MarkedYAMLError, text: str = "") -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        # PyYAML's context says what was open ("while parsing a flow sequence") and where.
        started = exc.context_mark
        where = f" started at line {started.line + 1}" if started and started is not mark else ""
        message = f"{exc.problem} ({exc.context}{where})"
    hint = indentation_hint(exc.problem or "", text, line)
    if hint:
        message = f"{message}; {hint}"
    return Problem(Location(path, line, column), "error", f"YAML syntax: {message}", "yaml-syntax")


def _single(path: Path, message: str, code: str) -> ConfigError:
    return ConfigError((Problem(Location(path, 0, 0), "error", message, code),))
