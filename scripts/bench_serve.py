"""Requests per second of `routerd serve` and of a raw aiormq forwarder, side by side.

Both run as their own process on the same broker and drain the same pre-loaded backlog of
~1 KB persistent send requests (5% invalid, from tests/factories.py), published as
routerd.client publishes them (message_id, content type, schema version header), from a
quorum queue into quorum queues behind a topic exchange. The raw forwarder does what routerd
must do at the least: consume with the same prefetch, publish each request persistent,
mandatory and confirmed with the properties and headers it came with, ack in delivery order
with `multiple=True` from one task; it does not parse. `--raw-bare` makes it republish with
`delivery_mode` alone (no message_id, no content type), which no real forwarder could.

Throughput is measured from the first message seen in a target to the last, by polling the
target queues' depths, so process start-up is left out of both. Prints figures; asserts
nothing. Cleans up its queues and exchanges.

    .venv/bin/python scripts/bench_serve.py [--count 20000] [--prefetch N] [--rounds N]
        [--baseline DIR] [--json PATH]

--baseline DIR also runs the routerd in another source tree (say main, unpacked with
`git archive main | tar -x -C DIR`) in the same rounds, for a before/after ratio.
--json PATH also writes every round's figures, with each contender's RSS sampled every
0.2 s while it drains (scripts/bench_report.py draws them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiormq  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402
from pamqp.commands import Basic  # noqa: E402

from routerd.client import RequestInvalid  # noqa: E402
from routerd.client._request import prepare  # noqa: E402
from routerd.config.loader import load  # noqa: E402
from routerd.config.model import RouteTable  # noqa: E402
from tests.conftest import SHIPPED_CONFIG, SHIPPED_SCHEMAS, isolate_config  # noqa: E402
from tests.factories import encode, invalid_v1, valid_v1  # noqa: E402
from tests.harness import Broker, start_daemon, topology  # noqa: E402
from tests.harness.broker import Outgoing  # noqa: E402
from tests.harness.config import (  # noqa: E402
    catch_all_and_targets,
    catch_all_source,
    full_prefetch_in_flight,
)

DEFAULT_URL = os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY_BYTES = 1024
POLL = 0.02
# RSS samples while a contender drains: enough points for a plot, few enough for the JSON.
RSS_SAMPLE = 0.2
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- workload


def backlog(count: int, invalid: float, seed: int = 42) -> list[bytes]:
    """`count` bodies of ~1 KB; a fraction `invalid` of them fail validation."""
    rng = random.Random(seed)
    bodies = []
    for i in range(count):
        if rng.random() < invalid:
            bodies.append(encode(invalid_v1(i)))
            continue
        request = valid_v1(i)
        pad = BODY_BYTES - len(encode(request)) - len(',"pad":""')
        if pad > 0:
            request["metadata"] = {**request["metadata"], "pad": "x" * pad}
        bodies.append(encode(request))
    return bodies


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_mib(pid: int, key: str) -> float:
    """A size from /proc/PID/status (VmRSS, VmHWM: its peak) in MiB; NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def sample_rss(series: list[tuple[float, float]], pid: int, seconds: float) -> None:
    """Append (seconds, VmRSS MiB) when RSS_SAMPLE has passed since the last sample: the
    drain loops poll more often than that."""
    if not series or seconds - series[-1][0] >= RSS_SAMPLE:
        series.append((round(seconds, 3), status_mib(pid, "VmRSS")))


def peak_rss_mib(pid: int) -> float:
    return status_mib(pid, "VmHWM")


class Result:
    def __init__(
        self,
        name: str,
        count: int,
        seconds: float,
        cpu: float,
        rss: float,
        rss_series: list[tuple[float, float]] | None = None,
        broker_cpu: float | None = None,
    ) -> None:
        self.name, self.count, self.seconds, self.cpu, self.rss = name, count, seconds, cpu, rss
        # (seconds since the measurement began, VmRSS MiB), every RSS_SAMPLE seconds.
        self.rss_series = rss_series or []
        # CPU seconds of this machine's RabbitMQ over the same span (None: no local broker).
        self.broker_cpu = broker_cpu

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return (
            f"{self.name:<22} {self.rate:>7.0f} msg/s   ({self.count} in {self.seconds:.2f} s, "
            f"{1000 * self.cpu / max(self.count, 1):.3f} ms CPU/msg, peak RSS {self.rss:.0f} MiB"
            + (
                ""
                if self.broker_cpu is None
                else f"; broker {1000 * self.broker_cpu / max(self.count, 1):.3f} ms CPU/msg"
            )
            + ")"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "routed": self.count,
            "seconds": self.seconds,
            "rate": self.rate,
            "cpu_seconds": self.cpu,
            "cpu_ms_per_request": 1000 * self.cpu / max(self.count, 1),
            "peak_rss_mib": self.rss,
            "broker_cpu_ms_per_request": (
                None if self.broker_cpu is None else 1000 * self.broker_cpu / max(self.count, 1)
            ),
            "rss_mib": [[round(t, 3), mib] for t, mib in self.rss_series],
        }


