"""Peak memory and rate of `routerd api` taking send requests of one size, over HTTP.

One `routerd api` process per round, on an isolated copy of the shipped config (one source)
and the real broker, takes `--count` POST /v1/send requests of `--size` bytes (a valid v1
request padded with text; default the shipped limit, 1 MiB), `--concurrency` at a time.
Prints, per round, the process's peak and final RSS (VmHWM, VmRSS) and the requests per
second, with how many got each answer. `--baseline DIR` also runs the routerd in another
source tree (`git archive REV | tar -x -C DIR`) in the same rounds, the order alternating,
for a before/after ratio. Asserts nothing; cleans up its queues.

    .venv/bin/python scripts/bench_api.py [--size 1048576] [--count 300] [--concurrency 8]
        [--rounds 1] [--baseline DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import httpx  # noqa: E402
import orjson  # noqa: E402
from bench_serve import (  # noqa: E402
    DEFAULT_URL,
    isolated_copy,
    peak_rss_mib,
    routerd_from,
    shipped_table,
    status_mib,
    write_json,
)

from routerd.api.keys import hash_key  # noqa: E402
from tests.factories import encode, valid_v1  # noqa: E402
from tests.harness import Broker, free_port, http_get, start_api  # noqa: E402
from tests.harness.config import keep_one_source  # noqa: E402
from tests.harness.wait import wait_for  # noqa: E402

KEY = "bench-api-key"
CUSTOMER = "cus-42"
# Distinct bodies the requests cycle through (the API publishes each, so they need not be
# unique, only not all one object).
DISTINCT = 8


def request_body(seed: int, size: int) -> bytes:
    """A valid v1 request without customer_id (the API sets it from the key), padded with
    text to `size` bytes less a margin for the customer_id and message_id the API adds."""
    request = valid_v1(seed, text="")
    request.pop("customer_id", None)
    request["text"] = "x" * max(0, size - 400 - len(encode(request)))
    return encode(request)


@dataclass
class Round:
    round: int
    kind: str
    peak_rss_mib: float
    end_rss_mib: float
    requests_per_s: float
    answers: dict[int, int]

    def line(self) -> str:
        answers = ", ".join(f"{n} x {code}" for code, n in sorted(self.answers.items()))
        return (
            f"{self.kind:<9} round {self.round}: peak RSS {self.peak_rss_mib:6.1f} MiB, "
            f"at the end {self.end_rss_mib:6.1f} MiB, {self.requests_per_s:7.1f} requests/s "
            f"({answers})"
        )


async def one_round(
    args: argparse.Namespace, round_: int, kind: str, bodies: list[bytes], tree: Path | None
) -> Round:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        workdir = Path(tmp)
        config = keep_one_source(isolated_copy(workdir, uuid.uuid4().hex[:8], None))
        keys = workdir / "keys.json"
        keys.write_text(orjson.dumps({CUSTOMER: [hash_key(KEY)]}).decode())
        async with Broker(args.amqp_url) as broker:
            # Declared (and deleted on exit) by the harness: the API declares nothing.
            await broker.declare_config(config)
            port = free_port()
            log = workdir / "api.log"
            proc = start_api(config, args.amqp_url, keys, port, log, command=command_of(tree))
            try:
                await wait_for(
                    lambda: http_get(port, "/readyz"),
                    lambda answer: answer is not None and answer[0] == 200,
                    within=60,
                    what="routerd api ready",
                )
                answers: dict[int, int] = {}
                limit = asyncio.Semaphore(args.concurrency)
                headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=120
                ) as http:

                    async def post(i: int) -> None:
                        async with limit:
                            answer = await http.post(
                                "/v1/send", content=bodies[i % len(bodies)], headers=headers
                            )
                        answers[answer.status_code] = answers.get(answer.status_code, 0) + 1

                    started = time.monotonic()
                    await asyncio.gather(*(post(i) for i in range(args.count)))
                    elapsed = time.monotonic() - started
                return Round(
                    round_,
                    kind,
                    peak_rss_mib(proc.pid),
                    status_mib(proc.pid, "VmRSS"),
                    args.count / elapsed,
                    answers,
                )
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def command_of(tree: Path | None) -> list[str] | None:
    """The routerd command in `tree`; None for this checkout's (the harness's default)."""
    override = routerd_from(tree).get("ROUTERD_TEST_COMMAND")
    return shlex.split(override) if override else None


async def main(args: argparse.Namespace) -> None:
    size = args.size or shipped_table().limits.max_body_bytes
    bodies = [request_body(seed, size) for seed in range(DISTINCT)]
    mean = statistics.fmean(map(len, bodies))
    print(
        f"routerd api: {args.count} requests of ~{mean:,.0f} B, {args.concurrency} at a time, "
        f"{args.rounds} round(s); {os.cpu_count()} CPUs; {args.amqp_url}"
    )
    kinds = ["routerd"] + (["baseline"] if args.baseline is not None else [])
    rounds: list[Round] = []
    for round_ in range(1, args.rounds + 1):
        # Alternate the order so a drift in machine load does not favour one side.
        for kind in kinds if round_ % 2 else kinds[::-1]:
            tree = args.baseline if kind == "baseline" else None
            rounds.append(await one_round(args, round_, kind, bodies, tree))
            print(rounds[-1].line(), flush=True)
    for kind in kinds:
        mine = [r for r in rounds if r.kind == kind]
        print(
            f"{kind:<9} median: peak RSS {statistics.median(r.peak_rss_mib for r in mine):6.1f} "
            f"MiB, {statistics.median(r.requests_per_s for r in mine):7.1f} requests/s"
        )
    if args.json is not None:
        report: dict[str, Any] = {
            "size": size,
            "mean_body_bytes": mean,
            "count": args.count,
            "concurrency": args.concurrency,
            "rounds": [asdict(r) for r in rounds],
        }
        write_json(args.json, report)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=0, help="body bytes (the config's limit)")
    parser.add_argument("--count", type=int, default=300, help="requests per round (300)")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight at once (8)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each (1)")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another routerd source tree to run too"
    )
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--json", type=Path, default=None, help="also write every round here")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
