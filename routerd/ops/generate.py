"""Synthetic v1 send requests with a production-like mix, for `routerd send --generate`,
benchmarks and tests. Pure: no I/O, no clock; the same `seed` gives the same requests.

The mix (`Mix`):
- customers are drawn from a Zipf-like distribution over `customers` ranks (weight of rank r
  is 1/r**skew), so a few heavy senders dominate the traffic, as bulk senders do;
- a share of requests is on the `broadcast` stream, a share has more than 50 recipients in
  to+cc+bcc (both routed to bulk by the shipped rules), a share carries a security tag
  (`password-reset`, `2fa`: transactional with high priority);
- bodies vary from a short text to tens of KB of HTML, a few carry an attachment;
- a share is invalid, each broken in one of the ways `Flaw` names (every one a schema
  violation routerd rejects).

Each request comes with what the shipped rules should decide for it (`Expected`), so a
test can count every request in its queue.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SECURITY_TAGS = ("password-reset", "2fa")
TAGS = ("receipt", "welcome", "newsletter", "promo", "invoice", "digest", "reminder")
# More than this many recipients in to+cc+bcc routes to bulk (the shipped rule `bulk`).
BULK_RECIPIENTS = 50
MAX_LIST = 1000  # the schema's maxItems of to, cc and bcc


class Expected(StrEnum):
    """Where the shipped config should put a generated request."""

    TRANSACTIONAL = "transactional"
    BULK = "bulk"
    REJECTED = "rejected"


class Flaw(StrEnum):
    """How an invalid generated request is broken; each is a schema violation."""

    NO_RECIPIENTS = "no_recipients"
    EMPTY_TO = "empty_to"
    BAD_ADDRESS = "bad_address"
    LONG_SUBJECT = "long_subject"
    TOO_MANY_TAGS = "too_many_tags"
    NO_BODY = "no_body"
    UNKNOWN_FIELD = "unknown_field"
    CUSTOMER_NOT_TEXT = "customer_not_text"
    UNKNOWN_STREAM = "unknown_stream"


@dataclass(frozen=True, slots=True)
class Mix:
    """The shares of a generated stream; each share is a probability per request."""

    customers: int = 1000
    skew: float = 1.2
    broadcast: float = 0.15
    large: float = 0.05
    security: float = 0.05
    invalid: float = 0.05
    attachment: float = 0.03

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be at least 1, got {self.customers}")
        if self.skew < 0:
            raise ValueError(f"skew must not be negative, got {self.skew}")
        for name in ("broadcast", "large", "security", "invalid", "attachment"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"the {name} share must be between 0 and 1, got {share}")


@dataclass(frozen=True, slots=True)
class Generated:
    """One generated send request, its number in the stream and what should happen to it."""

    index: int
    request: dict[str, Any]
    expected: Expected
    flaw: Flaw | None = None

    @property
    def recipients(self) -> int:
        return sum(len(self.request.get(k) or ()) for k in ("to", "cc", "bcc"))


class Customers:
    """Customer ids by Zipf-like weight: rank r (from 1) is drawn with weight 1/r**skew."""

    def __init__(self, count: int, skew: float) -> None:
        self._cumulative = list(itertools.accumulate(1.0 / r**skew for r in range(1, count + 1)))

    def draw(self, rng: random.Random) -> str:
        point = rng.random() * self._cumulative[-1]
        rank = bisect.bisect_right(self._cumulative, point) + 1
        return customer_id(min(rank, len(self._cumulative)))


def customer_id(rank: int) -> str:
    return f"cus-{rank:05d}"


def generate(count: int, *, seed: int = 0, mix: Mix | None = None) -> Iterator[Generated]:
    """`count` requests, lazily: memory stays flat however many are asked for."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    mix = mix or Mix()
    rng = random.Random(seed)
    customers = Customers(mix.customers, mix.skew)
    for index in range(count):
        yield _one(rng, customers, mix, index)


def requests(count: int, *, seed: int = 0, mix: Mix | None = None) -> Iterator[dict[str, Any]]:
    """Only the request bodies of `generate`."""
    return (g.request for g in generate(count, seed=seed, mix=mix))