def json_safe(value: Any) -> Any:
    """`value` with NaN as null: json.dumps writes NaN, which strict JSON readers refuse."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(json_safe(data), indent=1) + "\n")


def broker_cpu_seconds() -> float | None:
    """CPU seconds of this machine's RabbitMQ (every beam.smp process); None without one."""
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
            total += cpu_seconds(int(entry.name))
            found = True
        except OSError:
            continue
    return total if found else None


async def measure(
    broker: Broker, targets: list[str], total: int, pid: int, name: str, limit: float
) -> Result:
    """Poll the targets' depths until they hold `total`; rate from the first seen to the end."""
    # When the first arrival was seen: time, arrivals, the process's and the broker's CPU.
    first: tuple[float, int, float, float | None] | None = None
    began = time.monotonic()
    deadline = began + limit
    done = 0
    series: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        done = sum((await broker.depths(targets)).values())
        now = time.monotonic()
        sample_rss(series, pid, now - began)
        if first is None and done > 0:
            first = (now, done, cpu_seconds(pid), broker_cpu_seconds())
        if done >= total:
            break
        await asyncio.sleep(POLL)
    else:
        print(f"  {name}: only {done} of {total} after {limit:.0f} s", file=sys.stderr)
    end, cpu_end, rss = time.monotonic(), cpu_seconds(pid), peak_rss_mib(pid)
    broker_end = broker_cpu_seconds()
    if first is None:
        return Result(name, 0, 0.0, 0.0, rss, series)
    broker_cpu = None if broker_end is None or first[3] is None else broker_end - first[3]
    return Result(
        name, done - first[1], end - first[0], cpu_end - first[2], rss, series, broker_cpu
    )


# --------------------------------------------------------------------------- raw forwarder


async def raw_forwarder(
    url: str,
    source: str,
    exchange: str,
    key: str,
    prefetch: int,
    drain_wait: bool = False,
    bare: bool = False,
) -> None:
    """consume → confirmed persistent mandatory publish → in-order ack, multiple=True.

    The request goes on with the properties and headers it came with (its message_id,
    content type, schema version header), as a forwarder must pass them on; `bare` sends
    `delivery_mode` alone instead, which no real forwarder could (the message_id is lost).
    """
    connection = await aiormq.connect(url)
    consume = await connection.channel(publisher_confirms=False)
    publish: Any = await connection.channel(publisher_confirms=True)
    await consume.basic_qos(prefetch_count=prefetch)
    bare_properties = Basic.Properties(delivery_mode=2)
    pending: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()
    wake = asyncio.Event()

    async def on_message(message: Any) -> None:
        confirm = asyncio.ensure_future(
            publish.basic_publish(
                message.body,
                exchange=exchange,
                routing_key=key,
                properties=bare_properties if bare else message.header.properties,
                mandatory=True,
                # Confirms are still awaited; wait=False only skips waiting for the socket
                # drain under the channel lock, which serializes publishes (routerd skips it
                # too). --raw-drain-wait puts it back, as a naive forwarder would have it.
                wait=drain_wait,
            )
        )
        pending.append((message.delivery.delivery_tag, confirm))
        wake.set()

    async def acker() -> None:
        # The only place acks leave from, in delivery order: one multiple=True ack covers
        # every delivery whose publish is confirmed, up to the first still waiting.
        while True:
            if not pending:
                wake.clear()
                await wake.wait()
                continue
            tag, confirm = pending[0]
            if not isinstance(await confirm, Basic.Ack):
                raise SystemExit(f"publish of delivery {tag} not confirmed")
            pending.popleft()
            while pending and pending[0][1].done():
                tag, confirm = pending.popleft()
                if not isinstance(confirm.result(), Basic.Ack):
                    raise SystemExit(f"publish of delivery {tag} not confirmed")
            await consume.basic_ack(tag, multiple=True)

    await consume.basic_consume(source, on_message)
    await acker()


# --------------------------------------------------------------------------- phases


def as_published(body: bytes, table: RouteTable) -> Outgoing:
    """`body` as the public API publishes it with routerd.client: with its message_id,
    content type and schema version header. A body that is not a JSON object goes with a
    message_id and the content type only."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        request = None
    prepared = None
    if isinstance(request, dict):
        with contextlib.suppress(RequestInvalid):
            prepared = prepare(request, table, check=False)
    if prepared is None:
        properties = {"content_type": "application/json", "message_id": uuid.uuid4().hex}
        return Outgoing(body, None, properties)
    # The harness always publishes persistent.
    properties = {k: v for k, v in prepared.properties.items() if k != "delivery_mode"}
    return Outgoing(prepared.body, prepared.headers, properties)


@functools.cache
def shipped_table() -> RouteTable:
    """The shipped config, loaded once: every round's preload publishes through it."""
    return load(SHIPPED_CONFIG)


