"""Lock-free per-request metrics: exposed exactly as prometheus_client's own would be."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from routerd.observe import PROCESSING_BUCKETS
from routerd.observe.loop_metrics import LoopCounter, LoopGauge, LoopHistogram


def exposition(registry: CollectorRegistry) -> list[str]:
    # prometheus_client also writes a `_created` timestamp per counter and histogram;
    # the loop metrics leave that optional series out.
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


_AMOUNT = st.sampled_from(PROCESSING_BUCKETS) | st.floats(min_value=0, max_value=10)


@settings(max_examples=200, deadline=None)
@given(observed=st.lists(_AMOUNT, max_size=40))
def test_a_loop_histogram_exposes_what_prometheus_clients_does(observed: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("x_seconds", "Time.", ours, PROCESSING_BUCKETS)
    reference = Histogram("x_seconds", "Time.", buckets=PROCESSING_BUCKETS, registry=theirs)
    for amount in observed:
        loop.observe(amount)
        reference.observe(amount)
    assert exposition(ours) == exposition(theirs)


@given(steps=st.lists(st.integers(min_value=-5, max_value=5), max_size=30))
def test_loop_counters_and_gauges_expose_what_prometheus_clients_do(steps: list[int]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter, gauge = LoopCounter("x", "Count.", ours), LoopGauge("y", "Level.", ours)
    reference_counter = Counter("x", "Count.", registry=theirs)
    reference_gauge = Gauge("y", "Level.", registry=theirs)
    for step in steps:
        counter.inc(abs(step))
        reference_counter.inc(abs(step))
        (gauge.inc if step >= 0 else gauge.dec)(abs(step))
        (reference_gauge.inc if step >= 0 else reference_gauge.dec)(abs(step))
    assert exposition(ours) == exposition(theirs)


def test_a_counter_refuses_to_go_down() -> None:
    counter = LoopCounter("x", "Count.", CollectorRegistry())
    with pytest.raises(ValueError, match="only go up"):
        counter.inc(-1)
    assert counter.value == 0


def test_names_clash_as_with_prometheus_client() -> None:
    registry = CollectorRegistry()
    LoopCounter("x", "Count.", registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("x", "Count.", registry=registry)


@pytest.mark.parametrize("buckets", [(1.0, 0.5), (1.0, 1.0), (0.5, float("inf"))])
def test_histogram_buckets_must_rise_and_be_finite(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="must rise"):
        LoopHistogram("x", "Time.", CollectorRegistry(), buckets)
