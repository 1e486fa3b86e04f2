"""Prometheus metrics of the reference public API, in a registry of their own per app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from routerd.observe.metrics import TableMetrics

# An answer waits for the broker's publish confirm: milliseconds normally, seconds while
# the broker is slow or reconnecting (a send gives up after the publish timeout, 10 s).
ANSWER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics(TableMetrics):
    """What `GET /metrics` of `routerd api` exposes: its answers, its broker session, and
    the route table it checks requests against, under the names `routerd serve` uses."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.answers = Counter(
            "routerd_api_send_answers_total",
            "Answers to POST /v1/send, by HTTP status and the first reason's code "
            "(empty when there is none).",
            ["status", "reason"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "routerd_api_send_seconds",
            "Time to answer POST /v1/send, including the wait for the broker's confirm.",
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.broker_connected = Gauge(
            "routerd_api_broker_connected",
            "1 while the API holds a session with the broker, else 0.",
            registry=r,
        )
