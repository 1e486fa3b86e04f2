"""What a request schema says about one field path: may a valid request have it, must it,
and which JSON types can its value take.

`lint` asks this about every field a routing key, a partition or a condition uses. The answer
is exact for what routerd's schemas use (`properties`, `required`, `additionalProperties`,
`items`, `$ref`, `allOf`, `anyOf`, `oneOf`) and errs towards "undeclared" (no claim either
way) for the rest, so a check built on it never reports a problem that is not there.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from routerd.config.paths import FieldPath
from routerd.config.regex import RegexError, compile_regex
from routerd.config.schemas import SchemaSet

# required: every valid request has it; optional: declared, may be absent; undeclared: the
# schema neither declares nor forbids it; forbidden: no valid request can have it.
Presence = Literal["required", "optional", "undeclared", "forbidden"]
# A subschema with the resolver its `$ref`s resolve against.
Sub = tuple[Any, Any]

ALL_TYPES = frozenset({"string", "integer", "number", "boolean", "null", "object", "array"})
# A schema can nest anyOf inside anyOf; past this much work the answer is "undeclared".
_BUDGET = 5_000
_MAX_REF_DEPTH = 32


@dataclass(frozen=True, slots=True)
class FieldFacts:
    presence: Presence
    # The JSON types the value can have (None: any); "number" here means a non-integer.
    types: frozenset[str] | None = None


_UNKNOWN = FieldFacts("undeclared")
_FORBIDDEN = FieldFacts("forbidden", frozenset())


class FieldOracle:
    """Answers for one schema file; the answers are cached, schemas do not change."""

    def __init__(self, schemas: SchemaSet, uri: str) -> None:
        self._root: Sub = (schemas.documents[uri].data, schemas.registry.resolver(base_uri=uri))
        self._cache: dict[FieldPath, FieldFacts] = {}
        # Lint asks this for every rule and every version: 500 rules on 200 schemas is 10^5
        # questions about a handful of paths.
        self._allowed: dict[FieldPath, list[Any] | None] = {}
        self._spent = 0

    def facts(self, path: FieldPath) -> FieldFacts:
        if path not in self._cache:
            self._spent = 0
            try:
                self._cache[path] = self._facts([], [self._root], [], path, 0)
            except _OverBudget:
                self._cache[path] = _UNKNOWN
        return self._cache[path]

    def _facts(
        self,
        plain: list[Sub],
        pending: list[Sub],
        disjunctions: list[list[Sub]],
        path: FieldPath,
        depth: int,
    ) -> FieldFacts:
        self._spent += 1
        if self._spent > _BUDGET or depth > _MAX_REF_DEPTH:
            raise _OverBudget
        plain, disjunctions = [*plain], [*disjunctions]
        for sub in pending:
            _expand(sub, plain, disjunctions, 0)
        if disjunctions:
            # Distribute: (A and (B or C)) is (A and B) or (A and C), so each branch is
            # judged together with everything it is combined with.
            first, rest = disjunctions[0], disjunctions[1:]
            return _disjoin(
                [self._facts(plain, [branch], rest, path, depth + 1) for branch in first]
            )
        if not path:
            return FieldFacts("required", _types(plain))
        key, rest_path = path[0], path[1:]
        step = _step(plain, key)
        if step.presence == "forbidden":
            return _FORBIDDEN
        if not step.children:
            return _UNKNOWN
        child = self._facts([], step.children, [], rest_path, depth + 1)
        if child.presence == "forbidden":
            return _FORBIDDEN
        if step.presence == "undeclared" or child.presence == "undeclared":
            return FieldFacts("undeclared", child.types)
        required = step.presence == "required" and child.presence == "required"
        return FieldFacts("required" if required else "optional", child.types)

    def allowed_values(self, path: FieldPath) -> list[Any] | None:
        """The only values the schema lets the field at `path` hold (its `enum`/`const`),
        or None when it lets it hold others too. Every branch of an anyOf/oneOf must
        restrict it, else nothing can be concluded. Callers must not change the list."""
        if path not in self._allowed:
            self._allowed[path] = self._allowed_values(path)
        return self._allowed[path]

    def _allowed_values(self, path: FieldPath) -> list[Any] | None:
        subs = [self._root]
        for key in path:
            subs = [child for sub in subs for child in _children_at(sub, key)]
            if not subs:
                return None
        allowed: list[Any] | None = None
        for sub in subs:
            plain: list[Sub] = []
            disjunctions: list[list[Sub]] = []
            _expand(sub, plain, disjunctions, 0)
            own = _restriction(plain)
            for branches in disjunctions:
                found = [_restriction(_expanded(branch)) for branch in branches]
                if all(f is not None for f in found):
                    union = [v for f in found if f is not None for v in f]
                    own = union if own is None else [v for v in own if _among(v, union)]
            if own is None:
                return None
            allowed = own if allowed is None else [v for v in allowed if _among(v, own)]
        return allowed

    def names(self, path: FieldPath) -> frozenset[str]:
        """Property names the schema declares for the object at `path`, in any branch:
        what a misspelt field was probably meant to be."""
        subs = [self._root]
        for key in path:
            subs = [child for sub in subs for child in _children_at(sub, key)]
        return frozenset(
            name
            for sub in subs
            for node, _ in _flattened(sub)
            if isinstance(node, dict) and isinstance(node.get("properties"), dict)
            for name in node["properties"]
        )


class _OverBudget(Exception):
    pass


def same(a: Any, b: Any) -> bool:
    """Equality without Python's `True == 1` and `1 == 1.0` surprises across types."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def same_key(value: Any) -> Hashable | None:
    """A dict key for `value`: two values get equal keys exactly when `same` says they are
    equal. None for a value no key stands for (a list, an object, NaN)."""
    kind = type(value)
    if kind is str:
        text: str = value
        return text  # the common case costs no tuple; other keys are tuples
    if kind is bool:
        return ("boolean", value)
    if kind is int or kind is float:
        # 2 and 2.0 are `same`, and Python hashes them alike; NaN equals nothing.
        return ("number", value) if value == value else None
    if value is None:
        return ("null",)
    return None