async def preload(broker: Broker, queue: str, bodies: list[bytes]) -> None:
    """Publish the backlog as routerd.client would."""
    table = shipped_table()
    start = time.monotonic()
    await broker.publish(queue, (as_published(body, table) for body in bodies), window=1000)
    elapsed = time.monotonic() - start
    print(f"  loaded {len(bodies)} into {queue} in {elapsed:.1f} s", file=sys.stderr)


def spawn_raw(
    url: str, source: str, exchange: str, key: str, prefetch: int, drain_wait: bool, bare: bool
) -> Any:
    cmd = [sys.executable, __file__, "--raw-child", source, exchange, key]
    cmd += ["--amqp-url", url, "--prefetch", str(prefetch)]
    cmd += ["--raw-drain-wait"] if drain_wait else []
    return subprocess.Popen(cmd + (["--raw-bare"] if bare else []))


@dataclasses.dataclass(frozen=True)
class RawPath:
    """The raw forwarder's own queues: `source`, and `target` bound to `exchange` by `key`."""

    source: str
    target: str
    exchange: str
    key: str = "transactional"


async def declare_raw_path(broker: Broker, *, quorum: bool = True) -> RawPath:
    """A fresh RawPath, declared (quorum queues, as the shipped config's) and tracked, so the
    broker deletes it on exit."""
    suffix = uuid.uuid4().hex[:8]
    path = RawPath(f"bench.raw.in.{suffix}", f"bench.raw.out.{suffix}", f"bench.{suffix}")
    broker.track([path.source, path.target], [path.exchange])
    await broker.declare_queue(path.source, quorum=quorum)
    await broker.declare_queue(path.target, quorum=quorum)
    await broker.bind_queue(path.target, path.exchange, path.key)
    return path


def shipped_window() -> int:
    """routerd's window on the shipped config (the prefetch within the byte budget): the
    raw forwarder gets the same."""
    shipped = shipped_table()
    return shipped.source.window(shipped.limits)


async def bench_raw(
    url: str, bodies: list[bytes], prefetch: int, limit: float, drain_wait: bool, bare: bool
) -> Result:
    async with Broker(url) as broker:
        path = await declare_raw_path(broker)
        await preload(broker, path.source, bodies)
        child = spawn_raw(url, path.source, path.exchange, path.key, prefetch, drain_wait, bare)
        label = "raw forwarder (drain)" if drain_wait else "raw aiormq forwarder"
        label += " (bare)" if bare else ""
        try:
            return await measure(broker, [path.target], len(bodies), child.pid, label, limit)
        finally:
            child.kill()
            child.wait()


def isolated_copy(workdir: Path, suffix: str, prefetch: int | None) -> Path:
    (workdir / "config").mkdir()
    shutil.copytree(SHIPPED_SCHEMAS, workdir / "schemas")
    data = isolate_config(yaml.safe_load(SHIPPED_CONFIG.read_text()), f"bench.{suffix}")
    if prefetch is not None:
        catch_all_source(data)["prefetch"] = prefetch
    path = workdir / "config" / "routes.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if prefetch is not None:
        # The whole prefetch in flight: a byte budget that does not lower the window.
        full_prefetch_in_flight(path)
    return path


def routerd_from(tree: Path | None) -> dict[str, str]:
    """The environment that makes tests.harness start the routerd in `tree` (None: this one)."""
    if tree is None:
        return {}
    code = "from routerd.cli import main; main()"
    # -P: the harness starts the daemon in this checkout, and `python -c` would otherwise
    # put that directory first on sys.path, so this checkout's routerd, not the tree's,
    # would run (it did, in every --baseline run before this flag).
    return {"ROUTERD_TEST_COMMAND": f"env PYTHONPATH={tree} {sys.executable} -P -c '{code}'"}


async def bench_routerd(
    url: str,
    bodies: list[bytes],
    prefetch: int | None,
    limit: float,
    tree: Path | None = None,
    label: str = "routerd serve",
) -> tuple[Result, dict[str, int]]:
    previous = os.environ.get("ROUTERD_TEST_COMMAND")
    os.environ.update(routerd_from(tree))
    try:
        return await _bench_routerd(url, bodies, prefetch, limit, label)
    finally:
        os.environ.pop("ROUTERD_TEST_COMMAND", None)
        if previous is not None:
            os.environ["ROUTERD_TEST_COMMAND"] = previous