def _one(rng: random.Random, customers: Customers, mix: Mix, index: int) -> Generated:
    request: dict[str, Any] = {
        "schema_version": 1,
        # From the seeded generator: unique in a run, the same in a rerun with the seed.
        "message_id": f"gen-{rng.getrandbits(64):016x}-{index}",
        "customer_id": customers.draw(rng),
        "from": {"email": "noreply@shop.example", "name": "Shop"},
        "subject": f"Message {index}",
    }
    roll = rng.random()
    security = roll < mix.security
    # Security codes go to one person and are never broadcast: the shipped rules would
    # route them to transactional whatever the rest says.
    broadcast = not security and rng.random() < mix.broadcast
    large = not security and rng.random() < mix.large
    if broadcast:
        request["stream"] = "broadcast"
    elif rng.random() < 0.2:
        request["stream"] = "transactional"
    _recipients(rng, request, large)
    _content(rng, request, index)
    tags = list(rng.sample(TAGS, k=rng.randrange(3)))
    if security:
        tags.append(rng.choice(SECURITY_TAGS))
    if tags:
        request["tags"] = tags
    if rng.random() < 0.5:
        request["metadata"] = {"order": str(index), "region": rng.choice(["eu", "us", "apac"])}
    if rng.random() < mix.attachment:
        raw = rng.randbytes(rng.randrange(1_000, 30_000))
        request["attachments"] = [
            {
                "filename": f"invoice-{index}.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(raw).decode("ascii"),
            }
        ]
    if rng.random() < mix.invalid:
        flaw = rng.choice(list(Flaw))
        _break(request, flaw)
        return Generated(index, request, Expected.REJECTED, flaw)
    bulk = broadcast or large
    return Generated(index, request, Expected.BULK if bulk else Expected.TRANSACTIONAL)


def _address(rng: random.Random, n: int) -> dict[str, str]:
    address = {"email": f"user{n}.{rng.randrange(10**6)}@example.org"}
    if rng.random() < 0.4:
        address["name"] = f"User {n}"
    return address


def _recipients(rng: random.Random, request: dict[str, Any], large: bool) -> None:
    if large:
        total = rng.randrange(BULK_RECIPIENTS + 1, 600)
        bcc = rng.randrange(total // 2) if rng.random() < 0.3 else 0
        request["to"] = [_address(rng, n) for n in range(total - bcc)]
        if bcc:
            request["bcc"] = [_address(rng, n) for n in range(bcc)]
        return
    request["to"] = [_address(rng, n) for n in range(rng.choice((1, 1, 1, 1, 2, 3, 5)))]
    if rng.random() < 0.1:
        request["cc"] = [_address(rng, 100)]


_SENTENCE = "Your order is on its way and will arrive soon. "


def _content(rng: random.Random, request: dict[str, Any], index: int) -> None:
    # Sizes: mostly a short note, some newsletters of several KB, a few heavy HTML bodies.
    size = rng.choices((300, 3_000, 40_000), weights=(0.7, 0.25, 0.05))[0]
    size = rng.randrange(size // 2, size * 2)
    style = rng.random()
    if style < 0.15:
        request["template"] = {"id": f"tpl-{rng.randrange(50)}", "data": {"order": str(index)}}
        return
    repeats = max(1, size // len(_SENTENCE))
    if style < 0.6:
        request["text"] = _SENTENCE * repeats
    if style >= 0.4:
        request["html"] = f"<p>{_SENTENCE}</p>" * max(1, repeats // 2)


def _break(request: dict[str, Any], flaw: Flaw) -> None:
    if flaw is Flaw.NO_RECIPIENTS:
        for key in ("to", "cc", "bcc"):
            request.pop(key, None)
    elif flaw is Flaw.EMPTY_TO:
        request["to"] = []
    elif flaw is Flaw.BAD_ADDRESS:
        request["from"] = {"email": "not-an-address"}
    elif flaw is Flaw.LONG_SUBJECT:
        request["subject"] = "x" * 999
    elif flaw is Flaw.TOO_MANY_TAGS:
        request["tags"] = [f"tag{i}" for i in range(11)]
    elif flaw is Flaw.NO_BODY:
        for key in ("text", "html", "template"):
            request.pop(key, None)
    elif flaw is Flaw.UNKNOWN_FIELD:
        request["priority"] = "high"
    elif flaw is Flaw.CUSTOMER_NOT_TEXT:
        request["customer_id"] = 42
    else:
        request["stream"] = "marketing"
