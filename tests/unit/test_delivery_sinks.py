"""Decision sinks: what they are told, metrics as the first, a failing one changes nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import anyio
import orjson
import pytest
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from routerd.amqp.consumer import Consumer
from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.daemon import Daemon
from routerd.delivery import (
    Outcome,
    PublishFailed,
    PublishFailure,
    RequestHandler,
    Settlement,
    Sinks,
    Unroutable,
)
from routerd.observe.metrics import Metrics, MetricsSink
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Decision
from routerd.settings import Settings
from tests.conftest import SHIPPED_CONFIG
from tests.factories import valid_v1
from tests.unit.test_delivery_handler import (
    Behaviour,
    FakePublisher,
    Tables,
    delivery,
    each_path,  # noqa: F401 (the fixture: every test here runs both handler paths too)
    handler_for,
    nack,
    returned_unless_rejected,
    run,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load(SHIPPED_CONFIG)


class Recording:
    def __init__(self) -> None:
        self.seen: list[Settlement] = []

    def settled(self, settlement: Settlement) -> None:
        self.seen.append(settlement)


class Broken:
    def settled(self, settlement: Settlement) -> None:
        raise RuntimeError("the sink's own bug")


def handler_with(
    table: RouteTable, behaviour: Behaviour, sinks: Sinks
) -> tuple[RequestHandler, FakePublisher]:
    publisher = FakePublisher(behaviour)
    return handler_for(Tables(table), publisher, sinks=sinks), publisher


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_sink_sees_the_decision_every_publish_and_the_outcome(table: RouteTable) -> None:
    sink = Recording()
    handler, _ = handler_with(table, returned_unless_rejected, Sinks((sink,)))
    request = delivery()
    assert await run(handler, request) is Outcome.ACK
    [settlement] = sink.seen
    assert settlement.delivery is request
    assert settlement.outcome is Outcome.ACK
    first, second = settlement.publishes
    assert first.decision is settlement.decision
    assert not settlement.decision.rejected
    assert isinstance(first.failure, Unroutable)
    assert second.failure is None
    assert second.decision.rejected
    assert settlement.confirmed is second.decision


async def test_a_sink_hears_of_requeues_and_left_deliveries_too(table: RouteTable) -> None:
    sink = Recording()
    handler, _ = handler_with(table, nack, Sinks((sink,)))
    assert await run(handler, delivery()) is Outcome.REQUEUE
    closed, _ = handler_with(
        table,
        lambda d: PublishFailed(PublishFailure.CHANNEL_CLOSED, "", ""),
        Sinks((sink,)),
    )
    assert await run(closed, delivery()) is Outcome.LEAVE
    requeued, left = sink.seen
    assert requeued.outcome is Outcome.REQUEUE and requeued.confirmed is None
    [failed] = requeued.publishes
    assert failed.failure is not None and failed.failure.cause is PublishFailure.NACK
    assert left.outcome is Outcome.LEAVE and left.confirmed is None


async def test_the_metrics_sink_counts_routed_rejected_and_failures(table: RouteTable) -> None:
    metrics = Metrics()
    sinks = Sinks((MetricsSink(metrics),))
    routed, publisher = handler_with(table, lambda d: None, sinks)
    assert await run(routed, delivery(1)) is Outcome.ACK
    [decision] = publisher.published
    labels = {
        "target": decision.target.name,
        "category": decision.category or "",
        "rule": decision.rule or "",
    }
    assert sample(metrics, "routerd_requests_routed_total", **labels) == 1

    returned, _ = handler_with(table, returned_unless_rejected, sinks)
    assert await run(returned, delivery(2)) is Outcome.ACK
    headed = decide(table, delivery(2).envelope).target.name
    failures = "routerd_publish_failures_total"
    assert sample(metrics, failures, target=headed, cause="unroutable") == 1
    assert sample(metrics, "routerd_requests_rejected_total", reason="unroutable") == 1

    failing, _ = handler_with(table, nack, sinks)
    assert await run(failing, delivery(3)) is Outcome.REQUEUE
    headed = decide(table, delivery(3).envelope).target.name
    assert sample(metrics, failures, target=headed, cause="nack") == 1


async def test_a_failing_sink_is_logged_counted_and_the_next_sink_still_runs(
    table: RouteTable, caplog: pytest.LogCaptureFixture
) -> None:
    after = Recording()
    metrics = Metrics()
    sinks = Sinks((Broken(), after), failed=metrics.count_sink_error)
    handler, publisher = handler_with(table, lambda d: None, sinks)
    with caplog.at_level(logging.ERROR, logger="routerd.delivery.sinks"):
        assert await run(handler, delivery()) is Outcome.ACK
    assert len(publisher.published) == 1
    assert [s.outcome for s in after.seen] == [Outcome.ACK]
    assert sample(metrics, "routerd_sink_errors_total", sink="Broken") == 1
    [record] = caplog.records
    assert record.sink == "Broken"  # type: ignore[attr-defined]
    assert record.exc_info is not None


async def test_a_failing_counter_of_sink_failures_changes_nothing(table: RouteTable) -> None:
    def count(sink: str) -> None:
        raise RuntimeError("metrics are broken too")

    handler, _ = handler_with(table, lambda d: None, Sinks((Broken(),), failed=count))
    assert await run(handler, delivery()) is Outcome.ACK


def test_the_daemon_tells_metrics_first_and_counts_sink_errors_from_zero(
    table: RouteTable,
) -> None:
    daemon = Daemon(Settings(http_port=0), table)
    sinks = daemon.decision_sinks()
    assert isinstance(sinks[0], MetricsSink)
    assert sample(daemon.metrics, "routerd_sink_errors_total", sink="MetricsSink") == 0
    assert 'routerd_sink_errors_total{sink="MetricsSink"} 0.0' in daemon.metrics.render().decode()


class AckChannel:
    """What the consumer and its acker use of an aiormq channel, recording the frames sent."""

    number = 1
    is_closed = False

    def __init__(self) -> None:
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks: list[tuple[int, bool]] = []
        self.rejects: list[int] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.acks.append((delivery_tag, multiple))

    async def basic_reject(
        self, delivery_tag: int, *, requeue: bool = True, wait: bool = True
    ) -> None:
        self.rejects.append(delivery_tag)


def delivered(tag: int, channel: AckChannel) -> DeliveredMessage:
    body = orjson.dumps(valid_v1(tag))
    properties = Basic.Properties(message_id=f"msg-{tag}", content_type="application/json")
    return DeliveredMessage(
        delivery=Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, routing_key="email.send"),
        header=ContentHeader(0, len(body), properties),
        body=body,
        channel=cast(AbstractChannel, channel),
    )


def settled_tags(channel: AckChannel) -> list[int]:
    """Every tag the channel's frames settle, as the broker counts them; a repeat is a bug."""
    tags: list[int] = []
    for tag, multiple in channel.acks:
        tags += [t for t in range(1, tag + 1) if t not in tags] if multiple else [tag]
    return tags + channel.rejects


