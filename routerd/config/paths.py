"""Field paths into a request body (`recipients.to`, `to.0.email`) and JSON pointers."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

# A path into a JSON or YAML document, a request body or a config: keys and list indexes,
# ("to", 0, "email"). The one alias for it everywhere.
FieldPath = tuple[str | int, ...]


class _Missing:
    """The value of a path that leads nowhere; distinct from JSON null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def parse_path(text: str) -> FieldPath:
    """`to.0.email` -> ("to", 0, "email"); digits index into lists."""
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def resolve(data: Any, path: FieldPath) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part if isinstance(part, str) else str(part), MISSING)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return MISSING
        if data is MISSING:
            return MISSING
    return data


def pointer(parts: Iterable[str | int]) -> str:
    """A JSON pointer (RFC 6901) for a path: ("to", 0) -> "/to/0"."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def unescape(token: str) -> str:
    """One reference token of a JSON pointer as the name it stands for: "a~1b" -> "a/b"."""
    return token.replace("~1", "/").replace("~0", "~")


def at_pointer(data: Any, location: str) -> Any:
    """The value a JSON pointer names in `data`, MISSING when it names nothing."""
    for token in location.split("/")[1:] if location else ():
        name = unescape(token)
        if isinstance(data, dict):
            data = data.get(name, MISSING)
        elif isinstance(data, list) and name.isdigit() and int(name) < len(data):
            data = data[int(name)]
        else:
            return MISSING
        if data is MISSING:
            return MISSING
    return data


def absolute(path: Path) -> Path:
    """An absolute path that keeps symlinks: in a Kubernetes ConfigMap volume the files are
    symlinks through `..data`, and a resolved path would name a timestamped folder that the
    next update deletes (and that nobody recognises in an error message)."""
    return Path(os.path.abspath(path))
