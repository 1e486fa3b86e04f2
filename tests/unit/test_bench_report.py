"""scripts/bench_report.py and scripts/bench_profile.py: the summaries, the goal verdicts and
the grouping of profile samples, on figures made up here (the scripts' runs are tested in
tests/integration/test_bench_scripts.py)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from routerd.config.loader import load
from tests.conftest import SHIPPED_CONFIG

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the class body runs.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = load_script("bench_report")
profile = load_script("bench_profile")


# --------------------------------------------------------------------------- summaries


def test_summary_is_min_median_max_of_what_was_measured() -> None:
    s = report.summary([3.0, None, 1.0, math.nan, 2.0, 10.0])
    assert (s.min, s.median, s.max, s.count) == (1.0, 2.5, 10.0, 4)


def test_summary_of_nothing_measured_is_none() -> None:
    assert report.summary([]) is None
    assert report.summary([None, math.nan]) is None


def test_triple_shows_one_round_as_one_figure() -> None:
    assert report.triple(report.summary([1234.5])) == "1,234.5"
    assert report.triple(report.summary([1.0, 2.0, 4.0]), 0) == "1 / 2 / 4"
    assert report.triple(None) == "-"


# --------------------------------------------------------------------------- goals


def serve(raw: list[float], routerd: list[float], rss: list[float] | None = None) -> dict[str, Any]:
    rounds = [{"kind": "raw", "rate": r, "peak_rss_mib": 40.0} for r in raw]
    rounds += [
        {"kind": "routerd", "rate": r, "peak_rss_mib": m}
        for r, m in zip(routerd, rss or [60.0] * len(routerd), strict=True)
    ]
    return {"rounds": rounds}


def test_throughput_goal_compares_medians() -> None:
    # routerd's median 1000 against raw's 1000; its worst round alone would miss.
    met = report.throughput_goal(serve([900, 1000, 5000], [100, 1000, 1100]))
    assert met.met is True and met.measured == "1.00"
    missed = report.throughput_goal(serve([1000, 1000, 1000], [990, 999, 2000]))
    assert missed.met is False and missed.verdict == "**not met**"


def test_a_goal_not_measured_says_so() -> None:
    assert report.throughput_goal(None).met is None
    assert report.throughput_goal(serve([1000], [])).verdict == "not measured"
    assert report.latency_goal({"levels": []}).met is None
    assert report.memory_backlog_goal(None).met is None
    assert report.memory_big_goal(None, None).met is None
    assert report.rule_scale_goal(None).met is None
    assert report.scale_goal(None).met is None
    assert report.scale_goal({"memory": [], "scale": None}).met is None
    assert report.lint_goal(None).met is None
    assert report.reload_goal({"levels": []}).met is None
    assert report.stall_goal(None).verdict == "not measured"


def latency(p99s_at_half: list[float | None]) -> dict[str, Any]:
    def level(fraction: float, p99s: list[float | None]) -> dict[str, Any]:
        return {"fraction": fraction, "rounds": [{"p99": p} for p in p99s]}

    return {"levels": [level(0.25, [1.0]), level(0.5, p99s_at_half), level(0.9, [500.0])]}


def test_latency_goal_holds_only_when_every_round_at_half_load_does() -> None:
    met = report.latency_goal(latency([4.0, 25.0, None]))
    assert met.met is True
    assert met.measured == "worst p99 25.0 ms; held in 2 of 2 rounds"
    missed = report.latency_goal(latency([4.0, 25.1, 5.0]))
    assert missed.met is False
    assert "held in 2 of 3 rounds" in missed.measured


def test_latency_goal_names_the_raw_forwarders_p99_beside_it_without_judging_it() -> None:
    figures = latency([4.0, 30.0])
    figures["levels"][1]["raw_rounds"] = [{"p99": 40.0}, {"p99": 20.0}]
    goal = report.latency_goal(figures)
    # routerd's rounds alone decide; the raw forwarder's say what the broker gave.
    assert goal.met is False
    assert goal.measured == (
        "worst p99 30.0 ms; held in 1 of 2 rounds (the raw aiormq forwarder beside it: "
        "worst p99 40.0 ms; held in 1 of 2)"
    )


def drain(
    phase: str, loaded: int, peak: float, rss: list[tuple[float, float]] | None = None
) -> dict[str, Any]:
    return {
        "phase": phase,
        "loaded": loaded,
        "peak_rss_mib": [peak],
        "drain_started_s": 1.0,
        "rss_mib": [rss or [(0.0, 5.0), (1.0, 40.0), (5.0, 60.0)]],
    }


def test_memory_backlog_goal_is_150_mb_not_mib_over_the_backlog_drain() -> None:
    # 143 MiB is 149.9 MB; 144 MiB is 151 MB.
    met = report.memory_backlog_goal({"memory": [drain("backlog", 200_000, 143.0)]})
    assert met.met is True
    assert met.measured.startswith("peak 143 MiB (150 MB) draining 200,000;")
    missed = report.memory_backlog_goal({"memory": [drain("backlog", 200_000, 144.0)]})
    assert missed.met is False
    # A 1 MiB bodies drain is the other goal's.
    assert report.memory_backlog_goal({"memory": [drain("big", 300, 500.0)]}).met is None


def test_memory_backlog_goal_says_when_the_backlog_was_smaller_than_the_goals() -> None:
    goal = report.memory_backlog_goal({"memory": [drain("backlog", 2000, 60.0)]})
    assert "2,000 (smaller than the goal's 200,000)" in goal.measured


def test_memory_backlog_goal_reads_the_course_from_the_drains_start() -> None:
    # Starting (5 MiB at 0 s) is before the drain (from 1 s): a quarter of 1..9 s is 3 s.
    rss = [(0.0, 5.0), (1.0, 50.0), (3.0, 55.0), (6.0, 58.0), (9.0, 61.0)]
    goal = report.memory_backlog_goal({"memory": [drain("backlog", 200_000, 62.0, rss)]})
    assert goal.measured.endswith("55 MiB a quarter of the way in, 61 at the end")


def test_memory_big_goal_takes_every_drain_of_1_mib_bodies() -> None:
    big = {"runs": [{"peak_rss_mib": 100.0}, {"peak_rss_mib": 143.0}]}
    met = report.memory_big_goal(big, None)
    assert met.met is True and met.measured == "peak 143 MiB (150 MB) over 2 drains"
    scale = {"memory": [drain("big", 300, 144.0), drain("backlog", 200_000, 10.0)]}
    missed = report.memory_big_goal(big, scale)
    assert missed.met is False and "over 3 drains" in missed.measured


def test_rss_at_is_the_first_sample_at_or_past_the_point() -> None:
    series = [(0.0, 1.0), (2.0, 2.0), (4.0, None), (6.0, 4.0), (8.0, 5.0)]
    assert report.rss_at(series, 0.0) == 1.0
    assert report.rss_at(series, 0.5) == 4.0  # 4 s has no figure
    assert report.rss_at(series, 1.0) == 5.0
    assert report.rss_at(series, 0.5, start=6.0) == 5.0
    assert report.rss_at([], 0.5) is None


def scale(runs: list[tuple[int, float, int]]) -> dict[str, Any]:
    """bench_scale's JSON with scale-out runs of (replicas, total msg/s, lost)."""
    return {
        "memory": [],
        "scale": {
            "count": 1000,
            "replicas": [1, 2, 3],
            "rounds": [
                {"replicas": n, "rate": rate, "lost": lost, "loaded": 1000}
                for n, rate, lost in runs
            ],
        },
    }


