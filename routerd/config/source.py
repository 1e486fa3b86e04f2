"""Reading YAML (or JSON) files with `yaml.safe_load` semantics while keeping where each node was.

Every later error names `file:line:col`, so the loader needs the position of every value,
keyed by its path from the document root (the same path jsonschema reports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from routerd.config.model import ConfigError, Location, Problem

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: plain data plus the location of every node by its path."""

    path: Path
    text: bytes
    data: Any
    positions: Mapping[PathKey, Location]

    def locate(self, path: PathKey) -> Location:
        """The location of the deepest node of `path` that exists, so errors about a
        missing key point at the mapping that lacks it."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(tuple(path[:end]))
            if found is not None:
                return found
        return Location(self.path, 1, 1)


def read_document(path: Path) -> Document:
    """Parse one YAML/JSON file; raise ConfigError naming the file and position on failure."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise _single(path, "file not found", "file-not-found") from None
    except IsADirectoryError:
        raise _single(path, "is a directory, expected a YAML file", "file-unreadable") from None
    except OSError as exc:
        raise _single(path, f"cannot read file: {exc.strerror}", "file-unreadable") from None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _single(path, f"not UTF-8 text (byte {exc.start})", "yaml-syntax") from None
    loader = yaml.SafeLoader(decoded)
    try:
        node = loader.get_single_node()
        positions: dict[PathKey, Location] = {}
        if node is None:
            return Document(path, text, None, positions)
        data = _construct(loader, node, (), positions, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(
            (
                Problem(
                    Location(path, line, column), "error", f"YAML syntax: {message}", "yaml-syntax"
                ),
            )
        ) from None
    except yaml.YAMLError as exc:
        raise _single(path, f"YAML syntax: {exc}", "yaml-syntax") from None
    finally:
        loader.dispose()
    return Document(path, text, data, positions)


def _construct(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: PathKey,
    positions: dict[PathKey, Location],
    file: Path,
) -> Any:
    positions[path] = Location(file, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        # Merge keys (<<) are flattened by the constructor; do the same so paths match data.
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.MarkedYAMLError(
                    problem=f"a mapping key must be text, found {type(key).__name__}",
                    problem_mark=key_node.start_mark,
                )
            if key in result:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                )
            child = key if isinstance(key, str | int) else str(key)
            result[key] = _construct(loader, value_node, (*path, child), positions, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*path, i), positions, file)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def _single(path: Path, message: str, code: str) -> ConfigError:
    return ConfigError((Problem(Location(path, 0, 0), "error", message, code),))
