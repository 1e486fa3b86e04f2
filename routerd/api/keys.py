"""Customers' API keys: read from a file that holds only their sha256 hashes.

The file maps each customer id to the list of its keys' hashes (YAML or JSON):

```yaml
cus-42:
  - "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
```

A key is never stored: `hash_key` (or `printf '%s' "$KEY" | sha256sum`) gives the hash to
write there. The customer id a request is sent for comes from its key, never from the body.
`routerd api` reads the file again when it changes (`KeysFile`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

log = logging.getLogger(__name__)

_HASH = re.compile(r"[0-9a-f]{64}")


class KeysError(ValueError):
    """The keys file cannot be used; names the file, the customer and the value."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"API keys file {self.path}: {self.problem}"


def hash_key(key: str) -> str:
    """What the keys file stores for `key`: its sha256, in lowercase hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyStore:
    """Key hash -> customer id; built once when the API starts."""

    customers: Mapping[str, str]

    def customer_of(self, key: str) -> str | None:
        """The customer `key` belongs to, or None for a key nobody holds."""
        return self.customers.get(hash_key(key))

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeysError(path, f"cannot read it: {exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KeysError(path, f"not YAML or JSON: {exc}") from None
        return cls.from_mapping(data, path)

    @classmethod
    def from_mapping(cls, data: object, path: Path) -> KeyStore:
        if not isinstance(data, Mapping):
            raise KeysError(path, "expected a mapping of customer id to a list of key hashes")
        customers: dict[str, str] = {}
        for customer, hashes in data.items():
            if not isinstance(customer, str) or not customer:
                raise KeysError(path, f"customer id {customer!r} is not a non-empty string")
            if not isinstance(hashes, list):
                raise KeysError(path, f"customer {customer!r}: expected a list of key hashes")
            for digest in hashes:
                if not isinstance(digest, str) or not _HASH.fullmatch(digest):
                    raise KeysError(
                        path,
                        f"customer {customer!r}: {digest!r} is not a sha256 hex digest "
                        "(64 lowercase hex characters, quoted; routerd.api.hash_key makes one)",
                    )
                owner = customers.setdefault(digest, customer)
                if owner != customer:
                    raise KeysError(
                        path, f"the key hash {digest[:12]}... belongs to {owner!r} and {customer!r}"
                    )
        return cls(customers)


class Customers(Protocol):
    """What the API asks of its keys: whose key this is."""

    def customer_of(self, key: str) -> str | None: ...


# How often a lookup may look at the keys file: one stat a second costs nothing, and a
# rotated key works within a second of being written.
RECHECK_SECONDS = 1.0


class KeysFile:
    """The keys file, read again when it changes, so keys rotate without a restart.

    A lookup stats the file at most once per `RECHECK_SECONDS` (following symlinks, so a
    Kubernetes Secret volume's swap shows too); a changed file is loaded whole. A file that
    became unreadable or invalid keeps the keys loaded before, and says so in the log once
    per change, so a bad edit never locks every customer out.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._seen = self._fingerprint()
        self.store = KeyStore.load(path)
        self._checked = clock()

    def customer_of(self, key: str) -> str | None:
        now = self._clock()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            self._reload_if_changed()
        return self.store.customer_of(key)

    def _fingerprint(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload_if_changed(self) -> None:
        seen = self._fingerprint()
        if seen == self._seen:
            return
        self._seen = seen
        try:
            store = KeyStore.load(self.path)
        except KeysError as exc:
            log.error("keeping the API keys loaded before: %s", exc)
            return
        self.store = store
        log.info(
            "API keys reloaded",
            extra={"keys_file": str(self.path), "customers": len(set(store.customers.values()))},
        )
