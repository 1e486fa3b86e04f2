"""`routerd rejections record`: the consumer of the rejected queue that keeps every rejection.

One process, one anyio task group, like `routerd serve`: the HTTP endpoint (/metrics,
/healthz, /readyz), the signal handler, the batch writer, retention pruning and, in the
group's own task, the queue link that consumes the rejected queue and acks each delivery
only once its row is committed. The link's end is the end of the process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from functools import partial
from typing import TextIO

import anyio
from anyio import CancelScope
from anyio.abc import TaskStatus
from prometheus_client import Counter, Gauge

from routerd.amqp.connection import Backoff
from routerd.amqp.queue_link import QueueLink
from routerd.config.model import RouteTable
from routerd.daemon import load_table
from routerd.delivery import Delivery, Outcome
from routerd.observe import Health, HTTPBindError, Metrics, configure_logging, serve_http
from routerd.rejections.record import rejection_of
from routerd.rejections.settings import RecorderSettings
from routerd.rejections.store import RejectionStore, StoreError
from routerd.rejections.writer import BatchWriter
from routerd.reload import TableHolder

log = logging.getLogger(__name__)

# Retention is enforced this often (and at start): rows live at most this much longer.
PRUNE_EVERY = timedelta(hours=1)


class RecorderExit(IntEnum):
    STOPPED = 0  # a graceful stop
    FORCED = 1  # a second signal cut the drain short
    STARTUP = 2  # bad settings, config or database URL: it never started


class RecorderHealth(Health):
    """Serve's readiness plus the database: rows that cannot be committed are not acked."""

    __slots__ = ("database",)

    def __init__(self) -> None:
        super().__init__(table_loaded=True)
        self.database = False

    @property
    def ready(self) -> bool:
        return self.connected and self.consuming and self.table_loaded and self.database

    def reasons(self) -> list[str]:
        reasons = Health.reasons(self)
        if not self.database:
            reasons.append("the rejections database is not writable")
        return reasons


class RecorderMetrics:
    """The recorder's own metrics, in the same registry as the consumer's."""

    def __init__(self, metrics: Metrics, writer: BatchWriter) -> None:
        r = metrics.registry
        self.recorded = Counter(
            "routerd_rejections_recorded_total", "Rejections written as new rows.", registry=r
        )
        self.duplicates = Counter(
            "routerd_rejections_duplicates_total",
            "Rejections delivered again whose row was already there (redeliveries).",
            registry=r,
        )
        self.write_failures = Counter(
            "routerd_rejections_write_failures_total",
            "Batch inserts that failed; their deliveries stayed unacked and were retried.",
            registry=r,
        )
        self.pruned = Counter(
            "routerd_rejections_pruned_total", "Rows deleted by retention.", registry=r
        )
        waiting = Gauge(
            "routerd_rejections_waiting",
            "Rejections queued for the next insert, their deliveries unacked.",
            registry=r,
        )
        waiting.set_function(lambda: len(writer))

    def written(self, new: int, already: int) -> None:
        self.recorded.inc(new)
        self.duplicates.inc(already)


