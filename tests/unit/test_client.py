"""`routerd.client` without a broker: preparing a request, the config's verdict, the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import routerd.client
from routerd.amqp.connection import BrokerUnavailable as ConnectFailed
from routerd.client import (
    BlockingPublisher,
    BrokerUnavailable,
    ConfigError,
    NotConfirmed,
    NotConfirmedCause,
    Publisher,
    PublishError,
    Reason,
    ReasonCode,
    RequestInvalid,
    Unroutable,
)
from routerd.client._request import prepare
from routerd.config.loader import load
from routerd.delivery.errors import PublishFailed, PublishFailure
from routerd.delivery.errors import Unroutable as Returned
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope
from tests.factories import invalid_v1, valid_v1, valid_v2

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "routes.yaml"
URL = "amqp://guest:guest@127.0.0.1:5672/"


def test_a_missing_message_id_is_filled_in_body_and_property_not_in_the_callers_dict() -> None:
    request = {k: v for k, v in valid_v1(1).items() if k != "message_id"}
    prepared = prepare(request, None)
    assert len(prepared.message_id) == 32 and int(prepared.message_id, 16) >= 0
    assert orjson.loads(prepared.body)["message_id"] == prepared.message_id
    assert prepared.properties["message_id"] == prepared.message_id
    assert "message_id" not in request
    assert prepare(request, None).message_id != prepared.message_id


def test_a_given_message_id_is_kept_and_the_properties_are_set() -> None:
    prepared = prepare(valid_v2(2), None, headers={"x-trace": "t"}, app_id="api")
    assert prepared.message_id == "msg-v2-2"
    assert prepared.properties == {
        "content_type": "application/json",
        "delivery_mode": 2,
        "message_id": "msg-v2-2",
        "app_id": "api",
    }
    assert prepared.headers == {"x-trace": "t", "x-schema-version": "2"}
    assert orjson.loads(prepared.body) == valid_v2(2)


def test_the_version_header_is_the_one_the_config_names() -> None:
    table = load(CONFIG)
    assert table.schema_version.header == "x-schema-version"
    prepared = prepare(valid_v1(3), table)
    assert prepared.headers == {"x-schema-version": "1"}


@pytest.mark.parametrize("version", [None, True, 1.5, [1]])
def test_a_version_that_is_not_plain_is_left_to_routerd(version: Any) -> None:
    # The header would win over the body field and hide what is wrong with it.
    prepared = prepare(valid_v1(4, schema_version=version), None)
    assert "x-schema-version" not in prepared.headers


@pytest.mark.parametrize("seed", range(6))
def test_with_a_config_an_invalid_request_raises_decides_reasons(seed: int) -> None:
    table = load(CONFIG)
    request = invalid_v1(seed)
    with pytest.raises(RequestInvalid) as caught:
        prepare(request, table)
    properties = {"content_type": "application/json", "message_id": request["message_id"]}
    expected = decide(table, Envelope(orjson.dumps(request), {"x-schema-version": "1"}, properties))
    assert caught.value.reasons == expected.reasons and expected.reasons
    assert str(caught.value).startswith(f"request {request['message_id']} is invalid")


def test_an_unknown_version_is_refused_with_routerds_reason() -> None:
    with pytest.raises(RequestInvalid) as caught:
        prepare(valid_v1(5, schema_version=9), load(CONFIG))
    assert [r.code for r in caught.value.reasons] == [ReasonCode.UNKNOWN_SCHEMA_VERSION]


def test_a_request_that_is_not_json_is_invalid_even_without_a_config() -> None:
    with pytest.raises(RequestInvalid) as caught:
        prepare(valid_v1(6, metadata={"when": object()}), None)
    assert [r.code for r in caught.value.reasons] == [ReasonCode.INVALID_JSON]


def test_a_message_id_that_is_not_text_is_invalid() -> None:
    with pytest.raises(RequestInvalid) as caught:
        prepare(valid_v1(7, message_id=7), None)
    assert caught.value.as_dicts()[0]["pointer"] == "/message_id"
    with pytest.raises(RequestInvalid) as by_schema:
        prepare(valid_v1(7, message_id=7), load(CONFIG))
    assert by_schema.value.reasons[0].keyword == "type"


def test_a_request_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        prepare(b"{}", None)  # type: ignore[arg-type]


def test_a_config_lint_rejects_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "routes.yaml"
    broken.write_text(CONFIG.read_text().replace("target: transactional", "target: nowhere"))
    with pytest.raises(ConfigError):
        Publisher(URL, config=broken)


def test_the_queue_comes_from_the_config_or_the_argument() -> None:
    assert Publisher(URL, config=CONFIG).queue == "email.send"
    assert Publisher(URL, queue="q").queue == "q"
    with pytest.raises(ValueError, match=r"config=<routes\.yaml> or queue=<name>"):
        Publisher(URL)
    with pytest.raises(ValueError, match="is not a source of the config"):
        Publisher(URL, config=CONFIG, queue="other")


@pytest.mark.anyio
async def test_send_many_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        await Publisher(URL, queue="q").send_many([], max_in_flight=0)


def test_every_error_is_a_publish_error_with_a_helpful_message() -> None:
    reasons = [Reason(ReasonCode.SCHEMA_VIOLATION, f"problem {i}", pointer="/to") for i in range(5)]
    errors: list[PublishError] = [
        RequestInvalid("m1", reasons),
        Unroutable("m2", "email.send", "NO_ROUTE"),
        NotConfirmed("m3", NotConfirmedCause.NACK),
        BrokerUnavailable("amqp://guest:***@host:5672/", "gave up after 10s"),
    ]
    texts = [str(e) for e in errors]
    assert texts[0] == (
        "request m1 is invalid, routerd would reject it: schema_violation at /to: problem 0; "
        "schema_violation at /to: problem 1; schema_violation at /to: problem 2 (and 2 more)"
    )
    assert "no queue 'email.send'" in texts[1] and "NO_ROUTE" in texts[1]
    assert texts[2].startswith("request m3 was not confirmed by the broker: nack")
    assert texts[3] == "cannot reach the broker at amqp://guest:***@host:5672/: gave up after 10s"


def test_not_confirmed_causes_match_the_publishers_failures() -> None:
    # The client maps PublishFailure onto NotConfirmedCause by value.
    failures = {f.value for f in PublishFailure} - {PublishFailure.UNROUTABLE.value}
    assert failures == {c.value for c in NotConfirmedCause}


def test_the_public_surface() -> None:
    assert set(routerd.client.__all__) == {
        "BlockingPublisher",
        "BrokerUnavailable",
        "ConfigError",
        "NotConfirmed",
        "NotConfirmedCause",
        "PublishError",
        "Publisher",
        "Reason",
        "ReasonCode",
        "RequestInvalid",
        "Unroutable",
    }


class FailingSender:
    """Stands in for the AMQP sender: raises what the broker adapter would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def publish(self, *args: object, **kwargs: object) -> None:
        raise self.error

    async def open(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected", "cause"),
    [
        (Returned("", "email.send", "NO_ROUTE"), Unroutable, None),
        (PublishFailed(PublishFailure.NACK, "", "q"), NotConfirmed, NotConfirmedCause.NACK),
        (PublishFailed(PublishFailure.TIMEOUT, "", "q"), NotConfirmed, NotConfirmedCause.TIMEOUT),
        (
            PublishFailed(PublishFailure.CHANNEL_CLOSED, "", "q"),
            NotConfirmed,
            NotConfirmedCause.CHANNEL_CLOSED,
        ),
        (PublishFailed(PublishFailure.ERROR, "", "q"), NotConfirmed, NotConfirmedCause.ERROR),
        (ConnectFailed("amqp://guest:pw@h/", "refused"), BrokerUnavailable, None),
    ],
)
@pytest.mark.anyio
async def test_the_broker_adapters_errors_become_client_errors(
    error: Exception, expected: type[PublishError], cause: NotConfirmedCause | None
) -> None:
    pub = Publisher("amqp://guest:pw@h/", queue="email.send")
    pub._sender = FailingSender(error)  # type: ignore[assignment]
    with pytest.raises(expected) as caught:
        await pub.send(valid_v1(1))
    assert "pw" not in str(caught.value)
    if isinstance(caught.value, NotConfirmed):
        assert caught.value.cause is cause and caught.value.message_id == "msg-1"
    results = await pub.send_many([valid_v1(2), valid_v1(3)])
    assert [type(r) for r in results] == [expected, expected]
    if expected is BrokerUnavailable:
        with pytest.raises(BrokerUnavailable):
            await pub.connect()


def test_a_root_reason_reads_as_the_top_level() -> None:
    reason = Reason(ReasonCode.SCHEMA_VIOLATION, '"to" is a required property', pointer="")
    assert str(RequestInvalid(None, [reason])) == (
        'request is invalid, routerd would reject it: schema_violation at the top level: "to" '
        "is a required property"
    )


def test_a_blocking_publisher_must_be_open() -> None:
    pub = BlockingPublisher(URL, queue="q")
    with pytest.raises(RuntimeError, match="not open"):
        pub.send(valid_v1(1))
    pub.close()  # closing one never opened is harmless
