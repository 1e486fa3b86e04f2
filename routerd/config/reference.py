"""The reference validator: the Python `jsonschema` package, with ECMA-262 regexes.

`jsonschema` matches `pattern` and the names in `patternProperties` with Python's `re`, a
different dialect from the one the standard (and routerd's validator) uses: `$` before a
final newline, `\\d` on Bengali digits, `\\w` on "é". The differential tests and the
benchmark compare routerd with this reference, so its regex keywords match through
`routerd.config.regex` like everything else; the rest is `jsonschema` as it ships.

`unevaluatedProperties` still matches `patternProperties` names with `re`: `jsonschema`
offers no hook there, and no shipped schema combines the two.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import attrs
import jsonschema
import jsonschema.validators
from jsonschema.exceptions import ValidationError

from routerd.config.regex import compile_regex

Validator = Any  # a jsonschema validator instance; its classes are built dynamically


@functools.cache
def reference_validator_class(cls: Any) -> Any:
    """`cls` (a `jsonschema` draft validator class) with ECMA-262 regex keywords."""
    extended = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        cls,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
    extended.evolve = _evolve
    extended.ECMA_REGEX = True
    return extended


def _evolve(self: Validator, **changes: Any) -> Validator:
    # `jsonschema` picks the class again for each subschema it descends into, by its
    # `$schema`: a `$ref` into another file would drop back to the stock class and its
    # Python regexes. The same steps as `jsonschema`'s own `evolve`, keeping ECMA-262.
    schema = changes.setdefault("schema", self.schema)
    found = jsonschema.validators.validator_for(schema, default=type(self))
    new_class = found if getattr(found, "ECMA_REGEX", False) else reference_validator_class(found)
    for attribute in attrs.fields(type(self)):
        if attribute.init and attribute.alias not in changes:
            changes[attribute.alias] = getattr(self, attribute.name)
    return new_class(**changes)


def _search(pattern: str, text: str) -> bool:
    return compile_regex(pattern).search(text)


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        name
        for name in instance
        if name not in properties and not any(_search(p, name) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(each) for each in sorted(extras))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            shown = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{names} {verb} not match any of the regexes: {shown}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({names} {verb} unexpected)"
            )
