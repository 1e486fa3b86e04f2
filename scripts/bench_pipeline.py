"""µs per send request for each pipeline stage, beside the reference `jsonschema` validator.

    .venv/bin/python scripts/bench_pipeline.py [--config config/routes.yaml]

Every figure comes from this one run on this machine: best of five timed runs, each long
enough to be read to a few percent. Nothing is asserted; the figures go in the README.
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.factories, and routerd when not installed

from routerd.config.loader import load  # noqa: E402
from routerd.config.model import MatchContext, RouteTable  # noqa: E402
from routerd.config.schemas import load_schema_set  # noqa: E402
from routerd.pipeline.categorize import categorize  # noqa: E402
from routerd.pipeline.decide import decide  # noqa: E402
from routerd.pipeline.decode import decode  # noqa: E402
from routerd.pipeline.envelope import Envelope  # noqa: E402
from routerd.pipeline.validate import schema_version, validate  # noqa: E402
from tests import factories  # noqa: E402


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


def micros(fn: Callable[[], object]) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # at least 0.2 s per run
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "routes.yaml")
    args = parser.parse_args()
    routes: RouteTable = load(args.config)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"orjson {version('orjson')}, jsonschema-rs {version('jsonschema-rs')}, "
        f"jsonschema {version('jsonschema')}; µs per request, best of 5\n"
    )

    stage_rows, validator_rows = [], []
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

        t_decode = micros(lambda: decode(env, routes.limits))  # noqa: B023
        t_validate = micros(lambda: validate(schema, body, max_reasons))  # noqa: B023
        t_categorize = micros(lambda: categorize(routes.rules, ctx)) if valid else None  # noqa: B023
        t_decide = micros(lambda: decide(routes, env))  # noqa: B023
        decision = decide(routes, env)
        outcome = (
            f"rejected ({len(decision.reasons)} reasons)"
            if decision.rejected
            else f"{decision.category} via {decision.rule}"
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

        t_fast_valid = micros(lambda: schema.is_valid(body))  # noqa: B023
        t_fast_errors = micros(lambda: schema.errors(body))  # noqa: B023
        t_ref_valid = micros(lambda: reference.is_valid(body))  # noqa: B023
        t_ref_errors = micros(lambda: list(reference.iter_errors(body)))  # noqa: B023
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


if __name__ == "__main__":
    main()
