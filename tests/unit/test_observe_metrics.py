from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from routerd.config.loader import load
from routerd.observe import PROCESSING_BUCKETS, Health, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_metric_is_exposed_under_its_documented_name() -> None:
    metrics = Metrics()
    metrics.routed.labels(target="bulk", category="bulk", rule="bulk").inc()
    metrics.rejected.labels(reason="schema").inc()
    metrics.publish_failures.labels(target="bulk", cause="timeout").inc()
    metrics.processing_seconds.observe(0.002)
    text = metrics.render().decode()
    for name in (
        "routerd_requests_consumed_total",
        "routerd_requests_routed_total",
        "routerd_requests_rejected_total",
        "routerd_publish_failures_total",
        "routerd_source_acks_total",
        "routerd_source_nacks_total",
        "routerd_reconnects_total",
        "routerd_reloads_total",
        "routerd_reload_problems_total",
        "routerd_in_flight_requests",
        "routerd_route_table_generation",
        "routerd_route_table_info",
        "routerd_processing_seconds_bucket",
        "routerd_publish_confirm_seconds_bucket",
        "routerd_event_loop_lag_seconds_bucket",
    ):
        assert f"\n{name}" in text, name


def test_reload_results_start_at_zero() -> None:
    got = samples(Metrics())
    for result in ("accepted", "refused", "unchanged"):
        assert got[("routerd_reloads_total", (("result", result),))] == 0


def test_instances_do_not_share_counts() -> None:
    a, b = Metrics(), Metrics()
    a.consumed.inc(3)
    assert samples(a)[("routerd_requests_consumed_total", ())] == 3
    assert samples(b)[("routerd_requests_consumed_total", ())] == 0


def test_observe_table_publishes_generation_hash_and_counts() -> None:
    table = load(Path(__file__).resolve().parents[2] / "config" / "routes.yaml")
    metrics = Metrics()
    metrics.observe_table(table, 4)
    got = samples(metrics)
    assert got[("routerd_route_table_generation", ())] == 4
    info = (
        "routerd_route_table_info",
        (("hash", table.content_hash), ("rules", str(len(table.rules))), ("schemas", "2")),
    )
    assert got[info] == 1


def test_processing_buckets_span_a_tenth_of_a_millisecond_to_five_seconds() -> None:
    assert PROCESSING_BUCKETS[0] == 0.0001
    assert PROCESSING_BUCKETS[-1] == 5.0
    assert list(PROCESSING_BUCKETS) == sorted(PROCESSING_BUCKETS)


def test_health_names_each_unmet_condition() -> None:
    health = Health()
    assert not health.ready
    assert health.reasons() == [
        "no route table loaded",
        "not connected to the broker",
        "not consuming the source",
    ]
    health.table_loaded = health.connected = True
    assert health.reasons() == ["not consuming the source"]
    health.consuming = True
    assert health.ready
    assert health.reasons() == []


def test_cached_children_count_the_same_series_as_labels() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.count_routed("bulk", "bulk", "bulk")
    metrics.routed.labels(target="bulk", category="bulk", rule="bulk").inc()
    metrics.count_routed("transactional", "transactional", "")
    metrics.count_rejected("invalid_json")
    metrics.count_rejected("invalid_json")
    got = samples(metrics)
    routed = "routerd_requests_routed_total"
    assert got[(routed, (("category", "bulk"), ("rule", "bulk"), ("target", "bulk")))] == 4
    key = (("category", "transactional"), ("rule", ""), ("target", "transactional"))
    assert got[(routed, key)] == 1
    assert got[("routerd_requests_rejected_total", (("reason", "invalid_json"),))] == 2
