"""The named corpus of the worst send requests found: one YAML file each in corpus/.

A case file::

    why: what it broke, or what it guards
    body: text, UTF-8            # or body_hex (bytes), or body_gzip_base64 (large bodies)
    headers: {name: value}       # !!binary values become AMQP byte arrays;
                                 # {repeat: "h", times: 70000} a long text
    properties: {content_type: ...}
    expect: {category: transactional} or {rejected: reason_code}

`write_case` saves a `Hostile` found by a fuzz run as a new case (large bodies compressed),
so that what broke once is tried on every run.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.fuzz.hostile import Hostile

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Case:
    name: str
    why: str
    request: Hostile
    # The category it must be routed to, or None when it must be rejected with `reason`.
    category: str | None
    reason: str | None


def _bytearrays(value: Any) -> Any:
    # pamqp writes bytes only as a bytearray; YAML's !!binary reads as bytes.
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict) and set(value) == {"repeat", "times"}:
        # A long header value, written short: {repeat: "h", times: 70000}.
        return str(value["repeat"]) * int(value["times"])
    if isinstance(value, dict):
        return {k: _bytearrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytearrays(v) for v in value]
    return value


def read_case(path: Path) -> Case:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "body_gzip_base64" in data:
        body = gzip.decompress(base64.b64decode(data["body_gzip_base64"]))
    elif "body_hex" in data:
        body = bytes.fromhex(data["body_hex"])
    else:
        body = str(data["body"]).encode("utf-8")
    expect = data["expect"]
    return Case(
        name=path.stem,
        why=data["why"],
        request=Hostile(
            path.stem,
            body,
            _bytearrays(data.get("headers") or {}),
            data.get("properties") or {},
        ),
        category=expect.get("category"),
        reason=expect.get("rejected"),
    )


def _written(value: Any) -> Any:
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, str) and len(value) > 1_000 and len(set(value)) == 1:
        return {"repeat": value[0], "times": len(value)}
    return value


def load_corpus() -> list[Case]:
    return [read_case(path) for path in sorted(CORPUS.glob("*.yaml"))]


def write_case(
    name: str, why: str, request: Hostile, *, category: str | None = None, reason: str | None = None
) -> Path:
    data: dict[str, Any] = {"why": why}
    body = request.body
    if len(body) > 2_000:
        data["body_gzip_base64"] = base64.b64encode(gzip.compress(body, mtime=0)).decode()
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and text.isprintable():
            data["body"] = text
        else:
            data["body_hex"] = body.hex()
    if request.headers:
        data["headers"] = {k: _written(v) for k, v in request.headers.items()}
    if request.properties:
        data["properties"] = dict(request.properties)
    data["expect"] = {"category": category} if category else {"rejected": reason}
    path = CORPUS / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=100))
    return path
