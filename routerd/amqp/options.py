"""The broker connection's options: one object, built once by the settings, passed whole.

The AMQP URL is the configuration surface, with the query keys aiormq reads::

    amqps://user:password@broker:5671/vhost?heartbeat=10&cafile=/tls/ca.pem&certfile=/tls/cert.pem&keyfile=/tls/key.pem

`BrokerOptions.from_url` reads them once, checks them (aiormq quietly turns a heartbeat it
cannot parse into "no heartbeat", and ignores TLS files on an `amqp://` URL), and
`client_url()` writes the options back into the URL aiormq connects with, so the options
object is the one truth. Keys routerd does not own (`capath`, `cadata`, `no_verify_ssl`,
`auth`) reach aiormq as they were written.

A RabbitMQ cluster is several such URLs, one per node, separated by commas::

    amqp://routerd:secret@rabbit-1:5672/,amqp://routerd:secret@rabbit-2:5672/

Each connection attempt tries them all, in a fresh random order (so that replicas spread
over the nodes and a dead node is skipped), before the reconnect backoff. The query keys
routerd owns must say the same in every URL: one process has one heartbeat and one TLS
identity, whichever node it reaches.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from routerd.observe.logs import redact_url

# Seconds. aiormq's own default is 60, and it gives up on a silent connection only after
# 3 x (heartbeat + 1) seconds: a black-holed connection (bytes accepted, nothing answered)
# went unnoticed for minutes. 10 s finds it in 33-38 s on routerd's side, while the broker
# drops it (and requeues its unacked deliveries) after two missed beats, 20 s; RabbitMQ
# advises 5-20 s, lower values risk false alarms.
DEFAULT_HEARTBEAT = 10
# Seconds for one connection attempt (TCP, TLS and the AMQP handshake): a broker that does
# not answer must not hold up the reconnect loop or a stop.
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_PUBLISH_TIMEOUT = 10.0
DEFAULT_RECONNECT_MIN = 0.5
DEFAULT_RECONNECT_MAX = 30.0

# Query keys (aiormq's names) that these options own: read by `from_url`, written back by
# `client_url`. `timeout` is aio-pika's and aiormq's name for the connection timeout.
HEARTBEAT, TIMEOUT, NAME = "heartbeat", "timeout", "name"
CAFILE, CERTFILE, KEYFILE = "cafile", "certfile", "keyfile"
_OWNED = frozenset({HEARTBEAT, TIMEOUT, NAME, CAFILE, CERTFILE, KEYFILE})
# The AMQP frame's heartbeat field is 16 bits; aiormq takes 0..65534.
_MAX_HEARTBEAT = 65534


class BrokerOptionsError(ValueError):
    """A query key of the AMQP URL has a value routerd cannot use; names the key and the fix."""

    def __init__(self, key: str, value: str, problem: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.key}={self.value}: {self.problem}"


# A comma starts the next URL only where a scheme follows: a comma in a password stays put,
# and a mistyped scheme is still split off, to be reported as such.
_NEXT_URL = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


def split_urls(text: str) -> list[str]:
    """`amqp://a/,amqp://b/` -> each broker URL, in the order given."""
    return [piece for piece in _NEXT_URL.split(text.strip()) if piece]


def redact_urls(text: str) -> str:
    """Every URL of a (comma-separated) list with its password replaced by ***."""
    return ",".join(redact_url(url) for url in split_urls(text)) or redact_url(text)


def default_connection_name() -> str:
    # Shown by the broker's management UI and rabbitmqctl: which replica a connection is.
    return f"routerd {socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Everything that decides how routerd connects to the broker and talks to it."""

    # As given (one URL, or one per cluster node separated by commas), queries included.
    # Kept out of repr: it may carry the password.
    url: str = field(repr=False)
    connection_name: str = field(default_factory=default_connection_name)
    heartbeat: int = DEFAULT_HEARTBEAT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX
    # TLS (amqps:// only): the CA bundle to verify the broker with (the system's when
    # None), and the client certificate and its key for brokers that ask for one.
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        reconnect_min: float = DEFAULT_RECONNECT_MIN,
        reconnect_max: float = DEFAULT_RECONNECT_MAX,
    ) -> BrokerOptions:
        """The options an AMQP URL (or a comma-separated list of them) states; raises
        `BrokerOptionsError` for a bad query value or URLs that disagree on one."""
        urls = split_urls(url)
        each = [
            cls._from_one(
                one,
                publish_timeout=publish_timeout,
                reconnect_min=reconnect_min,
                reconnect_max=reconnect_max,
            )
            for one in urls or [url]
        ]
        first = each[0]
        for other in each[1:]:
            for key, mine, theirs in _differences(first, other):
                raise BrokerOptionsError(
                    key,
                    str(theirs),
                    f"{redact_url(other.url)} says {theirs} but {redact_url(first.url)} says "
                    f"{mine}: give every broker URL the same {key}",
                )
        return cls(**{**_fields(first), "url": url})

    @classmethod
    def _from_one(
        cls,
        url: str,
        *,
        publish_timeout: float,
        reconnect_min: float,
        reconnect_max: float,
    ) -> BrokerOptions:
        parts = urlsplit(url)
        query = _query(parts.query)
        files = {key: query[key] or None for key in (CAFILE, CERTFILE, KEYFILE) if key in query}
        named = [key for key, value in files.items() if value]
        if named and parts.scheme != "amqps":
            raise BrokerOptionsError(
                named[0], query[named[0]], "TLS files need an amqps:// URL (amqp:// ignores them)"
            )
        if files.get(KEYFILE) and not files.get(CERTFILE):
            raise BrokerOptionsError(
                KEYFILE, query[KEYFILE], "a key needs its certificate: add certfile=..."
            )
        options: dict[str, Any] = {
            "url": url,
            "publish_timeout": publish_timeout,
            "reconnect_min": reconnect_min,
            "reconnect_max": reconnect_max,
            "cafile": files.get(CAFILE),
            "certfile": files.get(CERTFILE),
            "keyfile": files.get(KEYFILE),
        }
        if HEARTBEAT in query:
            options["heartbeat"] = _heartbeat(query[HEARTBEAT])
        if TIMEOUT in query:
            options["connect_timeout"] = _timeout(query[TIMEOUT])
        if query.get(NAME):
            options["connection_name"] = query[NAME]
        return cls(**options)

    @property
    def urls(self) -> tuple[str, ...]:
        """One URL per broker (cluster node), in the order given."""
        return tuple(split_urls(self.url)) or (self.url,)

    @property
    def tls(self) -> bool:
        return urlsplit(self.urls[0]).scheme == "amqps"

    @property
    def redacted_url(self) -> str:
        """The URL(s) as they may appear in logs and errors: each password replaced by ***."""
        return redact_urls(self.url)

    @property
    def tls_files(self) -> dict[str, str]:
        """The TLS files named, by their query key."""
        named = {CAFILE: self.cafile, CERTFILE: self.certfile, KEYFILE: self.keyfile}
        return {key: path for key, path in named.items() if path}

    def client_url(self, url: str | None = None) -> str:
        """The URL aiormq connects with: the given one (by default the first of `urls`), its
        owned query keys from these options.

        The connection name is not in it: it goes to the broker as a client property.
        """
        parts = urlsplit(self.urls[0] if url is None else url)
        # Unowned pieces are kept byte for byte: re-encoding could change what aiormq reads.
        kept = [
            piece
            for piece in parts.query.split("&")
            if piece and unquote_plus(piece.split("=", 1)[0]) not in _OWNED
        ]
        owned = {HEARTBEAT: str(self.heartbeat), **self.tls_files}
        kept += [f"{key}={quote(value, safe='/')}" for key, value in owned.items()]
        return urlunsplit(parts._replace(query="&".join(kept)))

    def describe(self) -> dict[str, Any]:
        """The options as they may be logged: no password."""
        return {
            "amqp_url": self.redacted_url,
            "connection_name": self.connection_name,
            "heartbeat": self.heartbeat,
            "connect_timeout": self.connect_timeout,
            "publish_timeout": self.publish_timeout,
            "reconnect_min": self.reconnect_min,
            "reconnect_max": self.reconnect_max,
            "tls": self.tls,
            **self.tls_files,
        }