class Recorder:
    """Records the rejected queue into `store` until `shutdown()` or a signal."""

    def __init__(
        self,
        settings: RecorderSettings,
        table: RouteTable,
        store: RejectionStore,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.store = store
        self.metrics = metrics if metrics is not None else Metrics()
        self.health = RecorderHealth()
        common = settings.common
        self.writer = BatchWriter(
            store,
            batch_size=settings.batch_size,
            backoff=Backoff(common.reconnect_min, common.reconnect_max),
            on_written=self._written,
            on_failed=self._failed,
        )
        self.recorder_metrics = RecorderMetrics(self.metrics, self.writer)
        self.queue = rejected_queue(table)
        self.link = QueueLink(
            common.broker,
            TableHolder(table),
            self.queue,
            self._handle,
            self.metrics,
            self.health,
            # Twice the batch: the next batch arrives while the previous one commits.
            prefetch=2 * settings.batch_size,
            shutdown_timeout=common.shutdown_timeout,
        )
        self.http_port: int | None = None
        self.forced = False
        self._stopping = asyncio.Event()
        self._scope: CancelScope | None = None

    async def _handle(self, delivery: Delivery) -> Outcome:
        rejection = rejection_of(
            delivery.envelope, datetime.now(UTC), versions=self.table.schema_version
        )
        await self.writer.record(rejection)
        return Outcome.ACK

    def _written(self, new: int, already: int) -> None:
        self.health.database = True
        self.recorder_metrics.written(new, already)

    def _failed(self, exc: BaseException) -> None:
        self.health.database = False
        self.recorder_metrics.write_failures.inc()

    def shutdown(self) -> None:
        """Begin the graceful stop (what SIGTERM does)."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the rejections in flight")
        self._stopping.set()
        self.link.stop()

    def force_exit(self) -> None:
        log.warning("forced exit: unrecorded rejections return to the queue unacked")
        self.forced = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: TaskStatus[Recorder] = anyio.TASK_STATUS_IGNORED,
    ) -> RecorderExit:
        common = self.settings.common
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            # 1. HTTP first, so probes get an answer (alive, not ready) while connecting.
            self.http_port = await tg.start(
                serve_http, common.http_host, common.http_port, self.metrics, self.health
            )
            # 2. Signals before anything slow: a database or broker that does not answer
            #    must not keep SIGTERM from stopping the process.
            if handle_signals:
                await tg.start(self._signals)
            task_status.started(self)
            # 3. The schema before consuming: every insert would fail without it.
            if await self._migrate():
                # 4. The writer and retention, then consume until stopped; the link's
                #    graceful stop waits (within shutdown_timeout) for rows in flight to
                #    commit and their acks to leave, and the broker requeues the rest.
                tg.start_soon(self.writer.run)
                tg.start_soon(self._prune)
                await self.link.run()
            # 5. Recording is over: stop the writer, pruning and the HTTP endpoint.
            tg.cancel_scope.cancel()
        self._scope = None
        with anyio.CancelScope(shield=True):
            await self.store.close()
        if self.forced:
            return RecorderExit.FORCED
        log.info("stopped")
        return RecorderExit.STOPPED

    async def _migrate(self) -> bool:
        """Create or migrate the schema, retrying while the database is unreachable;
        False when stopped before it could."""
        backoff = Backoff(self.settings.common.reconnect_min, self.settings.common.reconnect_max)
        while not self._stopping.is_set():
            try:
                version = await self.store.migrate()
            except Exception as exc:
                delay = round(backoff.next(), 3)
                log.error(
                    "cannot prepare the rejections database",
                    extra={
                        "db": self.store.shown_url,
                        "error": _first_line(exc),
                        "retry_in": delay,
                    },
                )
                with anyio.move_on_after(delay):
                    await self._stopping.wait()
                continue
            self.health.database = True
            log.info(
                "recording rejections",
                extra={"queue": self.queue, "db": self.store.shown_url, "schema": version},
            )
            return True
        return False

    async def _prune(self) -> None:
        retention = self.settings.retention
        while True:
            try:
                pruned = await self.store.prune(datetime.now(UTC) - retention)
            except Exception as exc:
                log.warning("pruning old rejections failed", extra={"error": _first_line(exc)})
            else:
                self.recorder_metrics.pruned.inc(pruned)
                if pruned:
                    log.info("pruned old rejections", extra={"rows": pruned})
            await anyio.sleep(min(PRUNE_EVERY, retention).total_seconds())

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: the recorder has nothing to reload")
                elif not self._stopping.is_set():
                    log.info("signal received", extra={"signal": signal.Signals(signum).name})
                    self.shutdown()
                else:
                    self.force_exit()


def rejected_queue(table: RouteTable) -> str:
    """The queue the recorder consumes: the rejected target's first queue."""
    queues = table.rejected.queues
    if not queues:
        raise ValueError(
            "the rejected target has no queue to consume; give it one under rejected.queues"
        )
    return queues[0].name


async def record_async(settings: RecorderSettings, *, err: TextIO | None = None) -> RecorderExit:
    err = err if err is not None else sys.stderr
    table = load_table(settings.common, err)
    if table is None:
        return RecorderExit.STARTUP
    try:
        rejected_queue(table)
    except ValueError as exc:
        print(f"routerd rejections record: {settings.common.config_path}: {exc}", file=err)
        return RecorderExit.STARTUP
    try:
        store = RejectionStore.open(settings.db)
    except StoreError as exc:
        print(f"routerd rejections record: {exc}", file=err)
        return RecorderExit.STARTUP
    log.info("routerd rejections recorder starting", extra=_describe(settings, store))
    try:
        return await Recorder(settings, table, store).run()
    except* HTTPBindError as group:
        for bind_error in group.exceptions:
            print(f"routerd rejections record: {bind_error}", file=err)
    return RecorderExit.STARTUP


def record(settings: RecorderSettings) -> RecorderExit:
    """Run `routerd rejections record`; returns the process exit code."""
    configure_logging(settings.common.log_format, settings.common.log_level)
    return anyio.run(partial(record_async, settings), backend="asyncio")


def _describe(settings: RecorderSettings, store: RejectionStore) -> dict[str, object]:
    out = settings.common.describe()
    out.update(
        db=store.shown_url,
        retention=str(settings.retention),
        batch_size=settings.batch_size,
    )
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).split("\n", 1)[0] or type(exc).__name__)[:500]
