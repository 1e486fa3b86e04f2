"""Choosing the schema by version and validating against it, collecting every error."""

from __future__ import annotations

from typing import Any

from routerd.config.model import RouteTable, Schema
from routerd.config.paths import MISSING, resolve
from routerd.pipeline.envelope import Envelope, Reason, ReasonCode

# Messages quote the offending value; a customer needs its start and what is wrong with
# it, not a megabyte of text read back.
MAX_MESSAGE_CHARS = 300


def schema_version(table: RouteTable, envelope: Envelope, body: dict[str, Any]) -> str | Reason:
    """The version the request says it follows (header first, then body field), as text."""
    source = table.schema_version
    value: Any = MISSING
    where = ""
    if source.header is not None and source.header in envelope.headers:
        value, where = envelope.headers[source.header], f"header {source.header}"
        if isinstance(value, bytes | bytearray):
            value = value.decode("utf-8", "replace")
    elif source.field is not None:
        value, where = resolve(body, source.field), "field " + ".".join(map(str, source.field))
    if isinstance(value, str):
        version = str(value)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**64:
        version = str(int(value))
    elif value is MISSING or value is None:
        said = " or ".join(
            x
            for x in (
                f"header {source.header}" if source.header else "",
                "field " + ".".join(map(str, source.field)) if source.field else "",
            )
            if x
        )
        return Reason(ReasonCode.MISSING_SCHEMA_VERSION, f"no schema version given ({said})")
    elif isinstance(value, float) and value.is_integer():
        # JSON does not tell 1 from 1.0, and neither do the schemas' `const: 1`.
        version = str(int(value))
    else:
        return Reason(
            ReasonCode.UNKNOWN_SCHEMA_VERSION,
            f"schema version in {where} must be a whole number or text, got {_shown(value)}",
        )
    if version not in table.schemas:
        known = ", ".join(sorted(table.schemas))
        return Reason(
            ReasonCode.UNKNOWN_SCHEMA_VERSION,
            f"schema version {_shown(version)} is not supported (supported: {known})",
        )
    return version


def validate(schema: Schema, body: dict[str, Any], max_reasons: int) -> tuple[Reason, ...]:
    """Every validation error as a reason with its JSON pointer and keyword; () when valid."""
    if schema.is_valid(body):
        return ()
    errors, total = schema.errors(body, max_reasons)
    reasons = [
        Reason(
            ReasonCode.SCHEMA_VIOLATION,
            _brief(e.message),
            # A key of the body may be long; its pointer, like a message, is for reading.
            pointer=_brief(e.pointer) if e.pointer is not None else None,
            keyword=e.keyword,
        )
        for e in errors
    ]
    if total > max_reasons:
        reasons.append(
            Reason(
                ReasonCode.TOO_MANY_ERRORS,
                f"{total - max_reasons} more validation errors not listed",
            )
        )
    if not reasons:
        # The fast validator said invalid but listed nothing; never accept on that.
        reasons.append(
            Reason(
                ReasonCode.SCHEMA_VIOLATION,
                f"request does not satisfy schema {schema.name} v{schema.version}",
            )
        )
    return tuple(reasons)


def _shown(value: Any) -> str:
    try:
        return _brief(repr(value))
    except Exception:  # a huge int or an odd header value that cannot show itself
        return f"a value of type {type(value).__name__}"


def _brief(text: str) -> str:
    """`text` cut in the middle when too long: the start names the value, the end says
    what is wrong with it."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    keep = (MAX_MESSAGE_CHARS - 5) // 2
    return f"{text[:keep]} ... {text[-keep:]}"
