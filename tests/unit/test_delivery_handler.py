"""One send request from delivery to outcome, with a fake publisher: no broker involved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import orjson
import pytest

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.delivery import (
    AttemptCounter,
    Delivery,
    NotConfirmed,
    Outcome,
    PublishFailed,
    PublishFailure,
    RequestHandler,
    Unroutable,
)
from routerd.pipeline.envelope import Decision, Envelope
from tests.conftest import SHIPPED_CONFIG
from tests.factories import expected_category, valid_v1

pytestmark = pytest.mark.anyio

Behaviour = Callable[[Decision], Exception | None]


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load(SHIPPED_CONFIG)


class Tables:
    """A table holder that counts reads: a handler must read the table once per request."""

    def __init__(self, table: RouteTable) -> None:
        self._table = table
        self.reads = 0

    @property
    def table(self) -> RouteTable:
        self.reads += 1
        return self._table


class FakePublisher:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.published: list[Decision] = []
        # start() says False for this many publishes first: they must wait for room.
        self.full = 0

    async def __call__(self, decision: Decision) -> None:
        error = self.behaviour(decision)
        if error is not None:
            raise error
        self.published.append(decision)

    def start(self, decision: Decision, then: Callable[[NotConfirmed | None], None]) -> bool:
        """As Publisher.start: the answer comes later, from a loop callback."""
        if self.full:
            self.full -= 1
            return False
        error = self.behaviour(decision)
        if error is not None and not isinstance(error, NotConfirmed):
            raise error
        if error is None:
            self.published.append(decision)
        asyncio.get_running_loop().call_soon(then, error)
        return True


# How the tests hand a delivery to the handler: `await run(handler, d)`, or `handler.begin`
# with the publisher's `start` (what the daemon does). Every test runs both ways.
PATHS = ("coroutine", "callbacks")
path = PATHS[0]


@pytest.fixture(autouse=True, params=PATHS)
def each_path(request: pytest.FixtureRequest) -> Iterator[None]:
    global path
    path = request.param
    yield
    path = PATHS[0]


def handler_for(tables: Tables, publisher: FakePublisher, **options: Any) -> RequestHandler:
    start = publisher.start if path == "callbacks" else None
    return RequestHandler(tables, publisher, start=start, **options)


async def run(handler: RequestHandler, request: Delivery) -> Outcome:
    """The delivery's outcome, by the path under test; it must be settled exactly once."""
    if path == "coroutine":
        return await handler(request)
    outcomes: list[Outcome] = []
    settled = anyio.Event()
    tasks: list[asyncio.Task[None]] = []

    def settle(outcome: Outcome) -> None:
        outcomes.append(outcome)
        settled.set()

    handler.begin(request, settle, lambda work: tasks.append(asyncio.ensure_future(work())))
    with anyio.fail_after(10):
        await settled.wait()
        await asyncio.gather(*tasks)
    [outcome] = outcomes
    return outcome


def delivery(
    seed: int = 1, *, redelivered: bool = False, count: int | None = None, **overrides: object
) -> Delivery:
    body = orjson.dumps(valid_v1(seed, **overrides))
    envelope = Envelope(body, {}, {"message_id": f"msg-{seed}", "content_type": "application/json"})
    return Delivery(envelope, redelivered, count)


def make(table: RouteTable, behaviour: Behaviour) -> tuple[RequestHandler, FakePublisher, Tables]:
    publisher = FakePublisher(behaviour)
    tables = Tables(table)
    return handler_for(tables, publisher), publisher, tables


def nack(decision: Decision) -> Exception:
    return PublishFailed(PublishFailure.NACK, decision.target.exchange, decision.routing_key)


def returned_unless_rejected(decision: Decision) -> Exception | None:
    if decision.rejected:
        return None
    return Unroutable(decision.target.exchange, decision.routing_key, "NO_ROUTE")


async def test_a_confirmed_decision_is_acked(table: RouteTable) -> None:
    handler, publisher, tables = make(table, lambda d: None)
    assert await run(handler, delivery()) is Outcome.ACK
    [decision] = publisher.published
    assert not decision.rejected
    assert decision.headers["x-category"] == expected_category(valid_v1(1))
    assert tables.reads == 1


async def test_a_publish_that_has_to_wait_is_awaited_in_a_task(table: RouteTable) -> None:
    handler, publisher, _ = make(table, lambda d: None)
    publisher.full = 1  # the callbacks path: start() says the writer has no room
    assert await run(handler, delivery()) is Outcome.ACK
    assert len(publisher.published) == 1
    assert publisher.full == (0 if path == "callbacks" else 1)