def test_scale_goal_is_no_loss_in_any_drain() -> None:
    runs = [(1, 100.0, 0), (2, 180.0, 0), (3, 250.0, 0), (3, 230.0, 0), (2, 170.0, 0)]
    met = report.scale_goal(scale(runs))
    assert met.met is True
    assert met.measured == (
        "0 of 5,000 lost or duplicated over 5 drains; total msg/s by replicas (medians) "
        "1: 100, 2: 175, 3: 240"
    )
    # Duplicates (lost < 0) are not a pass either.
    assert report.scale_goal(scale([(1, 100.0, 0), (2, 180.0, -1)])).met is False
    missed = report.scale_goal(scale([(1, 100.0, 0), (3, 250.0, 2)]))
    assert missed.met is False and missed.measured.startswith("2 of 2,000 lost")


def test_scale_rounds_keep_the_order_of_replica_counts_given() -> None:
    counts = report.scale_rounds(scale([(3, 1.0, 0), (1, 2.0, 0), (1, 3.0, 0)]))
    assert list(counts) == [1, 3]
    assert [r["rate"] for r in counts[1]] == [2.0, 3.0]


def config(lint: list[float], schemas: int = 200, rules: int = 505) -> dict[str, Any]:
    rounds = [{"tree": "this tree", "lint_cli_s": s, "build_s": 0.1, "load_s": 0.1} for s in lint]
    # A baseline tree's rounds are not this tree's figures.
    rounds.append({"tree": "baseline", "lint_cli_s": 9.0, "build_s": 9.0, "load_s": 9.0})
    return {"schemas": schemas, "rules": rules, "problems": {}, "rounds": rounds}


