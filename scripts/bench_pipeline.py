"""µs per send request for each pipeline stage, beside the reference `jsonschema` validator.

    .venv/bin/python scripts/bench_pipeline.py [--config config/routes.yaml] [--rounds 3]
                                               [--repeat 5] [--min-time 0.2] [--json PATH]

Every figure comes from this one run on this machine: best of five timed runs, each long
enough to be read to a few percent. Nothing is asserted; the figures go in the README.
The rule-scale table sets the shipped config beside the same with 500 per-customer rules
before its own (scripts/bench_config.py writes it), each with the rule index `decide` uses
and with plain in-order evaluation; it is measured in rounds, interleaved, so a busy machine
slows every column alike: the ratios are the figures to read. `--json PATH` also writes
every figure, each round of the rule-scale table included; `--repeat 1 --min-time 0.001`
makes a run of seconds (figures that only show the script works).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.factories, and routerd when not installed

from routerd.config.loader import load  # noqa: E402
from routerd.config.model import MatchContext, RouteTable, Rule  # noqa: E402
from routerd.config.schemas import load_schema_set  # noqa: E402
from routerd.pipeline.categorize import categorize  # noqa: E402
from routerd.pipeline.decide import decide  # noqa: E402
from routerd.pipeline.decode import decode  # noqa: E402
from routerd.pipeline.envelope import Envelope  # noqa: E402
from routerd.pipeline.validate import schema_version, validate  # noqa: E402
from tests import factories  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_config import write_config  # noqa: E402
from bench_serve import write_json  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    envelope: Envelope


def cases() -> list[Case]:
    typical = factories.valid_v1(3, recipients=2, tags=["receipt"])
    typical.pop("stream", None)  # the common path: tried every rule, caught by the last
    properties = {"content_type": "application/json", "message_id": "msg-3"}
    headers = {"x-request-id": "req-3"}

    def envelope(request: dict[str, Any]) -> Envelope:
        return Envelope(factories.encode(request), headers, properties)

    return [
        Case("typical v1", envelope(typical)),
        Case("v1, 80 recipients", envelope(factories.valid_v1(4, recipients=80))),
        # Two errors: `to` empty and `customer_id` a number.
        Case("invalid v1", envelope(factories.invalid_v1(4))),
    ]


@dataclass(frozen=True)
class Timing:
    """How long each timed run lasts at least, and how many are timed (the best is kept)."""

    min_time: float = 0.2
    repeat: int = 5


def micros(fn: Callable[[], object], timing: Timing) -> float:
    timer = timeit.Timer(fn)
    # timeit's autorange (1, 2, 5, 10, ... calls per run) with a minimum of our choosing.
    number = 1
    while True:
        for factor in (1, 2, 5):
            started = time.perf_counter()
            timer.timeit(number * factor)
            if time.perf_counter() - started >= timing.min_time:
                number *= factor
                break
        else:
            number *= 10
            continue
        break
    return min(timer.repeat(repeat=timing.repeat, number=number)) / number * 1e6


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(title)
    print(row(header, widths))
    print(row(["-" * w for w in widths], widths))
    for r in rows:
        print(row(r, widths))
    print()


class PlainRules:
    """In-order evaluation of every rule, in the index's place: the reference it is
    measured against."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules

    def first_match(self, ctx: MatchContext) -> Rule | None:
        return categorize(self.rules, ctx)[0]


def plain(table: RouteTable) -> RouteTable:
    """A copy of `table` whose `decide` tries every rule in order."""
    copy = RouteTable(
        **{
            name: getattr(table, name)
            for name in RouteTable.__dataclass_fields__
            if name != "rule_index"
        }
    )
    object.__setattr__(copy, "rule_index", PlainRules(table.rules))
    return copy


