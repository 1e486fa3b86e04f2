"""decode: size, content type and encoding, UTF-8, JSON, object, nesting depth."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.config.model import Limits
from routerd.pipeline import decode as decode_module
from routerd.pipeline.decode import DecodeError, decode, header_bytes
from routerd.pipeline.envelope import Envelope, Reason

LIMITS = Limits(max_body_bytes=64, max_depth=3, max_reasons=5)


def rejected(body: bytes, limits: Limits = LIMITS, **properties: Any) -> Reason:
    with pytest.raises(DecodeError) as caught:
        decode(Envelope(body, {}, properties), limits)
    return caught.value.reason


def test_a_json_object_decodes() -> None:
    body = b'{"a": [1, {"b": "c"}], "d": null}'
    assert decode(Envelope(body), LIMITS) == orjson.loads(body)


def test_size_limit_is_inclusive() -> None:
    body = b'{"a": "' + b"x" * (64 - 9) + b'"}'
    assert len(body) == 64
    assert decode(Envelope(body), LIMITS) == {"a": "x" * 55}
    reason = rejected(body + b" ")
    assert reason == Reason("too_large", "body is 65 bytes, the limit is 64")


def test_size_is_checked_before_parsing() -> None:
    assert rejected(b"\xff" * 100).code == "too_large"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        " Application/JSON ",
        "text/json",
        b"application/json",
    ],
)
def test_json_content_types_are_accepted(content_type: object) -> None:
    properties = {} if content_type is None else {"content_type": content_type}
    assert decode(Envelope(b"{}", {}, properties), LIMITS) == {}


@pytest.mark.parametrize("content_type", ["text/plain", "application/jsonx", "application/xml"])
def test_other_content_types_are_rejected(content_type: str) -> None:
    reason = rejected(b"{}", content_type=content_type)
    assert reason.code == "unsupported_content_type"
    assert reason.message == (
        f"content type {content_type!r} is not supported; send application/json"
    )


@pytest.mark.parametrize("encoding", ["", "identity", "UTF-8", "utf8", b"utf-8"])
def test_identity_encodings_are_accepted(encoding: object) -> None:
    assert decode(Envelope(b"{}", {}, {"content_encoding": encoding}), LIMITS) == {}


@pytest.mark.parametrize("encoding", ["gzip", b"deflate", "base64"])
def test_compressed_or_encoded_bodies_are_rejected(encoding: object) -> None:
    reason = rejected(b"{}", content_encoding=encoding)
    assert reason.code == "unsupported_content_encoding"
    assert "send plain UTF-8 JSON" in reason.message


def test_invalid_utf8_names_the_offset() -> None:
    reason = rejected(b'{"a": "\xc3\x28"}')
    assert reason == Reason("invalid_utf8", "body is not UTF-8: invalid byte at offset 7")


@pytest.mark.parametrize("body", [b"", b" ", b" \n\t "])
def test_empty_body(body: bytes) -> None:
    assert rejected(body) == Reason("invalid_json", "body is empty; expected a JSON object")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"a": }', "line 1 column 7"),
        (b'{"a": 1}\n{"b": 2}', "line 2 column 1"),
        (b"{'a': 1}", "line 1 column 2"),
        (b'{"a": NaN}', "line 1 column 7"),
    ],
)
def test_invalid_json_names_the_position(body: bytes, where: str) -> None:
    reason = rejected(body)
    assert reason.code == "invalid_json"
    assert reason.message.startswith("body is not JSON: ")
    assert reason.message.endswith(where)


def test_a_byte_order_mark_is_not_json() -> None:
    reason = rejected(b"\xef\xbb\xbf{}")
    assert reason.code == "invalid_json"
    assert "byte order mark" in reason.message


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[1, 2]", "array"),
        (b'"text"', "string"),
        (b"12", "number"),
        (b"1.5", "number"),
        (b"true", "boolean"),
        (b"null", "null"),
    ],
)
def test_only_objects_are_requests(body: bytes, kind: str) -> None:
    assert rejected(body) == Reason("not_an_object", f"body is a JSON {kind}, expected an object")


def nested(depth: int) -> bytes:
    """An object `depth` levels deep (the top object is level 1), alternating objects and
    arrays."""
    text = "1"
    for level in range(depth - 1, 0, -1):
        text = f'{{"l{level}": {text}}}' if level % 2 else f"[{text}]"
    return f'{{"top": {text}}}'.encode() if depth > 1 else b'{"top": 1}'


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    limits = Limits(max_body_bytes=1000, max_depth=3, max_reasons=5)
    assert isinstance(decode(Envelope(nested(depth)), limits), dict)


@pytest.mark.parametrize("depth", [4, 5, 40])
def test_nesting_over_the_limit_is_rejected(depth: int) -> None:
    limits = Limits(max_body_bytes=1000, max_depth=3, max_reasons=5)
    assert rejected(nested(depth), limits) == Reason(
        "too_deep", "body nests deeper than the limit of 3 levels"
    )


def test_nesting_beyond_what_the_json_parser_takes_is_too_deep() -> None:
    limits = Limits(max_body_bytes=10_000, max_depth=1000, max_reasons=5)
    body = b'{"a": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert rejected(body, limits) == Reason("too_deep", "body nests too deep to decode")


def test_few_brackets_skip_the_depth_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 brackets can nest at most 3 deep: the bound alone settles it.
    def walk(data: Any, limit: int) -> bool:
        raise AssertionError("walked the body although the bracket count was under the limit")

    monkeypatch.setattr(decode_module, "_deeper_than", walk)
    assert decode(Envelope(b'{"a": {"b": [1]}}'), LIMITS) == {"a": {"b": [1]}}


def test_brackets_inside_strings_do_not_make_a_body_too_deep() -> None:
    # Over the bracket bound, so the decoded value is walked, and it is one level deep.
    body = b'{"a": "[[[[{{{{", "b": "]]]}}}"}'
    assert decode(Envelope(body), LIMITS) == {"a": "[[[[{{{{", "b": "]]]}}}"}


def test_many_siblings_are_not_depth() -> None:
    # 40 recipients: 42 brackets, three levels deep.
    recipients = [{"email": f"u{i}@example.org"} for i in range(40)]
    body = orjson.dumps({"to": recipients})
    limits = Limits(max_body_bytes=10_000, max_depth=3, max_reasons=5)
    assert decode(Envelope(body), limits) == {"to": recipients}


def test_every_reason_code_has_its_stage() -> None:
    from routerd.pipeline.envelope import ReasonCode, Stage

    assert {code.stage for code in ReasonCode} <= set(Stage)
    assert ReasonCode.SCHEMA_VIOLATION.stage is Stage.VALIDATE
    assert ReasonCode.UNROUTABLE.stage is Stage.DELIVER
    # The values are the public contract in x-rejected-reasons: they compare as text.
    assert ReasonCode.TOO_LARGE == "too_large"


def _reference_header_bytes(headers: Any) -> int:
    """The plain count `header_bytes` must equal: every value through the ABC checks."""
    total = 0
    stack: list[Any] = [headers]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            total += 4
            for key, item in value.items():
                total += 2 + len(str(key).encode("utf-8", "replace"))
                stack.append(item)
        elif isinstance(value, list | tuple):
            total += 4 + len(value)
            stack.extend(value)
        elif isinstance(value, str):
            total += 4 + len(value.encode("utf-8", "replace"))
        elif isinstance(value, bytes | bytearray | memoryview):
            total += 4 + len(value)
        else:
            total += 8
    return total


class _Text(str):
    pass


_LEAF = (
    st.text()
    | st.text().map(_Text)
    | st.sampled_from(["\ud800", "ü" * 3, "x"])
    | st.integers()
    | st.booleans()
    | st.none()
    | st.binary(max_size=9)
    | st.floats(allow_nan=False)
)
_VALUE = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3).map(MappingProxyType)
    ),
    max_leaves=20,
)


@given(headers=st.dictionaries(st.text(max_size=8), _VALUE, max_size=6))
def test_header_bytes_counts_as_the_plain_walk_does(headers: dict[str, Any]) -> None:
    assert header_bytes(headers) == _reference_header_bytes(headers)
