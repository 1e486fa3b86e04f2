"""Choosing the schema by version and validating against it, collecting every error."""

from __future__ import annotations

from typing import Any

from routerd.config.model import RouteTable, Schema
from routerd.config.paths import MISSING, resolve
from routerd.pipeline.envelope import Envelope, Reason


def schema_version(table: RouteTable, envelope: Envelope, body: dict[str, Any]) -> str | Reason:
    """The version the request says it follows (header first, then body field), as text."""
    source = table.schema_version
    value: Any = MISSING
    where = ""
    if source.header is not None and source.header in envelope.headers:
        value, where = envelope.headers[source.header], f"header {source.header}"
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
    elif source.field is not None:
        value, where = resolve(body, source.field), "field " + ".".join(map(str, source.field))
    if value is MISSING or value is None:
        said = " or ".join(
            x
            for x in (
                f"header {source.header}" if source.header else "",
                "field " + ".".join(map(str, source.field)) if source.field else "",
            )
            if x
        )
        return Reason("missing_schema_version", f"no schema version given ({said})")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return Reason(
            "unknown_schema_version", f"schema version in {where} must be a number, got {value!r}"
        )
    version = str(value)
    if version not in table.schemas:
        known = ", ".join(sorted(table.schemas))
        return Reason(
            "unknown_schema_version",
            f"schema version {version!r} is not supported (supported: {known})",
        )
    return version


def validate(schema: Schema, body: dict[str, Any], max_reasons: int) -> tuple[Reason, ...]:
    """Every validation error as a reason with its JSON pointer and keyword; () when valid."""
    if schema.is_valid(body):
        return ()
    errors = schema.errors(body)
    reasons = [
        Reason("schema_violation", e.message, pointer=e.pointer, keyword=e.keyword)
        for e in errors[:max_reasons]
    ]
    if len(errors) > max_reasons:
        reasons.append(
            Reason(
                "too_many_errors", f"{len(errors) - max_reasons} more validation errors not listed"
            )
        )
    if not reasons:
        # The fast validator said invalid but listed nothing; never accept on that.
        reasons.append(
            Reason(
                "schema_violation",
                f"request does not satisfy schema {schema.name} v{schema.version}",
            )
        )
    return tuple(reasons)
