"""What happens to one send request between its delivery and its ack: decide, publish, settle.

The rules (design brief, reliability): ack the source only after the broker confirmed the
decision's publish; a returned (unroutable) publish goes to rejected with reason
`unroutable`; a publish that failed means requeue, but only `max_redeliveries` times, after
which the request goes to rejected with reason `redelivery_limit`. Nothing here touches
aiormq: the handler talks to a `Publish` function, so it is tested without a broker.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from routerd.amqp.acker import Outcome
from routerd.amqp.publisher import PublishFailed, Unroutable
from routerd.config.model import RouteTable
from routerd.observe.metrics import Metrics
from routerd.pipeline.decide import decide, reject
from routerd.pipeline.envelope import Decision, Envelope, Reason

log = logging.getLogger(__name__)

Publish = Callable[[Decision], Awaitable[None]]


class TableSource(Protocol):
    """Where the running route table is read; the reloader swaps it as a whole."""

    @property
    def table(self) -> RouteTable: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    envelope: Envelope
    # Set by the broker when the delivery was delivered before (to anyone).
    redelivered: bool
    # Earlier failed deliveries as the broker counts them (`x-delivery-count`, quorum
    # queues only); None when the queue does not count.
    delivery_count: int | None


class AttemptCounter:
    """Failed deliveries per request for queues that do not count them (classic queues).

    Memory is bounded: the oldest entries go first once `capacity` is reached. Counts are
    per process, so with many replicas a request may be tried up to (replicas x bound)
    times; quorum queues count exactly and are what the shipped config uses.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._failures: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def key(envelope: Envelope) -> str:
        message_id = envelope.properties.get("message_id")
        if isinstance(message_id, str) and message_id:
            return "id:" + message_id
        return "body:" + hashlib.blake2b(envelope.body, digest_size=16).hexdigest()

    def prior(self, delivery: Delivery) -> int:
        if delivery.delivery_count is not None:
            return delivery.delivery_count
        if not delivery.redelivered or not self._failures:
            return 0
        return self._failures.get(self.key(delivery.envelope), 0)

    def failed(self, delivery: Delivery) -> None:
        if delivery.delivery_count is not None:
            return
        key = self.key(delivery.envelope)
        self._failures[key] = self._failures.pop(key, 0) + 1
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def forget(self, delivery: Delivery) -> None:
        if delivery.redelivered and self._failures:
            self._failures.pop(self.key(delivery.envelope), None)

    def __len__(self) -> int:
        return len(self._failures)


class RequestHandler:
    """Runs one delivery through the pipeline and the publisher; answers ack, requeue or None.

    None means "leave it": the publisher channel is gone, the connection is about to be
    torn down, and closing the consumer channel gives the delivery back to the source
    without counting it as a failure of this request.
    """

    def __init__(
        self,
        tables: TableSource,
        publish: Publish,
        metrics: Metrics,
        attempts: AttemptCounter | None = None,
    ) -> None:
        self._tables = tables
        self._publish = publish
        self._metrics = metrics
        self.attempts = attempts if attempts is not None else AttemptCounter()

    async def __call__(self, delivery: Delivery) -> Outcome | None:
        # Read once: a reload in the middle of this request must not mix two tables.
        table = self._tables.table
        decision = decide(table, delivery.envelope)
        failure: PublishFailed | Unroutable | None
        try:
            # The common case inline rather than through `_send`: a coroutine less per
            # request, and one less frame alive while the confirm is awaited.
            try:
                await self._publish(decision)
            except (Unroutable, PublishFailed) as exc:
                self._count_failure(decision, exc)
                failure = await self._not_confirmed(table, delivery, decision, exc)
            else:
                self._count_confirmed(decision)
                failure = None
        except Exception as exc:
            # A routerd bug, not the request's fault: retried within the same bound as a
            # failed publish, so it cannot loop forever either.
            log.exception("routing a send request failed unexpectedly")
            failure = PublishFailed(
                "error", decision.target.exchange, decision.routing_key, repr(exc)
            )
        if failure is None:
            self.attempts.forget(delivery)
            return Outcome.ACK
        if isinstance(failure, PublishFailed) and failure.cause == "channel_closed":
            return None
        return await self._failed(table, delivery, failure)

    async def _not_confirmed(
        self,
        table: RouteTable,
        delivery: Delivery,
        decision: Decision,
        error: PublishFailed | Unroutable,
    ) -> PublishFailed | Unroutable | None:
        """After the decision's publish failed: rejected if it came back, else the failure.

        None once the rejected decision was confirmed instead.
        """
        if isinstance(error, PublishFailed) or decision.rejected:
            return error
        log.warning(
            "send request unroutable, sending it to rejected",
            extra={
                "message_id": _message_id(delivery),
                "target": decision.target.name,
                "routing_key": decision.routing_key,
                "error": str(error),
            },
        )
        reason = Reason(
            "unroutable",
            f"target {decision.target.name!r} has no queue for routing key "
            f"{decision.routing_key!r}",
        )
        return await self._send_rejected(table, delivery, reason)

    async def _failed(
        self, table: RouteTable, delivery: Delivery, failure: PublishFailed | Unroutable
    ) -> Outcome:
        prior = self.attempts.prior(delivery)
        limit = table.source.max_redeliveries
        if prior < limit:
            self.attempts.failed(delivery)
            log.warning(
                "publish failed, requeueing the send request",
                extra={
                    "message_id": _message_id(delivery),
                    "deliveries": prior + 1,
                    "limit": limit,
                    "error": str(failure),
                },
            )
            return Outcome.REQUEUE
        reason = Reason(
            "redelivery_limit",
            f"publishing the decision failed on {prior + 1} deliveries (limit "
            f"{limit} redeliveries); last error: {failure}",
        )
        refused = await self._send_rejected(table, delivery, reason)
        if refused is not None:
            # Not even rejected takes it: keep it in the source rather than lose it.
            log.error(
                "send request reached its redelivery limit and rejected refused it too; requeueing",
                extra={"message_id": _message_id(delivery), "error": str(refused)},
            )
            return Outcome.REQUEUE
        self.attempts.forget(delivery)
        log.warning(
            "send request reached its redelivery limit, sent to rejected",
            extra={"message_id": _message_id(delivery), "error": str(failure)},
        )
        return Outcome.ACK

    async def _send_rejected(
        self, table: RouteTable, delivery: Delivery, reason: Reason
    ) -> PublishFailed | Unroutable | None:
        """Publish the request to rejected; the error when that was not confirmed either."""
        try:
            await self._send(reject(table, delivery.envelope, (reason,)))
        except (Unroutable, PublishFailed) as exc:
            return exc
        return None

    async def _send(self, decision: Decision) -> None:
        try:
            await self._publish(decision)
        except (Unroutable, PublishFailed) as exc:
            self._count_failure(decision, exc)
            raise
        self._count_confirmed(decision)

    def _count_confirmed(self, decision: Decision) -> None:
        if decision.reasons:
            self._metrics.count_rejected(decision.reasons[0].code)
        else:
            self._metrics.count_routed(
                decision.target.name, decision.category or "", decision.rule or ""
            )

    def _count_failure(self, decision: Decision, error: PublishFailed | Unroutable) -> None:
        cause = error.cause if isinstance(error, PublishFailed) else "unroutable"
        self._metrics.publish_failures.labels(decision.target.name, cause).inc()


def _message_id(delivery: Delivery) -> str:
    value = delivery.envelope.properties.get("message_id")
    return value if isinstance(value, str) else ""