def test_lint_goal_is_under_2_s_in_every_round_of_this_tree() -> None:
    met = report.lint_goal(config([1.2, 1.99]))
    assert met.met is True
    assert met.measured == (
        "worst 1.99 s over 2 rounds; 200 schemas, 505 rules; lint found 0 problems"
    )
    assert report.lint_goal(config([1.2, 2.0])).met is False
    small = report.lint_goal(config([0.5], schemas=4, rules=15))
    assert "(smaller than the goal's 200 and 500)" in small.measured


def reloads(seconds: list[float], p99: list[float], worst: list[float]) -> dict[str, Any]:
    rounds = [
        {"running_after_s": s, "p99": p, "max": m}
        for s, p, m in zip(seconds, p99, worst, strict=True)
    ]
    return {"levels": [], "reload": {"debounce_s": 0.3, "rate": 500.0, "rounds": rounds}}


def test_reload_goal_is_write_to_running_under_2_s_every_round() -> None:
    met = report.reload_goal(reloads([1.5, 1.9], [10.0, 10.0], [20.0, 20.0]))
    assert met.met is True
    assert met.measured == (
        "worst 1.90 s over 2 rounds (write to running, the watcher's 0.3 s debounce included)"
    )
    assert report.reload_goal(reloads([1.5, 2.0], [1.0, 1.0], [1.0, 1.0])).met is False


def test_stall_goal_is_judged_on_routerds_loop_lag_when_the_rounds_have_it() -> None:
    lagged = reloads([1.0, 1.0], [60.0, 80.0], [120.0, 130.0])
    for r, (late, bound) in zip(lagged["reload"]["rounds"], [(0, 25.0), (0, 50.0)], strict=True):
        r |= {"loop_lag_timers": 100, "loop_lag_over_100ms": late, "loop_lag_max_le_ms": bound}
    met = report.stall_goal(lagged)
    # Requests waited 130 ms (the loop was slowed), but routing never stood still 100 ms.
    assert met.met is True
    assert met.measured.startswith("loop lag at most 50 ms; 0 of 200 timers late by over 100 ms")
    assert "requests' worst max 130.0 ms" in met.measured
    lagged["reload"]["rounds"][1] |= {"loop_lag_over_100ms": 1, "loop_lag_max_le_ms": 250.0}
    missed = report.stall_goal(lagged)
    assert missed.met is False and "at most 250 ms; 1 of 200" in missed.measured


def test_stall_goal_is_judged_on_the_max_latency_not_the_p99() -> None:
    # Every p99 is low; one round's slowest request waited 120 ms.
    missed = report.stall_goal(reloads([1.0, 1.0], [8.0, 9.0], [40.0, 120.0]))
    assert missed.met is False
    assert missed.measured == "worst max 120.0 ms (worst p99 9.0 ms) over 2 rounds"
    assert report.stall_goal(reloads([1.0], [8.0], [99.9])).met is True


def pipeline(five: list[float], big: list[float]) -> dict[str, Any]:
    return {
        "rule_scale": [
            {"request": "v2", "rules": "5 rules, indexed", "us": five},
            {"request": "v2", "rules": "505 rules, indexed", "us": big},
            {"request": "v2", "rules": "505 rules, plain", "us": [900.0]},
        ]
    }


def test_rule_scale_goal_compares_minimums_of_the_indexed_tables() -> None:
    # Medians 10 and 40 would miss; the minimums (10 and 19) are within 2x.
    met = report.rule_scale_goal(pipeline([10.0, 10.0, 50.0], [19.0, 40.0, 45.0]))
    assert met.met is True and met.measured.startswith("worst 1.90x (v2")
    assert report.rule_scale_goal(pipeline([10.0], [20.5])).met is False


# --------------------------------------------------------------------------- profile

PACKAGE = Path("/src/routerd")
LOOP = "_run_once (/usr/lib/python3.11/asyncio/base_events.py:1922)"
HANDLER = "RequestHandler.__call__ (/src/routerd/delivery/handler.py:80)"
DECIDE = "decide (/src/routerd/pipeline/decide.py:30)"


def test_parse_raw_reads_py_spy_collapsed_stacks() -> None:
    stacks = profile.parse_raw(
        f"{LOOP};{HANDLER} 7\n"
        "0x7f00 (?);sock_send (/usr/lib/libpython3.11.so.1.0) 2\n"
        "garbage without a count\n"
    )
    assert [count for _, count in stacks] == [7, 2]
    frames = stacks[0][0]
    assert frames[1] == profile.Frame(
        "RequestHandler.__call__", "/src/routerd/delivery/handler.py", 80
    )
    assert stacks[1][0][0] == profile.Frame("0x7f00", "?", None)
    assert stacks[1][0][1].native


