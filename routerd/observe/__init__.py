"""Observability: Prometheus metrics, health and readiness, logging, and their HTTP endpoint.

Wiring (daemon side)::

    configure_logging(settings.log_format, settings.log_level)   # first, before any log line
    log.info("connecting", extra={"url": redact_url(settings.amqp_url)})
    metrics, health = Metrics(), Health(table_loaded=True)
    port = await task_group.start(serve_http, host, port, metrics, health)  # HTTPBindError

`health.connected` / `health.consuming` are flipped by the daemon as the broker connection
and the consumer come and go; /readyz answers 503 naming what is missing meanwhile.
"""

from __future__ import annotations

from routerd.observe.health import Health
from routerd.observe.http import HTTPBindError, serve_http
from routerd.observe.logs import configure_logging, parse_level, redact_url
from routerd.observe.metrics import PROCESSING_BUCKETS, Metrics, TableMetrics

__all__ = [
    "PROCESSING_BUCKETS",
    "HTTPBindError",
    "Health",
    "Metrics",
    "TableMetrics",
    "configure_logging",
    "parse_level",
    "redact_url",
    "serve_http",
]