def _stated(options: BrokerOptions) -> dict[str, Any]:
    # What two URLs of one list must agree on: the options their queries state.
    return {
        "scheme": urlsplit(options.url).scheme,
        HEARTBEAT: options.heartbeat,
        TIMEOUT: options.connect_timeout,
        NAME: options.connection_name,
        CAFILE: options.cafile,
        CERTFILE: options.certfile,
        KEYFILE: options.keyfile,
    }


def _differences(first: BrokerOptions, other: BrokerOptions) -> list[tuple[str, Any, Any]]:
    mine, theirs = _stated(first), _stated(other)
    return [(key, mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]]


def _fields(options: BrokerOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in BrokerOptions.__dataclass_fields__}


def _query(text: str) -> dict[str, str]:
    """The URL's query keys and values, decoded as aiormq's URL parser does; first one wins."""
    out: dict[str, str] = {}
    for piece in text.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        out.setdefault(unquote_plus(key), unquote_plus(value))
    return out


def _heartbeat(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= _MAX_HEARTBEAT:
        raise BrokerOptionsError(
            HEARTBEAT,
            value,
            f"use whole seconds, 0..{_MAX_HEARTBEAT} (0 turns heartbeats off; "
            f"routerd's default is {DEFAULT_HEARTBEAT})",
        )
    return seconds


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BrokerOptionsError(
            TIMEOUT, value, "the connection timeout must be a positive number of seconds"
        )
    return seconds