@pytest.mark.parametrize(
    ("file", "layer"),
    [
        ("/src/routerd/pipeline/decide.py", "routerd pipeline (pipeline, config)"),
        ("/src/routerd/config/model.py", "routerd pipeline (pipeline, config)"),
        ("/src/routerd/amqp/publisher.py", "routerd delivery and AMQP (delivery, amqp)"),
        ("/src/routerd/delivery/handler.py", "routerd delivery and AMQP (delivery, amqp)"),
        ("/src/routerd/daemon.py", "routerd, other modules"),
        ("/venv/lib/python3.11/site-packages/aiormq/channel.py", "aiormq"),
        ("/venv/lib/python3.11/site-packages/pamqp/frame.py", "pamqp"),
        ("/usr/lib/python3.11/asyncio/events.py", "asyncio event loop, selectors"),
        ("/usr/lib/python3.11/selectors.py", "asyncio event loop, selectors"),
        (
            "/venv/site-packages/orjson/orjson.cpython-311-x86_64-linux-gnu.so",
            "jsonschema_rs, orjson (native)",
        ),
        (
            "/venv/site-packages/jsonschema_rs/jsonschema_rs.abi3.so",
            "jsonschema_rs, orjson (native)",
        ),
        ("/venv/site-packages/prometheus_client/values.py", "other"),
        # A package of the same name outside routerd's own tree is not routerd.
        ("/elsewhere/routerd/pipeline/decide.py", "other"),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", None),
        ("?", None),
    ],
)
def test_each_file_has_its_layer(file: str, layer: str | None) -> None:
    assert profile.layer(profile.Frame("f", file, 1), PACKAGE) == layer


def test_self_time_goes_to_the_innermost_frame_of_a_layer() -> None:
    stacks = profile.parse_raw(
        # A socket send in libc is the Python caller's time.
        f"{LOOP};{HANDLER};send (/usr/lib/x86_64-linux-gnu/libc.so.6) 3\n"
        # Time inside the orjson extension is its own.
        f"{LOOP};{HANDLER};{DECIDE};0x7f1 (/v/site-packages/orjson/orjson.abi3.so) 2\n"
        f"{LOOP};{HANDLER};{DECIDE} 1\n"
        # A worker thread's samples are left out of every share.
        "Thread._bootstrap (/usr/lib/python3.11/threading.py:1002);"
        "WorkerThread.run (/v/site-packages/anyio/_backends/_asyncio.py:1124) 50\n"
        # Nothing but unresolved native frames still counts, as other.
        "0x7f2 (?) 4\n"
    )
    grouped = profile.group(stacks, PACKAGE)
    assert grouped.samples == 10 and grouped.other_threads == 50
    assert grouped.self_by_layer == {
        "routerd delivery and AMQP (delivery, amqp)": 3,
        "jsonschema_rs, orjson (native)": 2,
        "routerd pipeline (pipeline, config)": 1,
        "other": 4,
    }
    assert grouped.total_by_layer["asyncio event loop, selectors"] == 6
    assert grouped.total_by_layer["routerd pipeline (pipeline, config)"] == 3
    top = dict(grouped.top(3))
    assert top[("RequestHandler.__call__", "routerd/delivery/handler.py", profile.DELIVERY)] == 3
    assert top[("(native code)", "orjson/orjson.abi3.so", profile.EXTENSIONS)] == 2


def test_profile_json_lists_every_layer_in_order() -> None:
    grouped = profile.group(profile.parse_raw(f"{LOOP};{DECIDE} 5\n"), PACKAGE)
    written = profile.profile_json(grouped, 15)
    assert [row["layer"] for row in written["layers"]] == list(profile.LAYERS)
    assert written["samples"] == 5 and written["other_thread_samples"] == 0
    assert written["functions"] == [
        {
            "function": "decide",
            "file": "routerd/pipeline/decide.py",
            "layer": profile.PIPELINE,
            "self": 5,
        }
    ]


def test_memory_big_goal_is_judged_at_the_shipped_window_only() -> None:
    big = {"runs": [{"window": 128, "peak_rss_mib": 160.0}, {"window": 64, "peak_rss_mib": 110.0}]}
    shipped = report.memory_big_goal(big, None, 128)
    assert shipped.met is False
    assert (
        shipped.measured.startswith("peak 160 MiB")
        and "window 64: peak 110 MiB" in shipped.measured
    )
    assert report.memory_big_goal(big, None, 64).met is True
    assert report.memory_big_goal(big, None, 256).met is None


