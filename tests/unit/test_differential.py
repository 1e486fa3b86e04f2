"""The fast validator gives the reference `jsonschema`'s answers.

Over generated v1 and v2 send requests, valid and broken in many ways, the fast path
(`Schema.is_valid` / `Schema.errors`, what `decide` runs) and the reference Python
`jsonschema` validator agree on accept/reject and on the set of (JSON pointer, keyword) of
the errors. Instances go through JSON text and orjson first, so they hold exactly what the
pipeline's decoder produces (large integers become floats, tuples lists).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from routerd.config.loader import load
from routerd.config.model import Schema
from routerd.config.paths import pointer
from routerd.config.schemas import load_schema_set
from routerd.pipeline.validate import validate
from tests import factories
from tests.conftest import SHIPPED_CONFIG

Pairs = set[tuple[str, str]]

SETTINGS = settings(
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Validators:
    """The fast and the reference validator of one schema version."""

    def __init__(self, fast: Schema, reference: jsonschema.protocols.Validator) -> None:
        self.fast = fast
        self.reference = reference

    def __repr__(self) -> str:
        # Hypothesis prints its arguments on failure; the schemas would fill the screen.
        return f"<fast and reference validators of v{self.fast.version}>"


@pytest.fixture(scope="module")
def validators() -> dict[str, Validators]:
    table = load(SHIPPED_CONFIG)
    found = {}
    for version, schema in table.schemas.items():
        schema_set = load_schema_set([schema.file], [])
        found[version] = Validators(schema, schema_set.reference_validator(schema.file.as_uri()))
    return found


def as_decoded(value: Any) -> Any:
    return orjson.loads(json.dumps(value))


def assert_same(validators: Validators, value: Any) -> Pairs:
    schema, reference = validators.fast, validators.reference
    instance = as_decoded(value)
    expected = {
        (pointer(e.absolute_path), str(e.validator)) for e in reference.iter_errors(instance)
    }
    assert schema.is_valid(instance) is reference.is_valid(instance), expected
    fast = {(e.pointer, e.keyword) for e in schema.errors(instance, 10_000)[0]}
    assert fast == expected
    # What the pipeline reports, under a cap that does not bite.
    reasons = validate(schema, instance, 10_000)
    assert {(r.pointer, r.keyword) for r in reasons} == expected
    return expected


# -- strategies -------------------------------------------------------------------------------

# Text for fields the schemas check with `pattern`: printable ASCII, where Python's `re` and
# ECMA-262 regexes agree (see test_regex_dialect below for the rest of Unicode).
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
any_text = st.text(max_size=40)
some_text = st.text(min_size=1, max_size=40)
# Property names: never empty here; empty ones are a known disagreement with a test of its
# own (test_empty_property_names).
names = st.text(min_size=1, max_size=10)
ascii_names = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=10
)
word = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=12)

# Valid values only: a request without breakage is valid, and a broken one fails for the
# reasons its breakages gave it (see `broken`, which also brings in the bad values below).
emails = st.builds(lambda a, b, c: f"{a}@{b}.{c}", word, word, word)
dates = st.builds(
    lambda d, sep, frac, zone: f"2024-05-{d:02d}{sep}10:00:00{frac}{zone}",
    st.integers(min_value=1, max_value=28),
    st.sampled_from(["T", "t", " "]),
    st.sampled_from(["", ".5", ".123456"]),
    st.sampled_from(["Z", "z", "+02:00", "-11:30"]),
)
base64_text = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
content_types = st.sampled_from(["text/plain", "application/pdf", "image/svg+xml", "a.b-c+d/x_y"])
# Text the `pattern`s of those fields refuse (or nearly refuse).
PATTERN_FIELDS = ("email", "send_at", "content_type", "content")
bad_patterned = st.one_of(
    st.sampled_from(
        [
            "not-an-address",
            "@example.org",
            "ada@",
            "ada@example",
            "ada @example.org",
            "a@b@c.d",
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00+2:00",
            "text",
            "a/b/c",
            "QQ===",
            "a b",
            "QQ=A",
        ]
    ),
    ascii_text,
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, 2, 1.0, 2.0, -0.0, 1.5, 1e300])
    | st.floats(allow_nan=False, allow_infinity=False)
    | ascii_text
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ascii_names, inner, max_size=3),
    max_leaves=8,
)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


address = st.builds(lambda email, rest: {"email": email, **rest}, emails, optional(name=any_text))
addresses = st.lists(address, max_size=4)
string_map = st.dictionaries(names, any_text, max_size=3)
tags = st.lists(st.text(min_size=1, max_size=6), max_size=10)
attachment = st.fixed_dictionaries(
    {"filename": some_text, "content_type": content_types, "content": base64_text}
)
template = st.builds(
    lambda id_, rest: {"id": id_, **rest},
    some_text,
    optional(data=st.dictionaries(names, json_values, max_size=2)),
)
# text and/or html, or a template: at least one of them.
body = st.builds(
    lambda first, rest: {**first, **rest},
    st.one_of(
        st.builds(lambda t: {"text": t}, any_text),
        st.builds(lambda t: {"html": t}, any_text),
        st.builds(lambda t: {"template": t}, template),
    ),
    optional(text=any_text, html=any_text, template=template),
)

v1_requests = st.builds(
    lambda fixed, rest, content: {**fixed, **rest, **content},
    st.fixed_dictionaries(
        {
            "schema_version": st.just(1),
            "message_id": some_text,
            "customer_id": some_text,
            "from": address,
            "to": st.lists(address, min_size=1, max_size=4),
            "subject": any_text,
        }
    ),
    optional(
        stream=st.sampled_from(["transactional", "broadcast"]),
        reply_to=address,
        cc=addresses,
        bcc=addresses,
        headers=string_map,
        tags=tags,
        metadata=string_map,
        attachments=st.lists(attachment, max_size=2),
        send_at=dates,
    ),
    body,
)
v2_requests = st.builds(
    lambda fixed, rest: {**fixed, **rest},
    st.fixed_dictionaries(
        {
            "schema_version": st.just(2),
            "message_id": some_text,
            "account": st.builds(
                lambda id_, rest: {"id": id_, **rest}, some_text, optional(subaccount=any_text)
            ),
            "sender": address,
            "recipients": st.builds(
                lambda to, rest: {"to": to, **rest},
                st.lists(address, min_size=1, max_size=4),
                optional(cc=addresses, bcc=addresses),
            ),
            "content": st.builds(
                lambda subject, rest: {"subject": subject, **rest}, any_text, body
            ),
        }
    ),
    optional(
        delivery=optional(stream=st.sampled_from(["transactional", "broadcast"]), send_at=dates),
        reply_to=address,
        headers=string_map,
        labels=tags,
        metadata=string_map,
        attachments=st.lists(attachment, max_size=2),
    ),
)

# Lengths around every limit in the schemas.
long_text = st.sampled_from([1, 128, 129, 255, 256, 257, 320, 321, 998, 999]).map(lambda n: "x" * n)


def containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every object and array inside `value`, the root first."""
    found = [path]
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        if isinstance(child, dict | list):
            found.extend(containers(child, (*path, key)))
    return found


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def broken(draw: st.DrawFn, requests: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A request, then up to four breakages anywhere in it: a value of the wrong type, a key
    deleted or added, a string at a length limit, a list emptied or grown, text that a
    `pattern` refuses."""
    request = draw(requests)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        node = at(request, draw(st.sampled_from(containers(request))))
        action = draw(
            st.sampled_from(["replace", "delete", "add", "long", "empty", "grow", "pattern"])
        )
        if isinstance(node, dict):
            keys = sorted(node)
            patterned = [k for k in keys if k in PATTERN_FIELDS]
            if action == "pattern" and patterned:
                node[draw(st.sampled_from(patterned))] = draw(bad_patterned)
            elif action == "add" or not keys:
                key = draw(st.sampled_from(["extra", "email", "id", "to", "name"]) | ascii_names)
                node[key] = draw(json_values)
            elif action == "delete":
                del node[draw(st.sampled_from(keys))]
            else:
                key = draw(st.sampled_from(keys))
                node[key] = _changed(draw, action, node[key])
        elif node and action != "grow":
            index = draw(st.integers(min_value=0, max_value=len(node) - 1))
            if action == "delete":
                del node[index]
            else:
                node[index] = _changed(draw, action, node[index])
        else:
            node.extend(node[:1] * draw(st.integers(min_value=1, max_value=11)) or [1])
    return request


def _changed(draw: st.DrawFn, action: str, value: Any) -> Any:
    if action == "long":
        return draw(long_text)
    if action == "empty":
        return [] if isinstance(value, list) else {} if isinstance(value, dict) else ""
    if action == "grow" and isinstance(value, list):
        return value + [draw(st.text(max_size=3))] * 11
    return draw(json_values)


requests = st.one_of(broken(v1_requests), broken(v2_requests))


# -- the differential tests -------------------------------------------------------------------


# Each request under its own version's schema, and under the other one's: a v1 body under
# the v2 schema and back breaks mostly on const, required and extra keys.
@pytest.mark.parametrize("under", ["own", "other"], ids=["own version", "other version"])
@SETTINGS
@given(request=requests)
def test_fast_validator_matches_the_reference(
    validators: dict[str, Validators], under: str, request: dict[str, Any]
) -> None:
    own = "2" if request.get("schema_version") == 2 else "1"
    version = own if under == "own" else {"1": "2", "2": "1"}[own]
    assert_same(validators[version], request)


def v1(**changes: Any) -> dict[str, Any]:
    request = factories.valid_v1(7, recipients=2)
    for key, value in changes.items():
        if value is DELETE:
            del request[key]
        else:
            request[key] = value
    return request


def v2(**changes: Any) -> dict[str, Any]:
    return {**factories.valid_v2(7), **changes}


DELETE = object()
ADDRESS = {"email": "ada@example.org"}
KINDS = [
    ("valid v1", "1", v1(), set()),
    ("valid v2", "2", v2(), set()),
    ("float version", "1", v1(schema_version=1.0), set()),
    ("bool version", "1", v1(schema_version=True), {("/schema_version", "const")}),
    ("text version", "1", v1(schema_version="1"), {("/schema_version", "const")}),
    ("empty", "1", {}, {("", "required"), ("", "anyOf")}),
    ("wrong types", "1", v1(customer_id=42, to="ada@example.org"), {("/customer_id", "type")}),
    ("missing required", "1", v1(subject=DELETE), {("", "required")}),
    ("extra property", "1", v1(cc_list=[ADDRESS]), {("", "additionalProperties")}),
    # An empty name is reported at the object that has it, so the fast path gets it right.
    ("extra empty name", "1", v1(**{"": 1}), {("", "additionalProperties")}),
    (
        "nested extra property",
        "2",
        v2(account={"id": "a", "region": "eu"}),
        {("/account", "additionalProperties")},
    ),
    ("too long subject", "1", v1(subject="s" * 999), {("/subject", "maxLength")}),
    (
        "too long name",
        "1",
        v1(to=[{"email": "ada@example.org", "name": "n" * 257}]),
        {("/to/0/name", "maxLength")},
    ),
    (
        "too long email",
        "1",
        v1(to=[{"email": "a" * 310 + "@example.org"}]),
        {("/to/0/email", "maxLength")},
    ),
    ("too many tags", "1", v1(tags=[f"t{i}" for i in range(11)]), {("/tags", "maxItems")}),
    ("too many labels", "2", v2(labels=["l"] * 11), {("/labels", "maxItems")}),
    ("empty tag", "1", v1(tags=[""]), {("/tags/0", "minLength")}),
    ("bad email", "1", v1(to=[ADDRESS, {"email": "ada"}]), {("/to/1/email", "pattern")}),
    ("empty to", "1", v1(to=[]), {("/to", "minItems")}),
    ("empty v2 to", "2", v2(recipients={"to": []}), {("/recipients/to", "minItems")}),
    ("bad stream", "1", v1(stream="bulk"), {("/stream", "enum")}),
    ("no body", "1", v1(text=DELETE, html=DELETE), {("", "anyOf")}),
    (
        "no v2 body",
        "2",
        v2(content={"subject": "s"}),
        {("/content", "anyOf")},
    ),
    (
        "nested breakage",
        "1",
        v1(
            to=[ADDRESS, 3, {"name": "x"}],
            attachments=[{"filename": "", "content_type": "text", "content": "!"}],
            template={"data": []},
            metadata={"a": 1},
            send_at="2024-05-01",
        ),
        {
            ("/to/1", "type"),
            ("/to/2", "required"),
            ("/attachments/0/filename", "minLength"),
            ("/attachments/0/content_type", "pattern"),
            ("/attachments/0/content", "pattern"),
            ("/template", "required"),
            ("/template/data", "type"),
            ("/metadata/a", "type"),
            ("/send_at", "pattern"),
        },
    ),
]


@pytest.mark.parametrize(
    ("version", "request_", "includes"), [k[1:] for k in KINDS], ids=[k[0] for k in KINDS]
)
def test_each_kind_of_breakage(
    validators: dict[str, Validators],
    version: str,
    request_: dict[str, Any],
    includes: Pairs,
) -> None:
    found = assert_same(validators[version], request_)
    assert includes <= found
    assert bool(found) is bool(includes)


def test_the_factories_corpus(validators: dict[str, Validators]) -> None:
    outcomes = set()
    for seed in range(120):
        for request, version in (
            (factories.valid_v1(seed, recipients=seed % 90), "1"),
            (factories.valid_v2(seed), "2"),
            (factories.invalid_v1(seed), "1"),
        ):
            outcomes.add(bool(assert_same(validators[version], request)))
    assert outcomes == {True, False}


# -- regex dialects ---------------------------------------------------------------------------
# The reference applies `pattern` with Python's `re.search`; jsonschema-rs natively with ECMA-262
# semantics. They disagree on: `$` before a final newline (Python matches), `\d` and `\w`
# on non-ASCII digits and letters (Python matches), `\s` on \x1c-\x1f and \x85 (Python
# matches) and on \ufeff (ECMA matches). routerd runs `pattern` with Python's `re` (see
# routerd/config/validator.py), so these cases must agree.

TRICKY = ["\n", "\r", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\ufeff", "٣", "²", "é", "_"]
tricky_text = st.builds(
    lambda base, char, where: base[:where] + char + base[where:] if where >= 0 else base + char,
    st.sampled_from(["ada@example.org", "2024-05-01T10:00:00Z", "text/plain", "QUJD"]),
    st.sampled_from(TRICKY),
    st.integers(min_value=-1, max_value=20),
)


@SETTINGS
@given(value=tricky_text, field=st.sampled_from(["from", "send_at", "content_type", "content"]))
@example(value="ada@example.org\n", field="from")
@example(value="ada\x1c@example.org", field="from")
@example(value="٢٠٢٤-05-01T10:00:00Z", field="send_at")
@example(value="tëxt/plain", field="content_type")
def test_regex_dialect(validators: dict[str, Validators], value: str, field: str) -> None:
    request = factories.valid_v1(1)
    if field == "from":
        request["from"] = {"email": value}
    elif field == "send_at":
        request["send_at"] = value
    else:
        attachment = {"filename": "a.txt", "content_type": "text/plain", "content": "QUJD"}
        request["attachments"] = [{**attachment, field: value}]
    assert_same(validators["1"], request)


# -- empty property names ---------------------------------------------------------------------
# jsonschema-rs (0.61) drops "" segments from an error's instance path: a bad value at
# /metadata/ (the key "") is reported at /metadata.


@pytest.mark.parametrize(
    "request_",
    [
        factories.valid_v1(1, metadata={"": 1}),
        factories.valid_v1(1, headers={"": None, "ok": "x"}),
        {**factories.valid_v2(1), "metadata": {"": []}},
    ],
    ids=["metadata", "headers", "v2"],
)
def test_empty_property_names(validators: dict[str, Validators], request_: Any) -> None:
    version = str(request_["schema_version"])
    assert_same(validators[version], request_)
