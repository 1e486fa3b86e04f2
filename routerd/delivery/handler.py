"""What happens to one send request between its delivery and its ack: decide, publish, settle.

The rules (design brief, reliability): ack the source only after the broker confirmed the
decision's publish; a returned (unroutable) publish goes to rejected with reason
`unroutable`; a publish that failed means requeue, but only `max_redeliveries` times, after
which the request goes to rejected with reason `redelivery_limit`. Nothing here knows the
broker client: the handler talks to a `Publish` function that raises `NotConfirmed`, and
is tested without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from routerd.config.model import RouteTable
from routerd.delivery.attempts import AttemptCounter
from routerd.delivery.errors import NotConfirmed, PublishFailed, PublishFailure
from routerd.delivery.outcome import Delivery, Outcome, Published, Settlement
from routerd.delivery.sinks import Sinks
from routerd.pipeline.decide import decide, reject
from routerd.pipeline.envelope import Decision, Reason, ReasonCode

log = logging.getLogger(__name__)

# Returns once the broker confirmed the decision; raises `NotConfirmed` otherwise.
Publish = Callable[[Decision], Awaitable[None]]
# Seconds to hold a refused request before it goes back to the source, by its prior failures.
Pause = Callable[[int], float]

RETRY_PAUSE_MIN = 0.1
RETRY_PAUSE_MAX = 5.0


def retry_pause(prior: int) -> float:
    """0.1 s after the first refusal, doubling up to 5 s.

    A requeued request comes straight back: without a pause, a full queue or a refusing
    rejected queue turns every prefetched request into thousands of publish-nack-requeue
    rounds a second, burning CPU on both sides and the redelivery bound in milliseconds.
    Held, the request keeps its prefetch slot, so consumption slows down by itself.
    """
    return min(RETRY_PAUSE_MAX, RETRY_PAUSE_MIN * 2.0 ** min(prior, 16))


class TableSource(Protocol):
    """Where the running route table is read; the reloader swaps it as a whole."""

    @property
    def table(self) -> RouteTable: ...


class RequestHandler:
    """Runs one delivery through the pipeline and the publisher; answers how to settle it."""

    def __init__(
        self,
        tables: TableSource,
        publish: Publish,
        *,
        sinks: Sinks | None = None,
        attempts: AttemptCounter | None = None,
        pause: Pause | None = None,
        source: str = "",
    ) -> None:
        self._tables = tables
        # The source queue whose deliveries this handler settles: its redelivery bound.
        self.source = source
        self._publish = publish
        # None: requeue at once (tests of the decision logic); the daemon passes retry_pause.
        self._pause = pause
        self._sinks = sinks if sinks is not None else Sinks()
        self.attempts = attempts if attempts is not None else AttemptCounter()

    async def __call__(self, delivery: Delivery) -> Outcome:
        # Read once: a reload in the middle of this request must not mix two tables.
        table = self._tables.table
        decision = decide(table, delivery.envelope)
        publishes: list[Published] = []
        failure: NotConfirmed | None
        try:
            # The common case inline rather than through a helper: a coroutine less per
            # request, and one less frame alive while the confirm is awaited.
            try:
                await self._publish(decision)
            except NotConfirmed as exc:
                publishes.append(Published(decision, exc))
                failure = await self._not_confirmed(table, delivery, decision, exc, publishes)
            else:
                publishes.append(Published(decision))
                failure = None
        except Exception as exc:
            # A routerd bug, not the request's fault: retried within the same bound as a
            # failed publish, so it cannot loop forever either.
            log.exception("routing a send request failed unexpectedly")
            failure = PublishFailed(
                PublishFailure.ERROR, decision.target.exchange, decision.routing_key, repr(exc)
            )
        if failure is None:
            self.attempts.forget(delivery)
            outcome = Outcome.ACK
        elif failure.cause is PublishFailure.CHANNEL_CLOSED:
            outcome = Outcome.LEAVE
        else:
            outcome = await self._failed(table, delivery, failure, publishes)
        if self._sinks:
            self._sinks.settled(Settlement(delivery, decision, tuple(publishes), outcome))
        return outcome

    async def _not_confirmed(
        self,
        table: RouteTable,
        delivery: Delivery,
        decision: Decision,
        error: NotConfirmed,
        publishes: list[Published],
    ) -> NotConfirmed | None:
        """After the decision's publish failed: rejected if it came back, else the failure.

        None once the rejected decision was confirmed instead.
        """
        if error.cause is not PublishFailure.UNROUTABLE or decision.rejected:
            return error
        log.warning(
            "send request unroutable, sending it to rejected",
            extra={
                "message_id": delivery.message_id,
                "target": decision.target.name,
                "routing_key": decision.routing_key,
                "error": str(error),
            },
        )
        reason = Reason(
            ReasonCode.UNROUTABLE,
            f"target {decision.target.name!r} has no queue for routing key "
            f"{decision.routing_key!r}",
        )
        return await self._send_rejected(table, delivery, reason, publishes)

    async def _failed(
        self,
        table: RouteTable,
        delivery: Delivery,
        failure: NotConfirmed,
        publishes: list[Published],
    ) -> Outcome:
        prior = self.attempts.prior(delivery)
        limit = table.source_named(self.source).max_redeliveries
        if prior < limit:
            self.attempts.failed(delivery)
            log.warning(
                "publish failed, requeueing the send request",
                extra={
                    "message_id": delivery.message_id,
                    "deliveries": prior + 1,
                    "limit": limit,
                    "error": str(failure),
                },
            )
            await self._hold(failure, prior)
            return Outcome.REQUEUE
        reason = Reason(
            ReasonCode.REDELIVERY_LIMIT,
            f"publishing the decision failed on {prior + 1} deliveries (limit "
            f"{limit} redeliveries); last error: {failure}",
        )
        refused = await self._send_rejected(table, delivery, reason, publishes)
        if refused is not None:
            # Not even rejected takes it: keep it in the source rather than lose it.
            log.error(
                "send request reached its redelivery limit and rejected refused it too; requeueing",
                extra={"message_id": delivery.message_id, "error": str(refused)},
            )
            await self._hold(refused, prior)
            return Outcome.REQUEUE
        self.attempts.forget(delivery)
        log.warning(
            "send request reached its redelivery limit, sent to rejected",
            extra={"message_id": delivery.message_id, "error": str(failure)},
        )
        return Outcome.ACK

    async def _hold(self, failure: NotConfirmed, prior: int) -> None:
        """Pause before a requeue, unless the publish timeout already made the request wait."""
        if self._pause is not None and failure.cause is not PublishFailure.TIMEOUT:
            await anyio.sleep(self._pause(prior))

    async def _send_rejected(
        self, table: RouteTable, delivery: Delivery, reason: Reason, publishes: list[Published]
    ) -> NotConfirmed | None:
        """Publish the request to rejected; the error when that was not confirmed either."""
        decision = reject(table, delivery.envelope, (reason,))
        try:
            await self._publish(decision)
        except NotConfirmed as exc:
            publishes.append(Published(decision, exc))
            return exc
        publishes.append(Published(decision))
        return None
