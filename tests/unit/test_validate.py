"""Schema version selection and validation: every error, with pointer and keyword."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.pipeline.envelope import Envelope, Reason
from routerd.pipeline.validate import MAX_MESSAGE_CHARS, schema_version, validate
from tests import factories
from tests.conftest import SHIPPED_CONFIG
from tests.unit.test_decide import small_table


@pytest.fixture(scope="module")
def shipped() -> RouteTable:
    return load(SHIPPED_CONFIG)


def version(table: RouteTable, body: dict[str, Any], headers: dict[str, Any] | None = None) -> Any:
    return schema_version(table, Envelope(b"", headers or {}), body)


# -- schema version ---------------------------------------------------------------------------


def test_body_field_names_the_version(shipped: RouteTable) -> None:
    assert version(shipped, {"schema_version": 1}) == "1"
    assert version(shipped, {"schema_version": "2"}) == "2"


def test_header_wins_over_body_field(shipped: RouteTable) -> None:
    assert version(shipped, {"schema_version": 1}, {"x-schema-version": "2"}) == "2"
    assert version(shipped, {"schema_version": 2}, {"x-schema-version": 1}) == "1"


def test_header_may_arrive_as_bytes(shipped: RouteTable) -> None:
    assert version(shipped, {}, {"x-schema-version": b"2"}) == "2"
    reason = version(shipped, {}, {"x-schema-version": b"\xff"})
    assert reason.code == "unknown_schema_version"


def test_a_whole_float_is_that_number(shipped: RouteTable) -> None:
    # JSON has one number type: `1.0` is what the schemas' `const: 1` accepts as well.
    assert version(shipped, {"schema_version": 1.0}) == "1"


def test_missing_version_names_both_places(shipped: RouteTable) -> None:
    expected = Reason(
        "missing_schema_version",
        "no schema version given (header x-schema-version or field schema_version)",
    )
    assert version(shipped, {}) == expected
    assert version(shipped, {"schema_version": None}) == expected


def test_unknown_version_lists_the_supported_ones(shipped: RouteTable) -> None:
    assert version(shipped, {"schema_version": 3}) == Reason(
        "unknown_schema_version", "schema version '3' is not supported (supported: 1, 2)"
    )
    assert version(shipped, {"schema_version": 1}, {"x-schema-version": "v1"}) == Reason(
        "unknown_schema_version", "schema version 'v1' is not supported (supported: 1, 2)"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "True"),
        (False, "False"),
        (1.5, "1.5"),
        ([1], "[1]"),
        ({"v": 1}, "{'v': 1}"),
    ],
)
def test_a_version_must_be_a_whole_number_or_text(
    shipped: RouteTable, value: Any, shown: str
) -> None:
    assert version(shipped, {"schema_version": value}) == Reason(
        "unknown_schema_version",
        f"schema version in field schema_version must be a whole number or text, got {shown}",
    )


def test_a_bool_header_is_not_a_version(shipped: RouteTable) -> None:
    # AMQP tables carry booleans; True must not pass for version 1.
    assert version(shipped, {"schema_version": 1}, {"x-schema-version": True}) == Reason(
        "unknown_schema_version",
        "schema version in header x-schema-version must be a whole number or text, got True",
    )


def test_odd_header_values_are_reasons_not_crashes(shipped: RouteTable) -> None:
    huge = version(shipped, {}, {"x-schema-version": 10**5000})
    assert huge.code == "unknown_schema_version"
    assert huge.message.endswith("got a value of type int")
    long = version(shipped, {}, {"x-schema-version": "9" * 10_000})
    assert long.code == "unknown_schema_version"
    assert len(long.message) < 400


def test_header_only_and_field_only_configs(tmp_path: Path) -> None:
    header_only = small_table(tmp_path, schema_version={"header": "x-v"})
    assert version(header_only, {"v": 1}, {"x-v": 1}) == "1"
    assert version(header_only, {"v": 1}) == Reason(
        "missing_schema_version", "no schema version given (header x-v)"
    )
    field_only = small_table(tmp_path, schema_version={"field": "meta.v"})
    assert version(field_only, {"meta": {"v": 1}}, {"x-v": 2}) == "1"
    assert version(field_only, {"meta": 1}) == Reason(
        "missing_schema_version", "no schema version given (field meta.v)"
    )


# -- validation -------------------------------------------------------------------------------


def test_a_valid_request_has_no_reasons(shipped: RouteTable) -> None:
    assert validate(shipped.schemas["1"], factories.valid_v1(1), 50) == ()
    assert validate(shipped.schemas["2"], factories.valid_v2(1), 50) == ()


def test_every_error_is_collected_with_pointer_and_keyword(shipped: RouteTable) -> None:
    request = factories.valid_v1(
        2,
        customer_id=42,
        to=[{"email": "ada@example.org", "nickname": "x"}, {"name": "no address"}],
        tags=["ok", ""],
        stream="sometimes",
        metadata={"order": 7},
        unknown="x",
    )
    reasons = validate(shipped.schemas["1"], request, 50)
    assert {r.code for r in reasons} == {"schema_violation"}
    assert sorted((r.pointer or "", r.keyword or "") for r in reasons) == [
        ("", "additionalProperties"),
        ("/customer_id", "type"),
        ("/metadata/order", "type"),
        ("/stream", "enum"),
        ("/tags/1", "minLength"),
        ("/to/0", "additionalProperties"),
        ("/to/1", "required"),
    ]


def test_errors_over_max_reasons_are_counted(tmp_path: Path) -> None:
    table = small_table(tmp_path)
    body = {"v": 1, "customer": "a", "tags": [1, 2, 3, 4, 5]}
    reasons = validate(table.schemas["1"], body, 2)
    assert [(r.code, r.keyword) for r in reasons] == [
        ("schema_violation", "type"),
        ("schema_violation", "type"),
        ("too_many_errors", None),
    ]
    assert reasons[-1].message == "3 more validation errors not listed"
    assert len(validate(table.schemas["1"], body, 5)) == 5


def test_messages_are_readable(shipped: RouteTable) -> None:
    request = factories.valid_v1(3, subject="x" * 5000)
    del request["text"], request["html"]
    by_keyword = {r.keyword: r.message for r in validate(shipped.schemas["1"], request, 50)}
    # A whole request dumped back at the customer says nothing they did not send.
    # ...it needs to know what to add instead.
    assert by_keyword["anyOf"] == 'needs one of the properties "text", "html" or "template"'

    # A long value is cut in the middle: its start and what is wrong with it stay.
    subject = by_keyword["maxLength"]
    assert len(subject) <= MAX_MESSAGE_CHARS
    assert subject.startswith('"xxxx')
    assert subject.endswith("is longer than 998 characters")


def test_invalid_without_errors_is_still_rejected(shipped: RouteTable) -> None:
    schema = dataclasses.replace(
        shipped.schemas["1"], is_valid=lambda _: False, errors=lambda _, __: ((), 0)
    )
    assert validate(schema, factories.valid_v1(4), 50) == (
        Reason("schema_violation", "request does not satisfy schema send-request v1"),
    )


def test_a_body_with_a_huge_number_of_errors_is_listed_at_the_cost_of_a_few(
    shipped: RouteTable,
) -> None:
    # 1 MiB of `{}` recipients, each missing its email: 350,000 errors. Listing them all
    # (iter_errors) took 7 s of one replica's event loop; listing max_reasons must not.
    count = (1024 * 1024 - 200) // 3
    body = factories.valid_v1(5)
    body["to"] = [{}] * count
    decision_reasons = validate(shipped.schemas["1"], body, 50)
    assert len(decision_reasons) == 51
    assert decision_reasons[-1].code == "too_many_errors"
    assert decision_reasons[-1].message == f"{count + 1 - 50} more validation errors not listed"
    assert all(len(r.message) <= MAX_MESSAGE_CHARS for r in decision_reasons)
    shown = {r.pointer for r in decision_reasons[:-1]}
    assert "/to" in shown and "/to/0" in shown  # the list's own limit, then the items' errors


def test_up_to_the_bound_the_errors_are_iter_errors_own_and_counted_exactly(
    shipped: RouteTable,
) -> None:
    body = factories.valid_v1(6)
    body["to"] = [{}] * 60
    reasons = validate(shipped.schemas["1"], body, 50)
    assert [r.pointer for r in reasons[:3]] == ["/to/0", "/to/1", "/to/2"]
    assert reasons[-1].message == "10 more validation errors not listed"
