"""Send requests for tests and benchmarks: valid v1 and v2, invalid, undecodable.

Deterministic for a given `seed`, so a failing case can be rebuilt from its number.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

TAGS = ["receipt", "welcome", "newsletter", "promo", "invoice", "digest"]
SECURITY_TAGS = ["password-reset", "2fa"]


def _address(rng: random.Random, i: int) -> dict[str, str]:
    address = {"email": f"user{i}.{rng.randrange(10**6)}@example.org"}
    if rng.random() < 0.5:
        address["name"] = f"User {i}"
    return address


def valid_v1(seed: int, *, recipients: int | None = None, **overrides: Any) -> dict[str, Any]:
    """A v1 send request of about 1 KB; `recipients` forces the size of `to`."""
    rng = random.Random(seed)
    count = recipients if recipients is not None else rng.choice([1, 1, 1, 2, 3, 5])
    request: dict[str, Any] = {
        "schema_version": 1,
        "message_id": f"msg-{seed}",
        "customer_id": f"cus-{rng.randrange(200)}",
        "from": {"email": "noreply@shop.example", "name": "Shop"},
        "to": [_address(rng, i) for i in range(count)],
        "subject": f"Your order #{seed} has shipped",
        "text": "Hello,\n\nyour order is on its way. " * 8,
        "html": "<p>Hello,</p><p>your order is on its way.</p>" * 4,
        "tags": rng.sample(TAGS, k=rng.randrange(3)),
        "metadata": {"order": str(seed), "region": rng.choice(["eu", "us"])},
    }
    if rng.random() < 0.3:
        request["stream"] = rng.choice(["transactional", "broadcast"])
    request.update(overrides)
    return request


def valid_v2(seed: int, *, recipients: int | None = None, **overrides: Any) -> dict[str, Any]:
    rng = random.Random(seed)
    count = recipients if recipients is not None else rng.choice([1, 1, 2, 3])
    request: dict[str, Any] = {
        "schema_version": 2,
        "message_id": f"msg-v2-{seed}",
        "account": {"id": f"cus-{rng.randrange(200)}"},
        "sender": {"email": "noreply@shop.example"},
        "recipients": {"to": [_address(rng, i) for i in range(count)]},
        "content": {"subject": f"Order #{seed}", "text": "Your order is on its way. " * 10},
        "labels": rng.sample(TAGS, k=rng.randrange(3)),
    }
    if rng.random() < 0.3:
        request["delivery"] = {"stream": rng.choice(["transactional", "broadcast"])}
    request.update(overrides)
    return request


def invalid_v1(seed: int) -> dict[str, Any]:
    """A v1 request broken in one of several realistic ways."""
    rng = random.Random(seed)
    request = valid_v1(seed)
    breakage = seed % 6
    if breakage == 0:
        del request["to"]
    elif breakage == 1:
        request["from"] = {"email": "not-an-address"}
    elif breakage == 2:
        request["subject"] = "x" * 999
    elif breakage == 3:
        request["tags"] = [f"t{i}" for i in range(11)]
    elif breakage == 4:
        request["to"] = []
        request["customer_id"] = rng.randrange(100)
    else:
        del request["text"], request["html"]
    return request


def undecodable(seed: int) -> bytes:
    choices = [b"\xff\xfe not utf-8", b'{"schema_version": 1, "to": [', b"", b"[1, 2, 3]"]
    return choices[seed % len(choices)]


def encode(request: dict[str, Any]) -> bytes:
    return orjson.dumps(request)


def valid_v1_at_limit(seed: int, limit: int) -> bytes:
    """A valid v1 request whose text pads it to just under `limit` bytes."""
    request = valid_v1(seed, text="")
    request["text"] = "x" * (limit - len(encode(request)) - 16)
    body = encode(request)
    assert limit - 64 < len(body) <= limit
    return body


def mixed(n: int, *, seed: int = 0) -> list[tuple[str, bytes]]:
    """`n` bodies labelled with where they must end: 'transactional', 'bulk' or 'rejected'.

    Mix: ~45% v1, ~30% v2, 15% invalid, 10% undecodable; some bulk by size or stream.
    """
    out: list[tuple[str, bytes]] = []
    rng = random.Random(seed)
    for i in range(n):
        roll = rng.random()
        s = seed * 1_000_003 + i
        if roll < 0.45:
            big = rng.random() < 0.1
            req = valid_v1(s, recipients=60 if big else None)
            out.append((expected_category(req), encode(req)))
        elif roll < 0.75:
            req = valid_v2(s)
            out.append((expected_category(req), encode(req)))
        elif roll < 0.90:
            out.append(("rejected", encode(invalid_v1(s))))
        else:
            out.append(("rejected", undecodable(s)))
    return out


def expected_category(request: dict[str, Any]) -> str:
    """What the shipped routes.yaml must decide for a valid request, computed independently."""
    if request["schema_version"] == 2:
        tags = request.get("labels", [])
        stream = request.get("delivery", {}).get("stream")
        rcpt = request["recipients"]
    else:
        tags = request.get("tags", [])
        stream = request.get("stream")
        rcpt = request
    if any(t in SECURITY_TAGS for t in tags):
        return "transactional"
    count = sum(len(rcpt.get(k, [])) for k in ("to", "cc", "bcc"))
    if stream == "broadcast" or count > 50:
        return "bulk"
    return "transactional"
