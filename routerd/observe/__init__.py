"""Observability: Prometheus metrics, health and readiness, logging, and their HTTP endpoint."""

from __future__ import annotations

from routerd.observe.health import Health
from routerd.observe.http import HTTPBindError, serve_http
from routerd.observe.logs import configure_logging, parse_level, redact_url
from routerd.observe.metrics import PROCESSING_BUCKETS, Metrics

__all__ = [
    "PROCESSING_BUCKETS",
    "HTTPBindError",
    "Health",
    "Metrics",
    "configure_logging",
    "parse_level",
    "redact_url",
    "serve_http",
]