@pytest.mark.parametrize("publish_fails", [False, True])
async def test_a_failing_sink_neither_loses_nor_double_settles(
    table: RouteTable, publish_fails: bool
) -> None:
    channel = AckChannel()
    metrics = Metrics()
    sinks = Sinks((Broken(), MetricsSink(metrics)), failed=metrics.count_sink_error)

    def behaviour(d: Decision) -> Exception | None:
        return nack(d) if publish_fails and not d.rejected else None

    handler, publisher = handler_with(table, behaviour, sinks)
    consumer = Consumer(cast(Any, channel), "email.send", 10, handler, metrics)
    acker = asyncio.create_task(consumer.acker.run())
    try:
        with anyio.fail_after(5):
            for tag in (1, 2, 3):
                consumer._on_message(delivered(tag, channel))
            await consumer.acker.wait_idle()
    finally:
        acker.cancel()
    assert sorted(settled_tags(channel)) == [1, 2, 3], "each delivery settled exactly once"
    if publish_fails:
        assert channel.rejects == [1, 2, 3] and channel.acks == []
        assert publisher.published == []
    else:
        assert channel.rejects == []
        assert len(publisher.published) == 3
    assert sample(metrics, "routerd_sink_errors_total", sink="Broken") == 3
    assert consumer.in_flight == 0
