"""The broker link: connect, declare, consume, and do it again whenever the broker goes away.

One session is one connection with these channels: a short-lived one for declarations, the
publisher's confirm channel and one consumer channel per source. Losing any of them ends
the session: its delivery tags are dead, the broker requeues what was not acked, and a fresh
session (after a backoff with jitter) picks the work up again. Restarting the whole session
is simpler than healing single channels and costs little: losses are rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiormq.abc import AbstractConnection
from aiormq.channel import Channel
from aiormq.exceptions import AMQPChannelError, AMQPError, ChannelInvalidStateError

from routerd.amqp.connection import Backoff, BrokerUnavailable, connect
from routerd.amqp.consumer import Consumer
from routerd.amqp.flow import BlockWatch
from routerd.amqp.options import BrokerOptions
from routerd.amqp.publisher import Publisher
from routerd.amqp.topology import TopologyError, declare_topology
from routerd.config.model import RouteTable
from routerd.delivery import AttemptCounter, RequestHandler, Sinks, TableSource, retry_pause
from routerd.delivery.errors import NotConfirmed, PublishFailed, PublishFailure
from routerd.delivery.handler import Publish, StartPublish
from routerd.observe.health import Health
from routerd.observe.metrics import Metrics
from routerd.pipeline.envelope import Decision

log = logging.getLogger(__name__)

# A session that lasted this long counts as healthy: the next loss starts the backoff over.
STABLE_AFTER = 10.0
CLOSE_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 30.0
# Seconds a nacked publish is tried again before the handler hears of it. On a RabbitMQ
# cluster, a quorum queue nacks publishes while it elects a new leader (its leader's node
# died); requeued at once, a request went round its whole redelivery budget within 0.1 s
# and ended in rejected, a good request refused. Seen in tests/cluster/test_node_loss.py.
# Each delivery gets the patience anew, so with max_redeliveries 5 a request rides out
# about 12 s of nacks; more would hold prefetch slots for long while a target refuses for
# good (a full queue with reject-publish: tests/faults/test_publish_refused.py).
NACK_PATIENCE = 2.0
NACK_RETRY_MIN = 0.05
NACK_RETRY_MAX = 1.0


class BrokerLink:
    """Keeps routing send requests from the source until `stop()`; owns every AMQP object."""

    def __init__(
        self,
        broker: BrokerOptions,
        tables: TableSource,
        metrics: Metrics,
        health: Health,
        *,
        sinks: Sinks | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        self.broker = broker
        # How long a graceful stop may take to finish in-flight send requests.
        self.shutdown_timeout = shutdown_timeout
        self._tables = tables
        self._metrics = metrics
        self._health = health
        # The daemon's decision sinks, handed to each session's request handler.
        self._sinks = sinks if sinks is not None else Sinks()
        self._backoff = Backoff(broker.reconnect_min, broker.reconnect_max)
        self._stopping = asyncio.Event()
        self._connection: AbstractConnection | None = None
        # Outlives sessions: a classic queue's failed deliveries come back on a new channel.
        self._attempts = AttemptCounter()
        self.sessions = 0
        self._consuming = False

    def stop(self) -> None:
        """Begin the graceful stop; `run()` returns once it is done."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Route until stopped, reconnecting after every loss."""
        while not self._stopping.is_set():
            started = time.monotonic()
            error = ""
            try:
                await self._session_until_stopped()
            except (BrokerUnavailable, TopologyError, AMQPError, OSError) as exc:
                error = str(exc) or repr(exc)
            except Exception as exc:
                log.exception("broker session failed unexpectedly")
                error = repr(exc)
            finally:
                self._health.connected = False
                self._health.consuming = False
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= STABLE_AFTER:
                self._backoff.reset()
            delay = round(self._backoff.next(), 3)
            if error:
                log.error("broker session failed", extra={"error": error, "retry_in": delay})
            else:
                log.info("reconnecting", extra={"retry_in": delay})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _session_until_stopped(self) -> None:
        # A stop while connecting or declaring must not wait for those (a broker that does
        # not answer takes the connect timeout): nothing was consumed yet, so cancel them. Once
        # consuming, the session drains gracefully by itself.
        session = asyncio.create_task(self._session(), name="routerd-session")
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({session, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done() and not self._consuming:
                session.cancel()
            await asyncio.wait({session})
        finally:
            stop.cancel()
            if not session.done():
                session.cancel()
                await asyncio.wait({session})
        if not session.cancelled():
            session.result()

    async def before_swap(self, table: RouteTable) -> None:
        """Declare a reloaded table's topology before it replaces the running one.

        Raises TopologyError (the reload is refused) when the broker refuses a declaration.
        Without a working connection there is nothing to do: the next session declares the
        table it runs, so a broker outage does not block a good reload.
        """
        connection = self._connection
        if connection is None or connection.is_closed:
            return
        try:
            await declare_topology(connection, table)
        except TopologyError as exc:
            if isinstance(exc.cause, AMQPChannelError):
                raise
            log.warning("cannot declare the new table now", extra={"error": str(exc)})
        except (AMQPError, ChannelInvalidStateError, RuntimeError, OSError) as exc:
            log.warning("cannot declare the new table now", extra={"error": repr(exc)})

    async def _session(self) -> None:
        # Why each step, in order:
        # 1. connect; a failure here is the common case while the broker is down.
        connection = await connect(self.broker)
        self._connection = connection
        self._health.connected = True
        blocks = BlockWatch.of(connection, self._blocked)
        consumers: list[Consumer] = []
        ackers: list[asyncio.Task[None]] = []
        # Publishes tried again after a nack; they end with the session.
        retries: set[asyncio.Task[None]] = set()
        try:
            # 2. declare the running table's topology: a restarted or new broker may lack it.
            table = self._tables.table
            await declare_topology(connection, table)
            # 3. the publisher's confirm channel before consuming, so that the first
            #    delivery can be routed at once.
            publisher = await Publisher.open(
                connection,
                self.broker.publish_timeout,
                blocks,
                confirm_time=self._metrics.confirm_seconds.observe,
            )
            # One channel per source: each has its own prefetch, so a backlog on one source
            # cannot take the in-flight slots of another.
            patient = self._patient(publisher.publish)
            start = self._patient_start(publisher, publisher.publish, retries)
            for source in table.sources:
                handler = RequestHandler(
                    self._tables,
                    patient,
                    sinks=self._sinks,
                    attempts=self._attempts,
                    pause=retry_pause,
                    source=source.queue,
                    start=start,
                )
                channel = await connection.channel(publisher_confirms=False)
                # The concrete class: the consumer reads deliveries on its reader.
                assert isinstance(channel, Channel)
                window = source.window(table.limits)
                if window < source.prefetch:
                    log.info(
                        "prefetch lowered to keep in-flight bodies within max_in_flight_bytes",
                        extra={
                            "queue": source.queue,
                            "prefetch": source.prefetch,
                            "window": window,
                            "max_in_flight_bytes": source.max_in_flight_bytes,
                            "max_body_bytes": table.limits.max_body_bytes,
                        },
                    )
                consumers.append(Consumer(channel, source.queue, window, handler, self._metrics))
            for consumer in consumers:
                ackers.append(asyncio.create_task(consumer.acker.run(), name="routerd-acker"))
            try:
                # 4. consume; from here on the replica does useful work and says so.
                for consumer in consumers:
                    await consumer.start()
                self._consuming_began()
                queues = ", ".join(source.queue for source in table.sources)
                log.info("routing", extra={"queue": queues, "session": self.sessions})
                lost = await self._watch(connection, publisher, consumers, ackers)
                if lost is not None:
                    log.warning("lost the broker", extra={"reason": lost})
                    return
                await asyncio.gather(*(self._drain(consumer) for consumer in consumers))
            finally:
                for acker in ackers:
                    acker.cancel()
                if ackers:
                    await asyncio.wait(ackers)
        finally:
            for retry in retries:
                retry.cancel()
            if retries:
                await asyncio.wait(retries)
            self._session_ended()
            self._blocked(False, quiet=True)
            for consumer in consumers:
                consumer.abandon()
            # Closing returns every unacked delivery to the source queue.
            await _close(connection)

    def _consuming_began(self) -> None:
        """Every consumer of the session consumes: /readyz and the session count say so."""
        self._consuming = True
        self._health.consuming = True
        self.sessions += 1
        if self.sessions > 1:
            self._metrics.reconnects.inc()

    def _session_ended(self) -> None:
        self._consuming = False
        self._health.consuming = False
        self._health.connected = False
        self._connection = None

    def _blocked(self, blocked: bool, *, quiet: bool = False) -> None:
        """connection.blocked or unblocked: tell /readyz, /metrics and the log."""
        if self._health.blocked == blocked:
            return
        self._health.blocked = blocked
        self._metrics.broker_blocked.set(int(blocked))
        if quiet:
            return
        if blocked:
            log.warning(
                "the broker blocks publishing (a memory or disk alarm): routing waits for it, "
                "publish timeouts are paused"
            )
        else:
            log.info("the broker unblocked publishing: routing resumes")

    def _patient(self, publish: Publish) -> Publish:
        """`publish`, with a nack tried again (backoff with jitter) for `NACK_PATIENCE` s.

        Only the nack it gives up on reaches the handler, and so the publish failure
        metric: that counts one failure per delivery, as before.
        """

        async def publish_patiently(decision: Decision) -> None:
            await self._publish_patiently(publish, decision)

        return publish_patiently

    async def _publish_patiently(
        self, publish: Publish, decision: Decision, nacked: PublishFailed | None = None
    ) -> None:
        """Publish until confirmed, trying a nack again for NACK_PATIENCE s from the first
        try (from `nacked`, when the first try was already nacked)."""
        deadline = time.monotonic() + NACK_PATIENCE
        # Made at the first nack: nearly every publish is confirmed at once, and this
        # runs for every request.
        backoff: Backoff | None = None
        failure = nacked
        while True:
            if failure is None:
                try:
                    await publish(decision)
                    return
                except PublishFailed as exc:
                    failure = exc
            left = deadline - time.monotonic()
            if failure.cause is not PublishFailure.NACK or left <= 0 or self.stopping:
                raise failure
            if backoff is None:
                backoff = Backoff(NACK_RETRY_MIN, NACK_RETRY_MAX)
            await asyncio.sleep(min(backoff.next(), left))
            failure = None

    def _patient_start(
        self, publisher: Publisher, publish: Publish, retries: set[asyncio.Task[None]]
    ) -> StartPublish:
        """`publisher.start` with the patience of `_patient`: a nack is tried again in a
        task (kept in `retries`, which the session cancels when it ends)."""

        def start(decision: Decision, then: Callable[[NotConfirmed | None], None]) -> bool:
            def settled(error: NotConfirmed | None) -> None:
                if (
                    isinstance(error, PublishFailed)
                    and error.cause is PublishFailure.NACK
                    and not self.stopping
                ):
                    task = asyncio.ensure_future(self._after_nack(publish, decision, error, then))
                    retries.add(task)
                    task.add_done_callback(retries.discard)
                else:
                    then(error)

            return publisher.start(decision, settled)

        return start

    async def _after_nack(
        self,
        publish: Publish,
        decision: Decision,
        nacked: PublishFailed,
        then: Callable[[NotConfirmed | None], None],
    ) -> None:
        try:
            await self._publish_patiently(publish, decision, nacked)
        except NotConfirmed as exc:
            then(exc)
        except Exception as exc:
            log.exception("publishing a send request again failed unexpectedly")
            then(
                PublishFailed(
                    PublishFailure.ERROR, decision.target.exchange, decision.routing_key, repr(exc)
                )
            )
        except BaseException:
            # The session ended: its consumer channel, and the delivery, are gone.
            then(
                PublishFailed(
                    PublishFailure.CHANNEL_CLOSED,
                    decision.target.exchange,
                    decision.routing_key,
                    "the session ended",
                )
            )
            raise
        else:
            then(None)

    async def _watch(
        self,
        connection: AbstractConnection,
        publisher: Publisher | None,
        consumers: list[Consumer],
        ackers: list[asyncio.Task[None]],
    ) -> str | None:
        """Wait for a stop request (None) or for the loss of anything the session needs:
        the connection, the publisher's channel (when the session publishes), each
        consumer's channel and subscription, each acker."""
        watched: dict[asyncio.Future[Any], str] = {
            connection.closing: "connection closed",
            asyncio.ensure_future(self._stopping.wait()): "",
        }
        if publisher is not None:
            watched[publisher.closing()] = "publisher channel closed"
        for consumer, acker in zip(consumers, ackers, strict=True):
            watched[consumer.channel.closing] = f"consumer channel of {consumer.queue} closed"
            cancelled = asyncio.ensure_future(consumer.cancelled_by_broker.wait())
            watched[cancelled] = f"consumer of {consumer.queue} cancelled"
            watched[asyncio.ensure_future(asyncio.shield(acker))] = "acks failed"
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in watched:
                future.cancel()
        # A loss that coincides with a stop wins: there is nothing left to drain then.
        lost = [future for future in done if watched[future]]
        if not lost:
            return None
        detail = _failure(lost[0])
        return f"{watched[lost[0]]}: {detail}" if detail else watched[lost[0]]

    async def _drain(self, consumer: Consumer) -> None:
        """The graceful stop of one session, bounded by the shutdown timeout."""
        self._health.consuming = False
        try:
            async with asyncio.timeout(self.shutdown_timeout):
                # Stop deliveries first, so that "in flight" stops growing. A stop that
                # lands while aiormq is still tearing down a lost connection must not wait
                # for a basic.cancel-ok that can no longer come (aiormq's rpc can outlive
                # the close by its whole timeout): a closing channel delivers nothing more.
                cancel = asyncio.ensure_future(consumer.cancel())
                cancel.add_done_callback(_retrieve)
                closing = consumer.channel.closing
                try:
                    await asyncio.wait({cancel, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                    delivering_stopped = cancel.done()
                    cancel.cancel()
                if not delivering_stopped:
                    raise ConnectionError("the consumer channel closed before its cancel-ok")
                cancel.result()
                # Let every delivery already here be routed and its ack sent, unless the
                # channel dies meanwhile: then the broker has taken them back already.
                idle = asyncio.ensure_future(consumer.acker.wait_idle())
                closing = consumer.channel.closing
                try:
                    await asyncio.wait({idle, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    idle.cancel()
                    closing.cancel()
                if not idle.done() or idle.cancelled():
                    raise ConnectionError("the consumer channel closed during the stop")
        except TimeoutError:
            log.warning(
                "shutdown timeout: leaving unfinished send requests to the broker",
                extra={"unfinished": len(consumer.acker)},
            )
        except Exception as exc:
            log.warning("graceful stop cut short", extra={"error": repr(exc)})
        else:
            log.info("in-flight send requests finished")


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Read once, so that a failure nobody waits for any more is not logged as unhandled.
    if not future.cancelled():
        future.exception()


def _failure(future: asyncio.Future[Any]) -> str:
    if future.cancelled():
        return ""
    exc = future.exception()
    return repr(exc) if exc is not None else ""


async def _close(connection: AbstractConnection) -> None:
    if connection.is_closed:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await connection.close()
    except Exception as exc:
        log.debug("closing the connection failed", extra={"error": repr(exc)})
