"""The validator of one request schema: jsonschema-rs, with regexes on the linear engine.

What the loader compiles here is what the pipeline runs: `is_valid` on every request, the
error listing only for those that failed it. Regexes (`pattern`, `patternProperties`) run
as ECMA-262 on a linear-time engine (see `routerd.config.regex`), as the JSON Schema
standard says and so that no request can stall a replica. Formats are annotations, as the
2020-12 standard has them by default: no `format` is asserted.

jsonschema-rs leaves empty property names (`""`) out of an error's instance path, so for
the rare invalid request that holds one, the errors come from its standard output format
(`evaluate`), whose instance locations are right, one error per failed leaf keyword.

Listing errors must not cost more than a hostile body allows: `iter_errors` builds every
error before it yields the first (a 1 MiB array of 350,000 `{}` items where each needs an
"email" made 350,000 error objects in 3.8 s, and formatting them took as long again). So
`evaluate`, about 15 times cheaper per error, counts them first; only up to
`ITER_ERRORS_BOUND` errors are listed by `iter_errors`, whose messages the rest of routerd
(and its route tests) are written against, and only the first `limit` are ever formatted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema_rs

from routerd.config.hints import readable_message
from routerd.config.model import ErrorDetail, Location, Problem
from routerd.config.paths import at_pointer, pointer, unescape
from routerd.config.regex import LINEAR_ENGINE
from routerd.config.schemas import SchemaSet, check_document

IsValid = Callable[[Any], bool]
# (instance, limit) -> (the first `limit` errors, how many there are in all)
Errors = Callable[[Any, int], tuple[tuple[ErrorDetail, ...], int]]

ITER_ERRORS_BOUND = 1000


def compile_schema(
    schemas: SchemaSet,
    uri: str,
    location: Location,
    problems: list[Problem],
    sound: dict[str, bool] | None = None,
) -> tuple[IsValid, Errors] | None:
    """Check the schema at `uri` and every document it reaches, then compile it; None, with
    the problems appended, when it cannot be used. `sound` remembers documents already
    checked, so each file is checked once however many configured schemas reach it."""
    sound = {} if sound is None else sound
    for reached in schemas.reachable(uri):
        if reached not in sound:
            sound[reached] = check_document(schemas, reached, problems)
    if not all(sound[reached] for reached in schemas.reachable(uri)):
        return None
    return compile_validator(schemas, uri, location, problems)


def compile_validator(
    schemas: SchemaSet, uri: str, location: Location, problems: list[Problem], fragment: str = ""
) -> tuple[IsValid, Errors] | None:
    """The fast validator's `is_valid` and error listing for one schema file (or, with
    `fragment`, one subschema of it)."""
    try:
        registry = jsonschema_rs.Registry(
            [(u, schemas.documents[u].data) for u in schemas.reachable(uri)],
            retriever=_refuse,
        )
        validator = jsonschema_rs.validator_for(
            {"$ref": f"{uri}#{fragment}"} if fragment else schemas.documents[uri].data,
            registry=registry,
            base_uri=uri,
            validate_formats=False,
            offline=True,
            pattern_options=LINEAR_ENGINE,
        )
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        problems.append(
            Problem(
                location,
                "error",
                f"schema does not compile: {str(exc).splitlines()[0]}",
                "schema-invalid",
            )
        )
        return None

    def errors(instance: Any, limit: int) -> tuple[tuple[ErrorDetail, ...], int]:
        found = validator.evaluate(instance).errors()
        if has_empty_name(instance) or len(found) > ITER_ERRORS_BOUND:
            return tuple(
                ErrorDetail(
                    error["instanceLocation"],
                    unescape(error["schemaLocation"].rsplit("/", 1)[-1]),
                    readable_message(
                        error["error"], at_pointer(instance, error["instanceLocation"])
                    ),
                )
                for error in found[:limit]
            ), len(found)
        listed = list(validator.iter_errors(instance))
        return tuple(
            ErrorDetail(
                pointer(e.instance_path),
                str(e.schema_path[-1]) if e.schema_path else "",
                _message(e),
            )
            for e in listed[:limit]
        ), len(listed)

    return validator.is_valid, errors


def has_empty_name(value: Any) -> bool:
    """Whether any object inside `value` has the property name ""."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "" in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _message(error: Any) -> str:
    """anyOf/oneOf name what each alternative wanted instead of 'not valid under any'."""
    kind = error.kind
    if isinstance(
        kind,
        jsonschema_rs.ValidationErrorKind.AnyOf | jsonschema_rs.ValidationErrorKind.OneOfNotValid,
    ):
        branches = kind.context
        if branches and all(
            len(b) == 1 and isinstance(b[0].kind, jsonschema_rs.ValidationErrorKind.Required)
            for b in branches
        ):
            names = [_quoted(getattr(b[0].kind, "property", "")) for b in branches]
            if len(names) == 1:
                return f"needs the property {names[0]}"
            return f"needs one of the properties {', '.join(names[:-1])} or {names[-1]}"
        if branches:
            wanted = "; or ".join(
                readable_message(b[0].message, b[0].instance) for b in branches if b
            )
            return readable_message(f"matches none of the allowed forms: {wanted}", None)
    return readable_message(error.message, error.instance)


def _quoted(text: Any) -> str:
    return json.dumps(text, ensure_ascii=False)


def _refuse(uri: str) -> Any:
    raise ValueError(f"routerd does not fetch {uri}")
