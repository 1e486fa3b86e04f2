"""Prometheus metrics of one routerd process, all in one registry so tests can make many."""

from __future__ import annotations

from collections.abc import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from routerd.config.model import RouteTable
from routerd.delivery.outcome import Settlement
from routerd.observe.loop_lag import LAG_BUCKETS
from routerd.observe.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

# Routing one send request takes tens of microseconds in the pipeline, but the time the
# daemon measures includes waiting for the broker's publish confirm, which under load or
# during a broker hiccup stretches to seconds: 0.1 ms to 5 s covers both ends.
PROCESSING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

RELOAD_RESULTS = ("accepted", "refused", "unchanged")


class TableMetrics:
    """The running route table and its reloads: what every process that reloads the route
    config (`routerd serve`, `routerd api`) exposes, under the same names."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A registry per instance rather than the process-wide default: tests build many
        # daemons in one process and each must start from zero.
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.reloads = Counter(
            "routerd_reloads_total",
            "Route table reloads by result: accepted, refused, or unchanged.",
            ["result"],
            registry=r,
        )
        self.reload_problems = Counter(
            "routerd_reload_problems_total",
            "Problems found in refused reloads (each one is logged in lint format).",
            registry=r,
        )
        self.table_generation = Gauge(
            "routerd_route_table_generation",
            "Generation of the running route table: 1 at start, +1 per accepted reload.",
            registry=r,
        )
        self.table_info = Info(
            "routerd_route_table",
            "The running route table: content hash, rule count, schema count.",
            registry=r,
        )
        # Known label values start at zero, so dashboards and alerts on rate() see the
        # series before the first event instead of a gap.
        for result in RELOAD_RESULTS:
            self.reloads.labels(result=result)

    def observe_table(self, table: RouteTable, generation: int) -> None:
        """Publish which route table is running; called at start and on each accepted reload."""
        self.table_generation.set(generation)
        self.table_info.info(
            {
                "hash": table.content_hash,
                "rules": str(len(table.rules)),
                "schemas": str(len(table.schemas)),
            }
        )


class Metrics(TableMetrics):
    """Every metric routerd exposes on /metrics; the daemon and the reloader update them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        # Updated per request: lock-free (loop_metrics), the rest prometheus_client's.
        self.consumed = LoopCounter(
            "routerd_requests_consumed",
            "Send requests delivered from the source queue.",
            r,
        )
        self.routed = Counter(
            "routerd_requests_routed_total",
            "Send requests published to a target and confirmed, by target, category and rule.",
            ["target", "category", "rule"],
            registry=r,
        )
        self.rejected = Counter(
            "routerd_requests_rejected_total",
            "Send requests published to rejected, by the first reason's code.",
            ["reason"],
            registry=r,
        )
        self.publish_failures = Counter(
            "routerd_publish_failures_total",
            "Publishes not confirmed (nack, timeout, closed channel), by target and cause.",
            ["target", "cause"],
            registry=r,
        )
        self.sink_errors = Counter(
            "routerd_sink_errors_total",
            "Decision sinks that raised; the send request was settled regardless, by sink.",
            ["sink"],
            registry=r,
        )
        self.acked = LoopCounter(
            "routerd_source_acks",
            "Source deliveries acked after their decision was confirmed.",
            r,
        )
        self.nacked = LoopCounter(
            "routerd_source_nacks",
            "Source deliveries nacked with requeue because their publish failed.",
            r,
        )
        self.reconnects = Counter(
            "routerd_reconnects_total",
            "Times the broker connection was re-established after a loss.",
            registry=r,
        )
        self.in_flight = LoopGauge(
            "routerd_in_flight_requests",
            "Send requests consumed whose source delivery is not yet acked or nacked.",
            r,
        )
        self.in_flight_bytes = LoopGauge(
            "routerd_in_flight_bytes",
            "Bytes of request bodies consumed and still being handled; each source's window "
            "keeps its share under the source's max_in_flight_bytes.",
            r,
        )
        self.broker_blocked = Gauge(
            "routerd_broker_blocked",
            "1 while the broker blocks routerd's publishes (connection.blocked: a memory or "
            "disk alarm), else 0.",
            registry=r,
        )
        self.processing_seconds = LoopHistogram(
            "routerd_processing_seconds",
            "Time from consuming a send request to its source ack or nack.",
            r,
            PROCESSING_BUCKETS,
        )
        self.confirm_seconds = LoopHistogram(
            "routerd_publish_confirm_seconds",
            "Time from publishing a decision to reading the broker's confirm, nack or "
            "return (or its timeout): within routerd_processing_seconds, the broker's "
            "write plus both sides' socket turns.",
            r,
            PROCESSING_BUCKETS,
        )
        self.loop_lag = Histogram(
            "routerd_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms: time routing stood still.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        # Labelled children by label values: `.labels()` costs about as much as the
        # increment itself and these two run once per request. The values come from the
        # route table and the reason codes, so the caches stay as small as the series.
        self._routed: dict[tuple[str, str, str], Counter] = {}
        self._rejected: dict[str, Counter] = {}

    def count_routed(self, target: str, category: str, rule: str) -> None:
        key = (target, category, rule)
        child = self._routed.get(key)
        if child is None:
            child = self._routed[key] = self.routed.labels(target, category, rule)
        child.inc()

    def count_rejected(self, reason: str) -> None:
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected[reason] = self.rejected.labels(reason)
        child.inc()

    def count_publish_failure(self, target: str, cause: str) -> None:
        self.publish_failures.labels(target, cause).inc()

    def known_sinks(self, names: Iterable[str]) -> None:
        """Start each decision sink's error count at zero, so that rate() sees the first."""
        for name in names:
            self.sink_errors.labels(name)

    def count_sink_error(self, sink: str) -> None:
        self.sink_errors.labels(sink).inc()

    def render(self) -> bytes:
        """The exposition text served on /metrics."""
        return prometheus_client.generate_latest(self.registry)


class MetricsSink:
    """The decision sink behind the routed, rejected and publish-failure counters."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def settled(self, settlement: Settlement) -> None:
        metrics = self._metrics
        for published in settlement.publishes:
            decision = published.decision
            if published.failure is not None:
                metrics.count_publish_failure(decision.target.name, published.failure.cause.value)
            elif decision.reasons:
                metrics.count_rejected(decision.reasons[0].code)
            else:
                metrics.count_routed(
                    decision.target.name, decision.category or "", decision.rule or ""
                )