async def test_an_unroutable_decision_goes_to_rejected(table: RouteTable) -> None:
    handler, publisher, tables = make(table, returned_unless_rejected)
    assert await run(handler, delivery()) is Outcome.ACK
    [decision] = publisher.published
    assert decision.target is table.rejected
    assert decision.headers["x-rejected-reason"] == "unroutable"
    assert decision.body == delivery().envelope.body
    assert tables.reads == 1


async def test_unroutable_and_rejected_failing_is_a_failure(table: RouteTable) -> None:
    def behaviour(d: Decision) -> Exception | None:
        return nack(d) if d.rejected else returned_unless_rejected(d)

    handler, publisher, _ = make(table, behaviour)
    assert await run(handler, delivery()) is Outcome.REQUEUE
    assert publisher.published == []


async def test_a_closed_channel_leaves_the_delivery_alone(table: RouteTable) -> None:
    handler, _, _ = make(table, lambda d: PublishFailed(PublishFailure.CHANNEL_CLOSED, "", ""))
    assert await run(handler, delivery()) is Outcome.LEAVE
    assert len(handler.attempts) == 0


async def test_classic_queue_failures_are_counted_in_memory(table: RouteTable) -> None:
    fail = True

    def behaviour(d: Decision) -> Exception | None:
        return nack(d) if fail and not d.rejected else None

    handler, publisher, _ = make(table, behaviour)
    limit = table.source.max_redeliveries
    assert await run(handler, delivery(redelivered=False)) is Outcome.REQUEUE
    for _ in range(limit - 1):
        assert await run(handler, delivery(redelivered=True)) is Outcome.REQUEUE
    assert publisher.published == []
    assert await run(handler, delivery(redelivered=True)) is Outcome.ACK
    [decision] = publisher.published
    assert decision.headers["x-rejected-reason"] == "redelivery_limit"
    assert "failed on 6 deliveries" in decision.reasons[0].message
    assert len(handler.attempts) == 0


async def test_quorum_queues_count_for_us(table: RouteTable) -> None:
    handler, publisher, _ = make(table, lambda d: None if d.rejected else nack(d))
    limit = table.source.max_redeliveries
    assert await run(handler, delivery(redelivered=True, count=limit - 1)) is Outcome.REQUEUE
    assert len(handler.attempts) == 0
    assert await run(handler, delivery(redelivered=True, count=limit)) is Outcome.ACK
    assert publisher.published[0].headers["x-rejected-reason"] == "redelivery_limit"


async def test_a_success_after_failures_is_routed_normally(table: RouteTable) -> None:
    handler, publisher, _ = make(table, lambda d: None)
    assert await run(handler, delivery(redelivered=True, count=table.source.max_redeliveries)) is (
        Outcome.ACK
    )
    assert not publisher.published[0].rejected


async def test_at_the_limit_a_failing_rejected_keeps_the_request(table: RouteTable) -> None:
    handler, publisher, _ = make(table, nack)
    assert await run(handler, delivery(redelivered=True, count=99)) is Outcome.REQUEUE
    assert publisher.published == []


def test_attempt_counter_is_bounded() -> None:
    counter = AttemptCounter(capacity=3)
    for seed in range(10):
        counter.failed(delivery(seed))
    assert len(counter) == 3
    assert counter.prior(delivery(9, redelivered=True)) == 1
    assert counter.prior(delivery(0, redelivered=True)) == 0


def test_attempt_counter_keys_by_body_without_message_id() -> None:
    a = Delivery(Envelope(b"same"), True, None)
    counter = AttemptCounter()
    counter.failed(a)
    assert counter.prior(Delivery(Envelope(b"same"), True, None)) == 1
    assert counter.prior(Delivery(Envelope(b"other"), True, None)) == 0


async def test_a_routerd_bug_is_bounded_like_a_failed_publish(table: RouteTable) -> None:
    handler, publisher, _ = make(table, lambda d: None if d.rejected else RuntimeError("bug"))
    assert await run(handler, delivery(redelivered=True, count=0)) is Outcome.REQUEUE
    limit = table.source.max_redeliveries
    assert await run(handler, delivery(redelivered=True, count=limit)) is Outcome.ACK
    [decision] = publisher.published
    assert decision.headers["x-rejected-reason"] == "redelivery_limit"
    assert "RuntimeError('bug')" in decision.reasons[0].message