def _among(value: Any, values: list[Any]) -> bool:
    return any(same(value, v) for v in values)


def _expanded(sub: Sub) -> list[Sub]:
    plain: list[Sub] = []
    _expand(sub, plain, [], 0)
    return plain


def _flattened(sub: Sub) -> list[Sub]:
    """`sub` with its `$ref`s and allOf followed, and every anyOf/oneOf branch."""
    plain: list[Sub] = []
    disjunctions: list[list[Sub]] = []
    _expand(sub, plain, disjunctions, 0)
    return plain + [branch for branches in disjunctions for branch in branches]


def _children_at(sub: Sub, key: str | int) -> list[Sub]:
    """The subschemas that apply to `key` of the instance `sub` describes, in any branch."""
    children: list[Sub] = []
    for node, resolver in _flattened(sub):
        if not isinstance(node, dict):
            continue
        child = _item_schema(node, key) if isinstance(key, int) else _property_schema(node, key)
        if isinstance(child, dict):
            children.append((child, resolver))
    return children


def _restriction(plain: list[Sub]) -> list[Any] | None:
    """What `enum` and `const` in a conjunction of subschemas allow, None if unrestricted."""
    allowed: list[Any] | None = None
    for node, _ in plain:
        if not isinstance(node, dict):
            continue
        values: list[Any] | None = None
        if "const" in node:
            values = [node["const"]]
        elif isinstance(node.get("enum"), list):
            values = list(node["enum"])
        if values is not None:
            allowed = values if allowed is None else [v for v in allowed if _among(v, values)]
    return allowed


@dataclass(frozen=True, slots=True)
class _Step:
    presence: Presence
    children: list[Sub]


