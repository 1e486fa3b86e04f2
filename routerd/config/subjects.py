"""What a leaf condition reads from a send request: a body field, an AMQP header or property,
or the total length of several lists.

A subject reads one value per request (MISSING when there is none) and tells lint what that
value is for every valid request of a schema version, when the schema fixes it. A new subject
is one class and one entry in `SUBJECTS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from routerd.config.model import MatchContext, VersionFacts
from routerd.config.operators import ConditionError
from routerd.config.paths import MISSING, FieldPath, parse_path, resolve


class _Varies:
    """What `Subject.fixed` answers when valid requests of a version can differ."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<varies>"


VARIES: Final = _Varies()


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject(ABC):
    # How explain and lint name it: "field stream", "count of to + cc + bcc".
    text: str

    @abstractmethod
    def read(self, ctx: MatchContext) -> Any:
        """The value in this request, MISSING when there is none."""

    def fixed(self, facts: VersionFacts) -> Any:
        """The value every valid request of `facts`' version has here, or VARIES."""
        return VARIES

    def why_fixed(self) -> str | None:
        """Why `fixed` found a value, in a few words for lint's messages."""
        return None

    def possible(self, facts: VersionFacts) -> list[Any] | None:
        """Every value it can read in a valid request of `facts`' version, or None when
        that is not a short list the schema gives."""
        return None

    def is_field(self, path: FieldPath) -> bool:
        """Whether it reads exactly the body field at `path`."""
        return False

    @property
    def index_key(self) -> Hashable | None:
        """The key the rule index files a test of it under (see `model.Requirements`), or
        None when rules are not indexed by it."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldSubject(Subject):
    written: str
    path: FieldPath

    def read(self, ctx: MatchContext) -> Any:
        return resolve(ctx.body, self.path)

    def fixed(self, facts: VersionFacts) -> Any:
        # Every valid request lacks the field: the test sees "missing" every time.
        return MISSING if facts.never_has(self.path) else VARIES

    def why_fixed(self) -> str:
        return f"field {self.written} never exists"

    def possible(self, facts: VersionFacts) -> list[Any] | None:
        return facts.possible_values(self.path)

    def is_field(self, path: FieldPath) -> bool:
        return self.path == path

    @property
    def index_key(self) -> Hashable | None:
        return ("field", self.path)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderSubject(Subject):
    name: str

    def read(self, ctx: MatchContext) -> Any:
        return _text(ctx.headers.get(self.name, MISSING))


@dataclass(frozen=True, slots=True, kw_only=True)
class PropertySubject(Subject):
    name: str

    def read(self, ctx: MatchContext) -> Any:
        return _text(ctx.properties.get(self.name, MISSING))


@dataclass(frozen=True, slots=True, kw_only=True)
class CountSubject(Subject):
    written: tuple[str, ...]
    paths: tuple[FieldPath, ...]

    def read(self, ctx: MatchContext) -> Any:
        # A missing path, or one that is not a list, counts for nothing.
        total = 0
        for path in self.paths:
            found = resolve(ctx.body, path)
            if isinstance(found, list):
                total += len(found)
        return total

    def fixed(self, facts: VersionFacts) -> Any:
        return 0 if all(facts.never_has(path) for path in self.paths) else VARIES

    def why_fixed(self) -> str:
        return f"fields {', '.join(self.written)} never exist, so their count is 0"


def _field(value: Any, path: FieldPath) -> Subject:
    return FieldSubject(text=f"field {value}", written=value, path=_path(value, path))


def _header(value: Any, path: FieldPath) -> Subject:
    if not isinstance(value, str) or not value:
        raise ConditionError(path, "`header` takes a header name", "condition-invalid")
    return HeaderSubject(text=f"header {value}", name=value)


def _property(value: Any, path: FieldPath) -> Subject:
    if not isinstance(value, str):
        raise ConditionError(path, "`property` takes an AMQP property name", "condition-invalid")
    return PropertySubject(text=f"property {value}", name=value)


def _count(value: Any, path: FieldPath) -> Subject:
    if not isinstance(value, list) or not value:
        raise ConditionError(path, "`count` takes a list of field paths", "condition-invalid")
    paths = tuple(_path(p, (*path, i)) for i, p in enumerate(value))
    return CountSubject(
        text=f"count of {' + '.join(str(v) for v in value)}", written=tuple(value), paths=paths
    )


# Each subject's key in `routes.yaml`, and what checks its value and builds it.
SUBJECTS: Mapping[str, Callable[[Any, FieldPath], Subject]] = MappingProxyType(
    {"field": _field, "header": _header, "property": _property, "count": _count}
)


def _path(value: Any, path: FieldPath) -> FieldPath:
    if not isinstance(value, str) or not value:
        raise ConditionError(path, f"a field path must be text, got {value!r}", "condition-invalid")
    return parse_path(value)


def _text(value: Any) -> Any:
    # AMQP long strings can arrive as bytes; rules are written against text.
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value
