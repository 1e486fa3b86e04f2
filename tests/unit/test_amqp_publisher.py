"""The publisher without a broker: properties as pamqp encodes them, one publish per message_id."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import operator
from collections.abc import Callable
from decimal import Decimal
from functools import cache, partial
from typing import Any, cast

import anyio
import pamqp.frame
import pytest
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError, DeliveryError
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from routerd.amqp import publisher as publisher_module
from routerd.amqp.publisher import (
    Publisher,
    basic_properties,
    body_frames,
    content_header_frame,
    encoded_properties,
    encoded_table,
)
from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import AMQP_PROPERTIES, Decision, Envelope
from tests.conftest import SHIPPED_CONFIG
from tests.factories import encode, valid_v1

pytestmark = pytest.mark.anyio

TABLES: list[dict[str, Any]] = [
    {},
    {"x-category": "transactional", "x-rule": "transactional", "x-schema-version": "1"},
    {"b": "2", "a": "1"},
    {"ü": "ö" * 300},
    # Values that compare (and hash) equal but encode differently must never share bytes.
    {"x": 1},
    {"x": True},
    {"x": 1.0},
    {"x": Decimal(1)},
    {"n": None, "t": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},
    {"x-rejected-reasons": [{"code": "invalid_json", "message": "not JSON"}]},
    {"nested": {"a": "b"}, "array": ["a", 1]},
]


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return _shipped()


@pytest.mark.parametrize("headers", TABLES)
def test_header_tables_encode_exactly_as_pamqp_does(headers: dict[str, Any]) -> None:
    reference = Basic.Properties(delivery_mode=2, headers=dict(headers), message_id="m")
    for _ in range(2):  # a miss, then a hit where the table is cacheable
        ours = basic_properties(_decision(headers))
        assert ours.marshal() == reference.marshal()
        assert ContentHeader(0, 10, ours).marshal() == ContentHeader(0, 10, reference).marshal()


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250])
def test_body_frames_are_what_pamqp_marshals(size: int) -> None:
    body = bytes(range(256))[:size] if size <= 256 else b""
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    expected = b"".join(pamqp.frame.marshal(ContentBody(piece), 7) for piece in pieces)
    assert b"".join(body_frames(body, 7, 100)) == expected


def test_the_table_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "TABLE_CACHE_SIZE", 8)
    for i in range(50):
        encoded_table({"x-trace": str(i)})
        assert len(publisher_module._tables) <= 8
    assert encoded_table({"x-trace": "7"}) == encoded_table({"x-trace": "7"})


def test_decisions_keep_their_properties_and_are_persistent(table: RouteTable) -> None:
    envelope = Envelope(
        encode(valid_v1(3)),
        {"x-api": "v1"},
        {
            "message_id": "m-3",
            "content_type": "application/json",
            "type": "send",
            "user_id": "api",
            "delivery_mode": 1,
            "app_id": "api",
        },
    )
    decision = decide(table, envelope)
    properties = basic_properties(decision)
    assert properties.message_id == "m-3"
    assert properties.message_type == "send"
    assert properties.app_id == "api"
    assert properties.user_id is None
    assert properties.delivery_mode == 2
    assert properties.headers == dict(decision.headers)


class FakeChannel:
    """Publishes that confirm when the test says so, recording which are in flight."""

    def __init__(self) -> None:
        self.in_flight: list[str] = []
        self.started: list[str] = []
        self.confirms: dict[str, asyncio.Future[None]] = {}
        self.changed = asyncio.Event()

    async def until(self, check: Callable[[], bool]) -> None:
        while not check():
            self.changed.clear()
            await self.changed.wait()

    async def basic_publish(self, body: bytes, **kwargs: Any) -> None:
        message_id = kwargs["properties"].message_id
        name = body.decode()
        assert message_id not in [m for m, _ in map(_split, self.in_flight)], "overlap"
        self.in_flight.append(f"{message_id}/{name}")
        self.started.append(name)
        confirm = self.confirms[name] = asyncio.get_running_loop().create_future()
        self.changed.set()
        try:
            await confirm
        finally:
            self.in_flight.remove(f"{message_id}/{name}")
            self.changed.set()


def _split(entry: str) -> tuple[str, str]:
    message_id, _, name = entry.partition("/")
    return message_id, name


async def test_publishes_sharing_a_message_id_wait_for_each_other() -> None:
    channel = FakeChannel()
    publisher = Publisher(cast(Channel, channel), 5.0)
    results: list[str] = []

    async def publish(name: str, message_id: str) -> None:
        await publisher.publish(_decision({}, body=name.encode(), message_id=message_id))
        results.append(name)
        channel.changed.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name, message_id in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a")):
                tg.start_soon(publish, name, message_id)
            await channel.until(lambda: sorted(channel.started) == ["a1", "b1"])
            # Another message_id is not held up by the wait.
            channel.confirms["b1"].set_result(None)
            await channel.until(lambda: results == ["b1"])
            for name in ("a1", "a2", "a3"):
                await channel.until(partial(operator.contains, channel.confirms, name))
                assert [_split(e)[1] for e in channel.in_flight] == [name]
                channel.confirms[name].set_result(None)
    assert results == ["b1", "a1", "a2", "a3"]
    assert publisher._busy == {}


async def test_a_cancelled_waiter_does_not_block_the_message_id() -> None:
    channel = FakeChannel()
    publisher = Publisher(cast(Channel, channel), 5.0)
    with anyio.fail_after(5):
        first = asyncio.ensure_future(publisher.publish(_decision({}, body=b"1", message_id="m")))
        await channel.until(lambda: "1" in channel.confirms)
        waiter = asyncio.ensure_future(publisher.publish(_decision({}, body=b"2", message_id="m")))
        await asyncio.sleep(0)  # one step: the waiter reaches its wait without awaiting more
        assert publisher._busy["m"] is not None
        waiter.cancel()
        channel.confirms["1"].set_result(None)
        await first
        await asyncio.gather(waiter, return_exceptions=True)
        assert publisher._busy == {}
        again = asyncio.ensure_future(publisher.publish(_decision({}, body=b"3", message_id="m")))
        await channel.until(lambda: "3" in channel.confirms)
        channel.confirms["3"].set_result(None)
        await again
    assert channel.started == ["1", "3"]


@cache
def _shipped() -> RouteTable:
    return load(SHIPPED_CONFIG)


def _decision(headers: dict[str, Any], *, body: bytes = b"{}", message_id: str = "m") -> Decision:
    return Decision(
        target=_shipped().rejected,
        routing_key="rejected",
        body=body,
        headers=dict(headers),
        properties={"message_id": message_id},
    )


_TEXT = (
    st.text(max_size=90) | st.text(min_size=250, max_size=300) | st.sampled_from(["", "ü" * 128])
)
_PROPERTY_VALUE = (
    _TEXT
    | st.none()
    | st.integers(min_value=-5, max_value=300)
    | st.booleans()
    | st.datetimes(timezones=st.none() | st.just(datetime.UTC))
    | st.binary(max_size=8)
    | st.floats(allow_nan=False)
)


@settings(max_examples=400, deadline=None)
@given(
    properties=st.dictionaries(st.sampled_from(sorted(AMQP_PROPERTIES)), _PROPERTY_VALUE),
    headers=st.sampled_from(TABLES),
    message_id=_TEXT.filter(bool),
    channel=st.integers(min_value=1, max_value=65535),
    size=st.integers(min_value=0, max_value=2**40),
)
def test_encoded_properties_are_the_bytes_pamqp_marshals(
    properties: dict[str, Any], headers: dict[str, Any], message_id: str, channel: int, size: int
) -> None:
    decision = dataclasses.replace(
        _decision(headers), properties={**properties, "message_id": message_id}
    )
    try:
        expected = pamqp.frame.marshal(ContentHeader(0, size, basic_properties(decision)), channel)
    except Exception as exc:
        with pytest.raises(type(exc)):
            encoded_properties(decision, message_id)
        return
    ours = content_header_frame(channel, size, encoded_properties(decision, message_id))
    assert ours == expected


async def test_only_the_brokers_answers_and_timeouts_count_as_confirm_times() -> None:
    loop = asyncio.get_running_loop()

    def settled(outcome: object) -> asyncio.Future[object]:
        future: asyncio.Future[object] = loop.create_future()
        if outcome == "cancel":
            future.cancel()
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        return future

    answered = publisher_module._answered
    assert answered(settled(Basic.Ack()))
    assert answered(settled(DeliveryError(None, Basic.Nack())))
    # A return (PublishError) is a DeliveryError: tests/integration/test_confirm_window.py.
    assert answered(settled(TimeoutError()))
    assert not answered(settled(ChannelInvalidStateError("closed")))
    assert not answered(settled(ConnectionError("lost")))
    assert not answered(settled("cancel"))
