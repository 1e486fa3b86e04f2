"""Per-request metrics without a lock: plain numbers the registry reads when scraped.

prometheus_client guards every value with a lock, because its metrics may be updated from
any thread. routerd updates its per-request metrics (consumed, in flight, acks, processing
time) only from the event loop's thread, several times per request: the locked updates
were 4% of the daemon's CPU in a drain (scripts/bench_profile.py). These keep the same
names and exposition as prometheus_client's Counter, Gauge and Histogram, updated with a
plain addition, and are read by the registry's scrape (served from the same loop).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString


class _LoopMetric(ABC):
    """Registered under `name`; `collect` says what its value is now."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        registry.register(self)

    @abstractmethod
    def collect(self) -> Iterator[Metric]:
        """The metric family with the value now, as the registry scrapes it."""

    def describe(self) -> list[Metric]:
        # The registry checks names for clashes with this, without a scrape.
        return list(self.collect())


class LoopCounter(_LoopMetric):
    """A counter (`<name>_total`) updated only from the event loop's thread."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.value = 0
        super().__init__(name, documentation, registry)

    def inc(self, amount: int = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class LoopGauge(_LoopMetric):
    """A gauge updated only from the event loop's thread."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.value = 0
        super().__init__(name, documentation, registry)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.value)


class LoopHistogram(_LoopMetric):
    """A histogram updated only from the event loop's thread; `buckets` are upper bounds."""

    def __init__(
        self,
        name: str,
        documentation: str,
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)) or math.inf in bounds:
            raise ValueError(f"histogram buckets must rise and be finite: {buckets}")
        self._bounds = bounds
        # One count per bucket, not cumulative; the last one counts what exceeds them all.
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        super().__init__(name, documentation, registry)

    def observe(self, amount: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le, <=).
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterator[Metric]:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self._bounds, math.inf), self._counts, strict=True):
            cumulative += count
            # prometheus_client's own `le` label format (untyped there).
            label: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
            buckets.append((label, cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )
