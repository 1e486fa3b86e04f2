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
    assert report.memory_goal(None, None).met is None
    assert report.rule_scale_goal(None).met is None


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


def test_memory_goal_is_150_mb_not_mib_over_every_drain() -> None:
    # 143 MiB is 149.9 MB; 144 MiB is 151 MB.
    assert report.memory_goal(serve([1], [1], [143.0]), None).met is True
    assert (
        report.memory_goal(serve([1], [1], [60.0]), {"runs": [{"peak_rss_mib": 144.0}]}).met
        is False
    )
    # The raw forwarder's memory is not routerd's.
    assert (
        report.memory_goal({"rounds": [{"kind": "raw", "peak_rss_mib": 500.0}]}, None).met is None
    )


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
