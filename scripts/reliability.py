"""Run the fault scenarios against the real broker and write docs/reliability.md from the run.

Each scenario under tests/faults/ that measures something records its figures (requests,
lost, duplicates, time to recover...) as one JSON line in the file named by ROUTERD_FIGURES
(tests/harness/figures.py); this script runs them with that set, then writes the document:
what each scenario does, and the figures of this run. The run raises the shared broker's
memory alarm and restarts it (both always undone): do not run it against a broker others
depend on.

    .venv/bin/python scripts/reliability.py [--output docs/reliability.md] [pytest args...]
"""

# ruff: noqa: E501  (the document's tables are one row a line)
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/faults/test_kill9.py",
    "tests/faults/test_network.py",
    "tests/faults/test_alarm.py",
    "tests/faults/test_broker_restart.py",
    "tests/faults/test_queue_full.py",
    "tests/faults/test_reload_storm.py",
    "tests/faults/test_big_bodies.py",
]

INTRO = """\
# Reliability: the faults routerd survives, and what they cost

Written by `scripts/reliability.py` from a real run against the RabbitMQ broker at
127.0.0.1:5672 (run it again to refresh every figure; `make faults` does). Each scenario is
a test under `tests/faults/` that runs `routerd serve` as a real process, streams requests
with known bodies and an `x-test-seq` header through it, injects the fault, and then counts
every request in the target and rejected queues (`tests/harness/accounting.py`). **Lost must
be 0** and is asserted; duplicates are allowed by at-least-once delivery (a request whose
decision was confirmed but whose source ack died with the process or the connection is
routed again) and are counted here. The same tests run in `make test`.

| scenario | test | what is injected | what routerd must do |
| --- | --- | --- | --- |
| kill -9 | `test_kill9.py` | SIGKILL at 3 seeded random points of a 6,000 stream, a new daemon each time; and one of 3 competing replicas killed | lose nothing; at most a window (128, the catch-all's prefetch within its byte budget) of duplicates per kill |
| cut | `test_network.py` | the TCP fault proxy (`tests/harness/faultproxy.py`) closes both sides | reconnect by itself |
| black hole | `test_network.py` | the proxy accepts bytes and answers nothing, for new connections too | the heartbeat (1 s in the test's URL) notices in 3 x (1 + 1) s; `/readyz` 503 until the link heals |
| slow link | `test_network.py` | the proxy holds each chunk 0.2 s and passes 64 KiB/s; 1 s publish timeout | publish timeouts requeue, nothing lost |
| memory alarm | `test_alarm.py` | `rabbitmqctl set_vm_memory_high_watermark 0.0000001` for 3 publish timeouts, then the old value | `connection.blocked`: no publish timeout or requeue while blocked; `/readyz` 503 "the broker blocks publishing"; `routerd_broker_blocked` 1; resume by itself |
| broker restart | `test_broker_restart.py` | `rabbitmqctl stop_app` / `start_app` during a 20,000 backlog (queued before the daemon starts; the stop once 2,000 are routed) | `/readyz` 503 while away; reconnect; nothing lost |
| queue full | `test_queue_full.py` | a target with `x-max-length: 100`, `x-overflow: reject-publish` (from the config), and the rejected queue refusing by policy for 4 s, then consumed | each nack retried for the nack patience (2 s), then requeued after a pause (0.1 s doubling to 5 s), `max_redeliveries` (2 in this test) times, then rejected; while rejected refuses too, the request stays in the source; nacks on `/metrics`, errors in the log |
| reload storm | `test_reload_storm.py` | the config rewritten and SIGHUP'd every 0.2 s while the broker restarts | stay up, come back ready, lose nothing |
| bodies at the limit | `test_big_bodies.py` | 40 valid bodies of just under 1 MiB queued, every source's `max_in_flight_bytes` set to 4 MiB | consume with a window of 4 (the broker's own `prefetch_count`), never hold more than 4 MiB of bodies (`routerd_in_flight_bytes`), lose nothing |

What these scenarios found and what was changed:

- **Memory or disk alarm**: routerd kept timing publishes out while the broker blocked it
  (196 timeouts and requeues in the test before the fix, 0 after). The confirm clock now
  stops while the connection is blocked (`routerd/amqp/flow.py`, `publisher.py`).
- **A full or refusing queue**: a nacked request was requeued at once and came straight back,
  ~420 publish-nack-requeue rounds a second on this machine; it is now held 0.1 s (doubling
  to 5 s) before its requeue, 64-120 a second in the runs so far (`routerd/delivery/handler.py`, `retry_pause`).
- **RabbitMQ 3.10 quorum queues keep nacking a channel they once refused** with
  `reject-publish`, even after the limit is lifted and the queue emptied; a new channel is
  accepted at once. routerd stayed stuck until a reconnect; it now renews its confirm
  channel after a nack, at most every 5 s (`routerd/amqp/publisher.py`).
- **Bodies at the size limit**: in-flight work was bounded by the prefetch count only, so a
  prefetch of 256 could put 256 MiB of 1 MiB bodies in one daemon (RabbitMQ does not
  implement a byte prefetch). Each source now consumes with a window: its prefetch lowered
  until that many bodies at `limits.max_body_bytes` fit its `max_in_flight_bytes` (128 MiB
  by default, so 128 for the shipped catch-all). `scripts/bench_big_bodies.py --kind text
  --count 600 --budgets 256,128,64,256,128,64`, 600 valid 1 MiB bodies: peak RSS 183 and
  182 MiB with the old window of 256, 155 and 125 MiB with 128, 96 and 119 MiB with 64,
  and 263-281 requests/s with 128 against 196-200 with 256 (`routerd/config/model.py`
  `Source.window`). The daemon never holds its whole window here because it routes as
  fast as the broker delivers; `tests/faults/test_big_bodies.py` shows the bound itself.

## Figures of this run
"""

