"""No input makes `decide` fail: arbitrary bytes, JSON, headers and properties always get a
decision, and a rejected one always says why and carries the body unchanged.

Stronger than "never raises" (decide has a last-resort handler for bugs): no input may reach
that handler either, so no decision here carries the `internal_error` reason.
"""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.pipeline.decide import REASON_HEADER, REASONS_HEADER, decide
from routerd.pipeline.envelope import Decision, Envelope
from routerd.pipeline.render import MAX_ROUTING_KEY_BYTES
from tests import factories
from tests.conftest import SHIPPED_CONFIG

SETTINGS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load(SHIPPED_CONFIG)


def check(table: RouteTable, env: Envelope) -> Decision:
    decision = decide(table, env)
    assert isinstance(decision, Decision)
    assert decision.body is env.body
    assert all(r.code != "internal_error" for r in decision.reasons), decision.reasons
    assert "headers" not in decision.properties
    assert "delivery_mode" not in decision.properties
    if decision.rejected:
        assert decision.target is table.rejected
        assert decision.reasons
        assert decision.headers[REASON_HEADER] == decision.reasons[0].code
        assert len(decision.headers[REASONS_HEADER]) == len(decision.reasons)
        assert decision.category is None
    else:
        assert decision.target in table.targets.values()
        assert decision.category is not None
        assert len(decision.routing_key.encode()) <= MAX_ROUTING_KEY_BYTES
    # Original headers travel on; routerd only adds (or overwrites) its own.
    assert set(env.headers) <= set(decision.headers)
    return decision


# -- strategies -------------------------------------------------------------------------------

# JSON text, not Python values: huge integers, escapes, lone surrogates (which stdlib json
# writes as \ud800 escapes) and whitespace all reach the decoder as a producer could send them.
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**80), max_value=10**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None))
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """Nesting from none to past the JSON parser's own limit of 1024 levels."""
    value: Any = draw(json_leaves)
    shape = draw(st.sampled_from(["lists", "objects", "alternating"]))
    for level in range(draw(st.integers(min_value=0, max_value=1200))):
        if shape == "lists" or (shape == "alternating" and level % 2):
            value = [value]
        else:
            value = {"k": value}
    return value


def dumps(value: Any, ensure_ascii: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False)
    # Unescaped lone surrogates become bytes that are not UTF-8, as a broken producer sends.
    return text.encode("utf-8", "surrogatepass")


header_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes()
    | st.lists(st.integers() | st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers() | st.binary(max_size=5), max_size=3)
)
header_names = st.sampled_from(["x-schema-version", "x-vip", "x-trace"]) | st.text(max_size=10)
headers = st.dictionaries(header_names, header_values, max_size=5)
property_values = st.one_of(
    header_values,
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            b"application/json",
            "gzip",
            "identity",
            0,
            255,
            -1,
        ]
    ),
)
properties = st.dictionaries(
    st.sampled_from(
        [
            "content_type",
            "content_encoding",
            "priority",
            "delivery_mode",
            "message_id",
            "timestamp",
            "headers",
            "expiration",
        ]
    ),
    property_values,
    max_size=6,
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid v1 or v2 request with arbitrary JSON dropped in at a few places: most of
    the schema passes, so later stages (categorize, render) see odd values too."""
    seed = draw(st.integers(min_value=0, max_value=10**6))
    make = factories.valid_v2 if draw(st.booleans()) else factories.valid_v1
    request = make(seed)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        node: Any = request
        while isinstance(node, dict) and node and draw(st.booleans()):
            child = node[draw(st.sampled_from(sorted(node)))]
            if not isinstance(child, dict):
                break
            node = child
        if isinstance(node, dict):
            key = draw(st.sampled_from([*sorted(node), "stream", "tags", "labels", "extra"]))
            node[key] = draw(json_values)
    return request


# -- properties -------------------------------------------------------------------------------


@SETTINGS
@given(body=st.binary(max_size=2048), hdrs=headers, props=properties)
def test_arbitrary_bytes(table: RouteTable, body: bytes, hdrs: Any, props: Any) -> None:
    check(table, Envelope(body, hdrs, props))


@SETTINGS
@given(value=json_values, ensure_ascii=st.booleans(), hdrs=headers)
def test_arbitrary_json(table: RouteTable, value: Any, ensure_ascii: bool, hdrs: Any) -> None:
    check(table, Envelope(dumps(value, ensure_ascii), hdrs, {}))


@SETTINGS
@given(value=deep(), wrap=st.booleans())
def test_deep_nesting(table: RouteTable, value: Any, wrap: bool) -> None:
    body = dumps({"schema_version": 1, "data": value} if wrap else value, ensure_ascii=True)
    decision = check(table, Envelope(body))
    assert decision.rejected


@SETTINGS
@given(request=near_valid(), hdrs=headers, props=properties)
def test_nearly_valid_requests(table: RouteTable, request: Any, hdrs: Any, props: Any) -> None:
    check(table, Envelope(dumps(request, ensure_ascii=False), hdrs, props))


@SETTINGS
@given(version=header_values, seed=st.integers(min_value=0, max_value=1000))
def test_any_schema_version_header(table: RouteTable, version: Any, seed: int) -> None:
    env = Envelope(factories.encode(factories.valid_v1(seed)), {"x-schema-version": version})
    decision = check(table, env)
    if (type(version) is int and version == 1) or version in ("1", b"1"):
        assert not decision.rejected


@pytest.mark.parametrize(
    "version",
    [
        decimal.Decimal("1"),
        datetime.datetime(2024, 1, 1),
        b"\xff\xfe",
        10**40,
        10**5000,
        float("nan"),
        float("inf"),
        ["1"],
        {"v": 1},
        object(),
    ],
    ids=lambda v: type(v).__name__,
)
def test_odd_schema_version_headers_are_rejected(table: RouteTable, version: Any) -> None:
    env = Envelope(factories.encode(factories.valid_v1(1)), {"x-schema-version": version})
    assert check(table, env).reasons[0].code == "unknown_schema_version"
