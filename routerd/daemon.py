"""`routerd serve`: one process, one anyio task group, signals, lifecycle.

The task group holds the HTTP endpoint (/metrics, /healthz, /readyz), the reloader, the
signal handler and, in the group's own task, the broker link that consumes, routes and
acks. The link's end is the end of the process: it returns after a graceful stop, and the
rest of the group is then cancelled.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from enum import IntEnum
from functools import partial
from typing import TextIO

import anyio
from anyio import CancelScope
from anyio.abc import TaskStatus

from routerd.allocator import map_large_blocks
from routerd.amqp.link import BrokerLink
from routerd.config.loader import load
from routerd.config.model import ConfigError, RouteTable
from routerd.delivery import DecisionSink, Sinks, sink_name
from routerd.observe import Health, HTTPBindError, Metrics, configure_logging, serve_http
from routerd.observe.loop_lag import watch_loop_lag
from routerd.observe.metrics import MetricsSink
from routerd.observe.systemd import Notifier, SystemdLink
from routerd.reload import Reloader, TableHolder, log_warnings
from routerd.settings import Settings

log = logging.getLogger(__name__)


class ServeExit(IntEnum):
    """How `routerd serve` ends: its process exit code."""

    STOPPED = 0  # a graceful stop
    FORCED = 1  # a second signal cut the drain short
    STARTUP = 2  # bad settings, or a config `routerd lint` rejects: it never started


class Daemon:
    """The routing daemon around one route table; `run()` until `shutdown()` or a signal."""

    def __init__(
        self,
        settings: Settings,
        table: RouteTable,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.holder = TableHolder(table)
        self.metrics = metrics if metrics is not None else Metrics()
        self.health = health if health is not None else Health()
        sinks = self.decision_sinks()
        self.metrics.known_sinks(sink_name(sink) for sink in sinks)
        self.link = BrokerLink(
            settings.broker,
            self.holder,
            self.metrics,
            self.health,
            sinks=Sinks(sinks, failed=self.metrics.count_sink_error),
            shutdown_timeout=settings.shutdown_timeout,
        )
        # systemd's notify protocol; does nothing outside a Type=notify unit.
        self.systemd = SystemdLink(
            notifier if notifier is not None else Notifier(None),
            self.health,
            table.content_hash,
            ", ".join(source.queue for source in table.sources),
        )
        self.reloader = Reloader(
            settings.config_path,
            self.holder,
            self.metrics,
            before_swap=self.link.before_swap,
            listener=self.systemd,
        )
        self.http_port: int | None = None
        self.forced = False
        self._scope: CancelScope | None = None

    def decision_sinks(self) -> tuple[DecisionSink, ...]:
        """Who learns how each send request was settled, in the order they are told.

        The one place a new sink of decisions (the rejections recorder, say) is added.
        """
        return (MetricsSink(self.metrics),)

    def shutdown(self) -> None:
        """Begin the graceful stop (what SIGTERM does)."""
        if not self.link.stopping:
            log.info("stopping: finishing in-flight send requests")
        self.systemd.stopping()
        self.link.stop()

    def force_exit(self) -> None:
        """Stop now (a second signal): unacked deliveries go back to the source queue."""
        log.warning("forced exit: in-flight send requests return to the source unacked")
        self.forced = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED,
    ) -> ServeExit:
        """Serve until stopped; STOPPED after a graceful stop, FORCED when cut short."""
        table = self.holder.table
        self.health.table_loaded = True
        log.info(
            "route table loaded",
            extra={
                "rules": len(table.rules),
                "schemas": len(table.schemas),
                "hash": table.content_hash,
                "source": ", ".join(source.queue for source in table.sources),
            },
        )
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            # Startup, in order:
            # 1. HTTP first, so probes get an answer (alive, not ready) while connecting.
            self.http_port = await tg.start(
                serve_http,
                self.settings.http_host,
                self.settings.http_port,
                self.metrics,
                self.health,
            )
            tg.start_soon(watch_loop_lag, self.metrics.loop_lag)
            # 2. Signals before anything slow: a SIGTERM while the broker is unreachable
            #    must still stop the process gracefully.
            if handle_signals:
                await tg.start(self._signals)
            # 3. The reloader watches from now on; an edit during the connect is not lost.
            await tg.start(self.reloader.run)
            # 4. systemd hears READY=1 once consuming, and the watchdog pings from here on.
            await tg.start(self.systemd.run)
            task_status.started(self)
            # 5. Route until stopped. The link's graceful stop is the shutdown itself:
            #    cancel the consumer, finish in-flight requests within shutdown_timeout,
            #    send their acks, close the connection so the broker requeues the rest.
            await self.link.run()
            self.systemd.stopping()
            # 6. Routing is over: stop the reloader and the HTTP endpoint with it.
            tg.cancel_scope.cancel()
        self._scope = None
        if self.forced:
            return ServeExit.FORCED
        log.info("stopped")
        return ServeExit.STOPPED

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading the route table")
                    self.reloader.request_reload("SIGHUP")
                elif not self.link.stopping:
                    log.info("signal received", extra={"signal": signal.Signals(signum).name})
                    self.shutdown()
                else:
                    self.force_exit()


def load_table(settings: Settings, err: TextIO) -> RouteTable | None:
    """The route table to start with, or None after printing why there is none (lint format)."""
    try:
        return load(settings.config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        print(
            f"routerd serve: {len(exc.problems)} problem(s) in {settings.config_path}; "
            "not starting (check it with `routerd lint`)",
            file=err,
        )
    except Exception as exc:
        print(f"{settings.config_path}: error: cannot load the route config: {exc!r}", file=err)
    return None


async def serve_async(
    settings: Settings, *, err: TextIO | None = None, own_process: bool = False
) -> ServeExit:
    """Run the daemon; `own_process` when routerd owns the process (not inside a test)."""
    err = err if err is not None else sys.stderr
    table = load_table(settings, err)
    if table is None:
        return ServeExit.STARTUP
    log.info("routerd starting", extra=settings.describe())
    for warning in settings.warnings:
        log.warning(warning)
    log_warnings(table)
    if own_process:
        tune_gc()
        # Peak memory with bodies near the size limit follows what is in use, not the heap's
        # holes (routerd/allocator.py has the measurements).
        map_large_blocks()
    try:
        notifier = Notifier.from_environ(os.environ) if own_process else None
        return await Daemon(settings, table, notifier=notifier).run()
    except* HTTPBindError as group:
        for exc in group.exceptions:
            print(f"routerd serve: {exc}", file=err)
    return ServeExit.STARTUP


def tune_gc() -> None:
    """Make the garbage collector cheaper for a process that allocates per request.

    Every request leaves short-lived objects (frames, futures, dicts); with the default
    thresholds the collector ran ~1,800 times per 20,000 requests and cost ~24 µs each
    request, including full passes over the long-lived startup objects (modules, the
    route table). Freezing those and collecting the young generation less often cut GC
    time per 20,000 requests from 0.44 s to 0.10 s (CPU per request -7%) with the same
    peak memory (scripts/bench_serve.py). Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 10)


def serve(settings: Settings) -> ServeExit:
    """Run `routerd serve` with these settings; returns the process exit code."""
    configure_logging(settings.log_format, settings.log_level)
    # aiormq is asyncio-only, so the daemon runs anyio on its asyncio backend.
    return anyio.run(partial(serve_async, settings, own_process=True), backend="asyncio")