OUTRO = """
Keys: `lost` and `duplicates` count request bodies over every target and rejected queue;
`*_s` are seconds measured by the test from the fault's end (or the kill) to the state
named; `routed_at_*` shows the fault landed mid-stream (after a broker stop, the daemon's own
count of confirmed decisions, read while the broker is down). Recovery times are bounded below
by the test's probes (every 0.05-0.1 s) and, after a broker restart, start once
`rabbitmqctl await_startup` returned, by which time routerd had often reconnected already.

## Not covered here

- A body over `limits.max_body_bytes` is rejected (`too_large`) without being decoded, but
  it is in memory once received: the broker's own `max_message_size` (128 MiB by default in
  RabbitMQ 3.10) bounds it. Set it near the body limit on the broker to make the byte
  budget hold for hostile bodies too (docs/SECURITY.md).
- The costliest single body: `scripts/bench_big_bodies.py --decide` times `decide()` on one
  1 MiB body of ~350,000 empty objects in a list, each an error. It took 21.5 s of event
  loop under load (7.3 s on a quiet machine) while every schema error was built before the
  first `max_reasons` were kept; now `evaluate` counts them and only those reported are
  formatted: about 1 s (3.2 s and 294 MiB under the script's tracemalloc, which slows it).
  A valid 1 MiB body takes 2 ms and 13 MiB.
- TLS faults, and several brokers (failover), are other issues' work.
"""


def render(figures: list[dict[str, Any]], command: str) -> str:
    lines = [INTRO]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"Run {stamp} with `{command}`.\n")
    lines.append("| scenario | requests | lost | duplicates | other figures |")
    lines.append("| --- | ---: | ---: | ---: | --- |")
    for entry in figures:
        entry = dict(entry)
        scenario = entry.pop("scenario")
        requests = entry.pop("requests", "")
        lost = entry.pop("lost", "")
        duplicates = entry.pop("duplicates", "")
        other = ", ".join(f"{k} {v}" for k, v in sorted(entry.items()))
        lines.append(f"| {scenario} | {requests} | {lost} | {duplicates} | {other} |")
    lines.append(OUTRO)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "reliability.md")
    args, pytest_args = parser.parse_known_args()
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as out:
        figures_path = Path(out.name)
    env = {**os.environ, "ROUTERD_FIGURES": str(figures_path)}
    cmd = [str(ROOT / ".venv" / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", *TESTS]
    run = subprocess.run([*cmd, *pytest_args], cwd=ROOT, env=env)
    figures = [json.loads(line) for line in figures_path.read_text().splitlines() if line]
    figures_path.unlink()
    if run.returncode != 0:
        print(f"the fault tests failed (exit {run.returncode}); not writing", file=sys.stderr)
        return run.returncode
    args.output.write_text(render(figures, "make faults"))
    print(f"wrote {args.output} ({len(figures)} scenarios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
