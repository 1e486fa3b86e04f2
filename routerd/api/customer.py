"""Putting the key's customer into a send request: the body never chooses its customer.

Where the customer id lives depends on the schema version (v1 `customer_id`, v2
`account.id`). A body that names no customer gets the key's; one that names another
customer is refused (400 `customer_mismatch`) rather than silently rewritten, since a
request sent with the wrong account's key is a caller's bug worth seeing. A version the API
cannot place a customer in is refused too: nothing is published for a customer it did not
check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Schema version -> the path of the customer id in the body.
CUSTOMER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "1": ("customer_id",),
    "2": ("account", "id"),
}


class CustomerRefused(Exception):
    """Why a body cannot be sent for the key's customer, as a reason dict for a 400."""

    def __init__(self, code: str, message: str, pointer: str) -> None:
        self.code = code
        self.message = message
        self.pointer = pointer
        super().__init__(message)

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "pointer": self.pointer}


def with_customer(body: dict[str, Any], customer: str) -> dict[str, Any]:
    """`body` with the key's customer in the place its schema version keeps it.

    Raises `CustomerRefused` for a body that names another customer or whose version the
    API does not know. The caller's dict is not changed.
    """
    path = CUSTOMER_FIELDS.get(_version_text(body.get("schema_version")))
    if path is None:
        known = ", ".join(CUSTOMER_FIELDS)
        if "schema_version" not in body:
            raise CustomerRefused(
                "missing_schema_version", f"schema_version is required ({known})", ""
            )
        raise CustomerRefused(
            "unknown_schema_version",
            f"schema_version {body['schema_version']!r} is not one this API sends ({known})",
            "/schema_version",
        )
    out = dict(body)
    parent = out
    for name in path[:-1]:
        child = parent.get(name)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            # Left as it is: the schema check reports the wrong type with its pointer.
            return out
        parent[name] = child = dict(child)
        parent = child
    leaf = path[-1]
    named = parent.get(leaf)
    if named is not None and named != customer:
        raise CustomerRefused(
            "customer_mismatch",
            f"the body names customer {named!r}, the API key belongs to another customer; "
            f"leave the field out, the API fills it in",
            "/" + "/".join(path),
        )
    parent[leaf] = customer
    return out


def _version_text(value: object) -> str:
    # bool is an int in Python; `true` is not version 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else ""