def test_the_shipped_window_is_the_catch_alls() -> None:
    table = load(SHIPPED_CONFIG)
    assert report.shipped_window() == table.source.window(table.limits)


# --------------------------------------------------------------------------- histograms
latency_script = load_script("bench_latency")

EXPOSITION = """\
# TYPE routerd_processing_seconds histogram
routerd_processing_seconds_bucket{le="0.001"} %d
routerd_processing_seconds_bucket{le="0.005"} %d
routerd_processing_seconds_bucket{le="0.025"} %d
routerd_processing_seconds_bucket{le="+Inf"} %d
routerd_processing_seconds_count %d
routerd_processing_seconds_sum 1.0
"""


def scrape(*counts: int) -> dict[float, float]:
    return dict(latency_script.processing(EXPOSITION % (*counts, counts[-1])))


def test_quantile_bound_reads_only_what_was_observed_between_two_scrapes() -> None:
    # Before: 1,000 fast ones. Between: 100 more, 2 of which took over 5 ms.
    before = scrape(1000, 1000, 1000, 1000)
    after = scrape(1090, 1098, 1100, 1100)
    assert latency_script.bound_of(before, after, 0.5) == 1.0
    assert latency_script.bound_of(before, after, 0.98) == 5.0
    assert latency_script.bound_of(before, after, 0.99) == 25.0
    assert latency_script.bound_of(before, before, 0.99) is None
    # Past the last finite bound the histogram cannot say.
    assert latency_script.bound_of(before, scrape(1000, 1000, 1000, 1010), 0.99) is None


def test_latency_table_shows_routerds_own_share() -> None:
    rounds = [
        {"p50": 3.0, "p99": 30.0, "p999": 40.0, "max": 50.0, "cpu_ms_per_request": 0.2,
         "routerd_p99_le_ms": own, "confirm_p99_le_ms": own / 2}
        for own in (2.5, 5.0, 0.25)
    ]  # fmt: skip
    latency = {
        "levels": [{"fraction": 0.5, "rate": 1000.0, "rounds": rounds}],
        "max_rate": 2000.0,
        "basis_rate": 2000.0,
        "seconds_per_level": 10,
        "drain_backlog": 20000,
    }
    lines = report.latency_section(latency, {})
    same = "3.0 / 3.0 / 3.0 | 30.0 / 30.0 / 30.0 | 40.0 / 40.0 / 40.0 | 50.0 / 50.0 / 50.0"
    own = "0.25 / 2.50 / 5.00 | 0.12 / 1.25 / 2.50"
    row = f"| 50% | 1,000/s | 3 | {same} | {own} | 0.200 / 0.200 / 0.200 |"
    assert row in lines


def test_latency_table_has_the_raw_forwarders_p99_when_the_run_had_it() -> None:
    def level(fraction: float, raw: list[float]) -> dict[str, Any]:
        rounds = [{"p50": 3.0, "p99": 9.0, "p999": 12.0, "max": 15.0, "cpu_ms_per_request": 0.2}]
        return {
            "fraction": fraction,
            "rate": 1000.0 * fraction,
            "rounds": rounds,
            "raw_rounds": [{"p99": p} for p in raw],
        }

    latency = {
        "levels": [level(0.5, [8.0, 30.0, 11.0]), level(0.9, [])],
        "basis_rate": 1000.0,
        "seconds_per_level": 10,
    }
    lines = report.latency_section(latency, {})
    header = next(line for line in lines if line.startswith("| load"))
    assert "| max | raw forwarder p99 | routerd's own p99 <= |" in header
    assert (
        "| 50% | 500/s | 1 | 3.0 | 9.0 | 12.0 | 15.0 | 8.0 / 11.0 / 30.0 | - | - | 0.200 |" in lines
    )
    assert "| 90% | 900/s | 1 | 3.0 | 9.0 | 12.0 | 15.0 | - | - | - | 0.200 |" in lines


def test_classic_queues_variant_keeps_the_config_valid(tmp_path: Path) -> None:
    shipped = SHIPPED_CONFIG.read_text()
    assert "type: quorum" in shipped
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "routes.yaml"
    config.write_text(shipped)
    (tmp_path / "schemas").symlink_to(SHIPPED_CONFIG.parent.parent / "schemas")
    latency_script.to_classic(config)
    text = config.read_text()
    assert "quorum" not in text and "type: classic" in text
    table = load(config)
    declared = [source.queue_spec for source in table.sources]
    declared += [queue for target in table.targets.values() for queue in target.queues]
    assert declared and {queue.type for queue in declared} == {"classic"}