async def _bench_routerd(
    url: str, bodies: list[bytes], prefetch: int | None, limit: float, label: str
) -> tuple[Result, dict[str, int]]:
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        config = isolated_copy(Path(tmp), suffix, prefetch)
        queues, _ = topology(config)
        source, targets = catch_all_and_targets(config, queues)
        async with Broker(url) as broker:
            # The topology exactly as routerd declares it, before the backlog goes in.
            await broker.declare_config(config)
            await preload(broker, source, bodies)
            daemon = start_daemon(config, url, Path(tmp) / "logs", name="bench")
            try:
                result = await measure(broker, targets, len(bodies), daemon.pid, label, limit)
                spread = await broker.depths(targets)
                if await daemon.stop(30) != 0:
                    print(daemon.log_tail(), file=sys.stderr)
            finally:
                daemon.kill()
            return result, spread


async def main(args: argparse.Namespace) -> None:
    prefetch = args.prefetch or shipped_window()
    bodies = backlog(args.count, args.invalid)
    mean = sum(map(len, bodies)) / len(bodies)
    print(
        f"backlog: {len(bodies)} persistent send requests, mean {mean:.0f} B, "
        f"{args.invalid:.0%} invalid; window (prefetch in flight) {prefetch}; "
        f"{os.cpu_count()} CPUs; "
        f"{args.rounds} round(s); {args.amqp_url}"
    )
    kinds = ["raw", "routerd"] if args.only is None else [args.only]
    if args.baseline is not None:
        kinds.append("baseline")
    results: dict[str, list[Result]] = {k: [] for k in kinds}
    rounds: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        # Alternate the order so a drift in machine load does not favour one side.
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            if kind == "raw":
                result = await bench_raw(
                    args.amqp_url, bodies, prefetch, args.limit, args.raw_drain_wait, args.raw_bare
                )
            elif kind == "baseline":
                result, spread = await bench_routerd(
                    args.amqp_url, bodies, args.prefetch, args.limit, args.baseline, "baseline"
                )
            else:
                result, spread = await bench_routerd(
                    args.amqp_url, bodies, args.prefetch, args.limit
                )
            results[kind].append(result)
            rounds.append({"round": round_ + 1, "kind": kind, **result.as_json()})
            print(result.line(), flush=True)
            if kind != "raw":
                rounds[-1]["targets"] = spread
                print(f"{'':<22} routed: " + ", ".join(f"{q}={n}" for q, n in spread.items()))
    median = {k: statistics.median(r.rate for r in v) for k, v in results.items()}
    if args.rounds > 1:
        for kind, rate in median.items():
            print(f"{'median ' + kind:<22} {rate:>7.0f} msg/s")
    if "raw" in median:
        for kind in ("routerd", "baseline"):
            if kind in median:
                print(f"{'ratio ' + kind + '/raw':<22} {median[kind] / median['raw']:>7.2f}")
    if "routerd" in median and "baseline" in median:
        print(f"{'ratio routerd/baseline':<22} {median['routerd'] / median['baseline']:>7.2f}")
    if "routerd" in results:
        print(f"{'routerd peak RSS':<22} {max(r.rss for r in results['routerd']):>7.0f} MiB")
    if args.json is not None:
        write_json(
            args.json,
            {
                "count": len(bodies),
                "mean_body_bytes": mean,
                "invalid": args.invalid,
                "window": prefetch,
                "cpus": os.cpu_count(),
                "kinds": kinds,
                "rounds": rounds,
            },
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="backlog size (20000)")
    parser.add_argument(
        "--prefetch", type=int, default=None, help="both consumers' prefetch (the config's)"
    )
    parser.add_argument("--invalid", type=float, default=0.05, help="invalid share (0.05)")
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, medians (1)")
    parser.add_argument("--only", choices=["raw", "routerd"], default=None)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another routerd source tree to run too"
    )
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per phase at most")
    parser.add_argument("--json", type=Path, default=None, help="also write every round here")
    parser.add_argument(
        "--raw-drain-wait",
        action="store_true",
        help="raw forwarder waits for each publish's socket drain (aiormq's default)",
    )
    parser.add_argument(
        "--raw-bare",
        action="store_true",
        help="raw forwarder republishes with delivery_mode alone, dropping the request's "
        "properties and headers (its message_id among them)",
    )
    parser.add_argument(
        "--raw-child", nargs=3, metavar=("SOURCE", "EXCHANGE", "KEY"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.raw_child:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        source, exchange, key = arguments.raw_child
        asyncio.run(
            raw_forwarder(
                arguments.amqp_url,
                source,
                exchange,
                key,
                arguments.prefetch,
                arguments.raw_drain_wait,
                arguments.raw_bare,
            )
        )
    else:
        asyncio.run(main(arguments))