def _expand(sub: Sub, plain: list[Sub], disjunctions: list[list[Sub]], depth: int) -> None:
    """Flatten `$ref` and `allOf` (all must hold) into `plain`; keep anyOf/oneOf apart."""
    node, resolver = sub
    if depth > _MAX_REF_DEPTH:
        return
    plain.append(sub)
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        try:
            resolved = resolver.lookup(ref)
        except Exception:
            pass  # the loader reports it; here it just tells nothing
        else:
            _expand((resolved.contents, resolved.resolver), plain, disjunctions, depth + 1)
    for item in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
        _expand((item, resolver), plain, disjunctions, depth + 1)
    for keyword in ("anyOf", "oneOf"):
        branches = node.get(keyword)
        if isinstance(branches, list) and branches:
            disjunctions.append([(item, resolver) for item in branches])


def _step(plain: list[Sub], key: str | int) -> _Step:
    """What the conjunction of `plain` says about one key of the instance."""
    declared = required = False
    children: list[Sub] = []
    for node, resolver in plain:
        if node is False:
            return _Step("forbidden", [])
        if not isinstance(node, dict):
            continue
        types = _node_types(node)
        if isinstance(key, int):
            if types is not None and "array" not in types:
                return _Step("forbidden", [])
            item = _item_schema(node, key)
            if isinstance(node.get("minItems"), int) and node["minItems"] > key:
                required = True
        else:
            if types is not None and "object" not in types:
                return _Step("forbidden", [])
            item = _property_schema(node, key)
            if key in (node.get("required") or []):
                required = True
        if item is False:
            return _Step("forbidden", [])
        if item is not None:
            declared = True
            children.append((item, resolver))
    if not declared:
        return _Step("undeclared", [])
    return _Step("required" if required else "optional", children)


def _property_schema(node: dict[str, Any], key: str) -> Any:
    """The subschema a property named `key` must satisfy in this node, False if the node
    forbids it, None if the node says nothing about it."""
    properties = node.get("properties")
    if isinstance(properties, dict) and key in properties:
        return properties[key]
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict):
        for regex, schema in patterns.items():
            try:
                if compile_regex(regex).search(key):
                    return schema
            except RegexError:
                return None  # refused at load, with its own problem
    additional = node.get("additionalProperties")
    if additional is False or isinstance(additional, dict):
        return additional
    return None


def _item_schema(node: dict[str, Any], index: int) -> Any:
    prefix = node.get("prefixItems")
    items = node.get("items")
    if isinstance(prefix, list):
        return prefix[index] if index < len(prefix) else items
    if isinstance(items, list):  # drafts before 2020-12: a tuple of schemas
        return items[index] if index < len(items) else node.get("additionalItems")
    return items


def _node_types(node: dict[str, Any]) -> frozenset[str] | None:
    if "const" in node:
        return frozenset({json_type(node["const"])})
    if isinstance(node.get("enum"), list):
        return frozenset(json_type(v) for v in node["enum"])
    declared = node.get("type")
    if isinstance(declared, str):
        declared = [declared]
    if not isinstance(declared, list):
        return None
    names = {str(t) for t in declared}
    if "number" in names:
        names.add("integer")
    return frozenset(names & ALL_TYPES)


def _types(plain: list[Sub]) -> frozenset[str] | None:
    result: frozenset[str] | None = None
    for node, _ in plain:
        if node is False:
            return frozenset()
        types = _node_types(node) if isinstance(node, dict) else None
        if types is not None:
            result = types if result is None else result & types
    return result


def json_type(value: Any) -> str:
    """The JSON Schema type of a JSON value; "number" for a non-integer, as `FieldFacts`."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _disjoin(branches: list[FieldFacts]) -> FieldFacts:
    possible = [b for b in branches if b.presence != "forbidden"]
    if not possible:
        return _FORBIDDEN
    types: frozenset[str] | None = frozenset()
    for b in possible:
        types = None if types is None or b.types is None else types | b.types
    if all(b.presence == "required" for b in branches):
        return FieldFacts("required", types)
    if any(b.presence in ("required", "optional") for b in possible):
        return FieldFacts("optional", types)
    return FieldFacts("undeclared", types)
