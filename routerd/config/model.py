"""The route table: the compiled, immutable form of `routes.yaml` plus its schemas.

Everything here is frozen and built once by the loader. The daemon swaps a whole
`RouteTable` in one assignment on reload; a message handler reads the table once and
uses that object to the end, so a request never sees half of two configs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

from routerd.config.paths import MISSING, FieldPath

if TYPE_CHECKING:
    from routerd.config.rule_index import RuleIndex

QueueType = Literal["classic", "quorum"]
ExchangeType = Literal["direct", "topic", "fanout", "headers"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a config node came from; line and column are 1-based like editors show them."""

    file: Path
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return str(self.file)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of the loader or of `lint`: `file:line:col: severity: message [code]`."""

    location: Location
    severity: Severity
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.location.file),
            "line": self.location.line,
            "column": self.location.column,
            "severity": self.severity,
            "message": self.message,
            "code": self.code,
        }


class ConfigError(Exception):
    """The config cannot be loaded; carries every problem found, each with its location."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue routerd declares (when asked) and, for targets, binds to the target's exchange."""

    name: str
    type: QueueType = "classic"
    durable: bool = True
    binding_key: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)


DEFAULT_MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    queue: str
    prefetch: int
    declare: bool
    queue_spec: QueueSpec
    # After this many deliveries of one request whose publish keeps failing, it goes to
    # rejected instead of being requeued again: requeue must never loop forever.
    max_redeliveries: int
    # Which send requests publishers put on this queue (the first source that accepts a
    # request gets it); None for the catch-all, the last source. Compared by its canonical
    # text: the same condition moved to another line is no change of the source.
    accepts: Condition | None = field(default=None, compare=False)
    accepts_canonical: str = ""
    # Bytes of request bodies this source may have in flight in one daemon (see `window`).
    max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES

    def takes(self, ctx: MatchContext) -> bool:
        return self.accepts is None or self.accepts.matches(ctx)

    def window(self, limits: Limits) -> int:
        """The prefetch the daemon consumes with: `prefetch`, lowered until that many bodies
        at the size limit fit in `max_in_flight_bytes` (never below 1).

        RabbitMQ bounds unacknowledged deliveries by count only (it does not implement
        basic.qos prefetch_size), so a byte bound has to be a count: with 1 MiB bodies a
        prefetch of 256 could hold 256 MiB, more than a small pod has.
        """
        return max(1, min(self.prefetch, self.max_in_flight_bytes // limits.max_body_bytes))


@dataclass(frozen=True, slots=True)
class Partitioning:
    """Stable partitioning: crc32 of the field's text modulo `count`, same in every process."""

    by: FieldPath
    count: int


@dataclass(frozen=True, slots=True)
class RoutingKeyTemplate:
    """`bulk.{partition}` or `tx.{customer_id}`, compiled into literal text and field parts."""

    source: str
    # Each part is either literal text (str) or a field reference (tuple path). Reserved
    # names (`partition`, `category`, `rule`, `schema_version`) are one-element tuples
    # prefixed with "$".
    parts: tuple[str | FieldPath, ...]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    exchange: str
    exchange_type: ExchangeType
    declare: bool
    routing_key: RoutingKeyTemplate
    partition: Partitioning | None
    queues: tuple[QueueSpec, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class MatchContext:
    """What a condition can look at: the decoded body, AMQP headers and properties."""

    body: Mapping[str, Any]
    headers: Mapping[str, Any]
    properties: Mapping[str, Any]
    schema_version: str


class ConditionKind(StrEnum):
    """The node classes of a condition, as explain's output names them."""

    ALL = "all"
    ANY = "any"
    NOT = "not"
    LEAF = "leaf"
    SCHEMA_VERSION = "schema_version"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class Seen:
    """What a test looked at in one request: its subject and the value found there."""

    subject: str
    value: Any  # MISSING when the request has none

    @property
    def present(self) -> bool:
        return self.value is not MISSING


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One node of a condition evaluated on one request, every child included (no
    short-circuit), so `explain` can show each answer and the value behind it."""

    kind: ConditionKind
    description: str
    matched: bool
    seen: Seen | None = None
    children: tuple[TraceNode, ...] = ()

    def leaves(self) -> Iterator[TraceNode]:
        """The nodes that answered by themselves, depth first, in evaluation order."""
        if not self.children:
            yield self
        for child in self.children:
            yield from child.leaves()


class VersionFacts(Protocol):
    """What lint knows about every valid request of one schema version."""

    @property
    def version(self) -> str: ...

    def never_has(self, path: FieldPath) -> bool:
        """Whether no valid request of this version has a value at this body path."""
        ...

    def possible_values(self, path: FieldPath) -> list[Any] | None:
        """Every value a valid request can have at this body path (MISSING among them
        when it may lack it), or None when the schema does not restrict it to a list."""
        ...


# What a condition needs of a request to hold: under each key, the value the request has
# there must be one of the set. A key is `SCHEMA_VERSION` (the set holds version texts) or
# ("field", path) (the set holds `fields.same_key` of the values). The rule index files rules
# by it; a condition that needs nothing it can state answers an empty mapping.
Requirements = Mapping[Hashable, frozenset[Hashable]]
SCHEMA_VERSION: Final = ("schema_version",)


# For every valid request of a version a condition holds (True), never holds (False), or
# it depends on the request (None).
Verdict = bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition(ABC):
    """One node of a rule's `when`, kept with its source so `explain` and lint can show it.

    Each node class answers for itself: whether a request matches (the hot path), the traced
    answer for explain, and what lint may conclude per schema version. A new kind of node is
    one class in `routerd.config.nodes`; nothing walks the tree by kind.
    """

    kind: ClassVar[ConditionKind]
    # Nodes that test the request itself, rather than combine other nodes.
    tests_request: ClassVar[bool] = False
    description: str
    location: Location
    # Canonical form of the condition, used by lint to find duplicated conditions.
    canonical: str = ""
    # The mapping it was compiled from, as written.
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @abstractmethod
    def matches(self, ctx: MatchContext) -> bool:
        """Whether the request matches; short-circuits, as this runs for every rule tried."""

    @abstractmethod
    def trace(self, ctx: MatchContext) -> TraceNode:
        """The same answer as `matches`, with every node evaluated and what each saw."""

    @abstractmethod
    def verdict(self, facts: VersionFacts) -> Verdict:
        """The answer for every valid request of one schema version, when it is fixed."""

    def why_false(self, facts: VersionFacts) -> str:
        """A short reason why the node never holds for `facts`' version."""
        return f"`{self.description}` is false"

    def guarantees(self, path: FieldPath) -> bool:
        """Whether every request it matches has a non-null value at body path `path`."""
        return False

    def branches(self) -> tuple[tuple[FieldPath, Condition], ...]:
        """The child nodes, each with the config keys that lead from this node to it."""
        return ()

    def requires(self) -> Requirements:
        """What every request it matches has (see `Requirements`); never more than that."""
        return {}

    def walk(self, at: FieldPath) -> Iterator[tuple[Condition, FieldPath]]:
        """This node and every node below it, depth first, each with its config path."""
        yield self, at
        for keys, child in self.branches():
            yield from child.walk((*at, *keys))


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: Condition
    category: str
    target: Target
    priority: int | None
    headers: Mapping[str, Any]
    location: Location

    @property
    def is_catch_all(self) -> bool:
        return self.when.kind is ConditionKind.ALWAYS


@dataclass(frozen=True, slots=True)
class SchemaVersionSource:
    """Where a request names its schema version: an AMQP header first, then a body field."""

    header: str | None
    field: FieldPath | None


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    pointer: str
    keyword: str
    message: str


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    version: str
    file: Path
    document: Mapping[str, Any]
    location: Location
    # is_valid is the hot path; errors() only runs for requests that failed it.
    is_valid: Callable[[Any], bool]
    # (body, limit) -> (its first `limit` errors, how many it has in all)
    errors: Callable[[Any, int], tuple[tuple[ErrorDetail, ...], int]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int
    max_depth: int
    max_reasons: int


@dataclass(frozen=True, slots=True)
class RouteTable:
    path: Path
    content_hash: str
    # In order; a publisher puts each request on the first that accepts it, the last takes
    # the rest. The daemon consumes every one of them.
    sources: tuple[Source, ...]
    limits: Limits
    schema_version: SchemaVersionSource
    schemas: Mapping[str, Schema]  # keyed by version text ("1", "2")
    targets: Mapping[str, Target]
    rules: tuple[Rule, ...]
    unmatched: Target | None
    rejected: Target
    # Files the table was built from, so the reloader knows what to watch.
    files: tuple[Path, ...]
    # Raw parsed config with positions, kept for lint's static checks.
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    positions: Mapping[FieldPath, Location] = field(repr=False, default_factory=dict)
    # What `lint` warns about in the files this table was accepted from.
    warnings: tuple[Problem, ...] = ()
    # `rules` compiled for categorizing; rebuilt with every table, `replace` included.
    rule_index: RuleIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Imported here: the index is built from this module's classes.
        from routerd.config.rule_index import RuleIndex

        object.__setattr__(self, "rule_index", RuleIndex(self.rules))

    def target(self, name: str) -> Target:
        return self.targets[name]

    @property
    def source(self) -> Source:
        """The catch-all source: the only one of a config with `source:`."""
        return self.sources[-1]

    def source_named(self, queue: str) -> Source:
        """The source consuming `queue`; the catch-all for a queue the table does not name
        (a delivery of a table since reloaded away cannot be, as sources need a restart)."""
        for source in self.sources:
            if source.queue == queue:
                return source
        return self.source

    def source_for(self, ctx: MatchContext) -> Source:
        """Where a publisher puts this request: the first source that accepts it."""
        for source in self.sources:
            if source.takes(ctx):
                return source
        return self.source