def rule_scale(rounds: int, timing: Timing) -> list[dict[str, Any]]:
    """`decide` with the shipped rules and with 500 customer rules before them; each
    request and table's µs per round."""
    with tempfile.TemporaryDirectory() as tmp:
        big = load(write_config(Path(tmp), rules=500))
    shipped = load(ROOT / "config" / "routes.yaml")
    request = factories.valid_v1(3, recipients=2, tags=["receipt"])
    request.pop("stream", None)
    properties = {"content_type": "application/json"}
    requests = {
        "v1, no customer rule": Envelope(factories.encode(request), {}, properties),
        "v1, its customer rule": Envelope(
            factories.encode({**request, "customer_id": "big-498"}), {}, properties
        ),
        "v2": Envelope(factories.encode(factories.valid_v2(3)), {}, properties),
    }
    tables = {
        "5 rules, indexed": shipped,
        "5 rules, plain": plain(shipped),
        "505 rules, indexed": big,
        "505 rules, plain": plain(big),
    }
    timings: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for req, env in requests.items():
            for name, routes in tables.items():
                t = micros(lambda: decide(routes, env), timing)  # noqa: B023
                timings.setdefault((req, name), []).append(t)
    rows = []
    figures = []
    for req in requests:
        # The minimum is the run the rest of the machine disturbed least.
        base = min(timings[(req, "5 rules, indexed")])
        for name in tables:
            ts = timings[(req, name)]
            rule = decide(tables[name], requests[req]).rule
            figures.append({"request": req, "rules": name, "us": ts, "rule": rule})
            rows.append(
                [
                    req,
                    name,
                    f"{min(ts):.1f}",
                    f"{statistics.median(ts):.1f}",
                    f"{max(ts):.1f}",
                    f"{min(ts) / base:.2f}x",
                    str(rule),
                ]
            )
    table(
        f"Rule scale: decide µs per request, min/median/max of {rounds} interleaved rounds "
        f"(each round best of {timing.repeat}); ratio of minimums to the shipped 5 rules, "
        "indexed",
        ["request", "rules", "min", "median", "max", "ratio", "rule"],
        rows,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "routes.yaml")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the rule-scale table")
    parser.add_argument("--only-rules", action="store_true", help="only the rule-scale table")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs, best kept (5)")
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="seconds each timed run lasts at least (0.2)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    timing = Timing(args.min_time, args.repeat)
    report: dict[str, Any] = {"timing": asdict(timing), "rounds": args.rounds}
    if args.only_rules:
        report["rule_scale"] = rule_scale(args.rounds, timing)
        if args.json is not None:
            write_json(args.json, report)
        return
    routes: RouteTable = load(args.config)
    report["versions"] = {
        "python": platform.python_version(),
        **{name: version(name) for name in ("orjson", "jsonschema-rs", "jsonschema")},
    }
    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"orjson {version('orjson')}, jsonschema-rs {version('jsonschema-rs')}, "
        f"jsonschema {version('jsonschema')}; µs per request, best of {timing.repeat}\n"
    )

    stage_rows, validator_rows = [], []
    report["stages"], report["validators"] = [], []
    for case in cases():
        env = case.envelope
        body = decode(env, routes.limits)
        schema_key = schema_version(routes, env, body)
        assert isinstance(schema_key, str)
        schema = routes.schemas[schema_key]
        reference = load_schema_set([schema.file], []).reference_validator(schema.file.as_uri())
        max_reasons = routes.limits.max_reasons
        valid = schema.is_valid(body)
        ctx = MatchContext(body, env.headers, env.properties, schema_key)

        t_decode = micros(lambda: decode(env, routes.limits), timing)  # noqa: B023
        t_validate = micros(lambda: validate(schema, body, max_reasons), timing)  # noqa: B023
        t_categorize = (
            micros(lambda: categorize(routes.rules, ctx), timing)  # noqa: B023
            if valid
            else None
        )
        t_decide = micros(lambda: decide(routes, env), timing)  # noqa: B023
        decision = decide(routes, env)
        outcome = (
            f"rejected ({len(decision.reasons)} reasons)"
            if decision.rejected
            else f"{decision.category} via {decision.rule}"
        )
        report["stages"].append(
            {
                "request": case.name,
                "bytes": len(env.body),
                "decode_us": t_decode,
                "validate_us": t_validate,
                "categorize_us": t_categorize,
                "decide_us": t_decide,
                "decision": outcome,
            }
        )
        stage_rows.append(
            [
                case.name,
                str(len(env.body)),
                f"{t_decode:.2f}",
                f"{t_validate:.2f}",
                "-" if t_categorize is None else f"{t_categorize:.2f}",
                f"{t_decide:.2f}",
                outcome,
            ]
        )

        t_fast_valid = micros(lambda: schema.is_valid(body), timing)  # noqa: B023
        t_fast_errors = micros(lambda: schema.errors(body, 50), timing)  # noqa: B023
        t_ref_valid = micros(lambda: reference.is_valid(body), timing)  # noqa: B023
        t_ref_errors = micros(lambda: list(reference.iter_errors(body)), timing)  # noqa: B023
        report["validators"].append(
            {
                "request": case.name,
                "is_valid_us": t_fast_valid,
                "errors_us": t_fast_errors,
                "validate_us": t_validate,
                "reference_is_valid_us": t_ref_valid,
                "reference_iter_errors_us": t_ref_errors,
            }
        )
        validator_rows.append(
            [
                case.name,
                f"{t_fast_valid:.2f}",
                f"{t_fast_errors:.2f}",
                f"{t_validate:.2f}",
                f"{t_ref_valid:.1f}",
                f"{t_ref_errors:.1f}",
                f"{t_ref_valid / t_fast_valid:.0f}x",
                f"{t_ref_errors / t_validate:.0f}x",
            ]
        )

    table(
        "Pipeline stages (validate = what decide runs: is_valid, and the error listing only "
        "for an invalid request)",
        ["request", "bytes", "decode", "validate", "categorize", "decide", "decision"],
        stage_rows,
    )
    table(
        "Fast validator (jsonschema-rs) beside the reference (Python jsonschema)",
        [
            "request",
            "is_valid",
            "errors()",
            "validate",
            "ref is_valid",
            "ref iter_errors",
            "ref/fast is_valid",
            "ref iter_errors/validate",
        ],
        validator_rows,
    )
    report["rule_scale"] = rule_scale(args.rounds, timing)
    if args.json is not None:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
