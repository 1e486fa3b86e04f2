"""Where `routerd serve` spends its time while it drains a backlog: py-spy samples the
daemon, and the samples are grouped by layer (routerd's pipeline, its delivery and AMQP
modules, aiormq, pamqp, the event loop, the JSON and schema extensions) and by function.

    .venv/bin/python scripts/bench_profile.py [--count 30000] [--rate 200] [--no-native]
                                              [--top 15] [--json PATH] [--raw PATH]

One routerd runs on an isolated copy of the shipped config and drains a backlog of ~1 KB
requests (5% invalid, as scripts/bench_serve.py loads them); py-spy attaches once the
daemon is ready, so the profile is the drain and not the start-up, and stops when the
backlog is routed. Sampling pauses the daemon for each sample (native stacks need it), so
the drain's rate here is not a throughput figure. py-spy leaves out threads that wait (the
event loop in its selector with nothing to do), so the shares are of the daemon's busy time.
Only the event loop's thread is counted: with native stacks py-spy cannot tell a worker
thread waiting in C (the file watcher's sleep, an idle thread pool) from one that works, and
during a drain routerd's work is the loop's; the other threads' samples are only counted.

A sample's self time goes to its innermost frame that belongs to a layer: native frames of
libc, libpython or unknown libraries are skipped, so the time of a socket send is the
Python function's that called it, while time inside the orjson and jsonschema_rs
extensions (seen with --native) is theirs. Its total time goes to every layer on its stack.
Needs ptrace of the daemon (root, or CAP_SYS_PTRACE in a container).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_serve import (  # noqa: E402
    DEFAULT_URL,
    backlog,
    isolated_copy,
    measure,
    preload,
    write_json,
)

from tests.harness import Broker, start_daemon, topology  # noqa: E402
from tests.harness.config import catch_all_and_targets  # noqa: E402

PACKAGE = ROOT / "routerd"

PIPELINE = "routerd pipeline (pipeline, config)"
DELIVERY = "routerd delivery and AMQP (delivery, amqp)"
ROUTERD_OTHER = "routerd, other modules"
AIORMQ = "aiormq"
PAMQP = "pamqp"
EVENT_LOOP = "asyncio event loop, selectors"
EXTENSIONS = "jsonschema_rs, orjson (native)"
OTHER = "other"
# In the order the report lists them.
LAYERS = (PIPELINE, DELIVERY, ROUTERD_OTHER, AIORMQ, PAMQP, EVENT_LOOP, EXTENSIONS, OTHER)

# `function (file:line)` or, for a native frame, `function (library)` or `0x... (?)`.
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int | None = None

    @property
    def native(self) -> bool:
        return not self.file.endswith(".py")


def parse_frame(text: str) -> Frame:
    match = FRAME.match(text)
    if match is None:
        return Frame(text, "?")
    line = match.group("line")
    return Frame(match.group("function"), match.group("file"), int(line) if line else None)


def parse_raw(text: str) -> list[tuple[list[Frame], int]]:
    """py-spy's `--format raw` (collapsed stacks, outermost frame first): each stack and
    how many samples it had."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def layer(frame: Frame, package: Path = PACKAGE) -> str | None:
    """The layer `frame` belongs to; None for a native frame that is nobody's in particular
    (libc, libpython, an unresolved address), whose time belongs to its caller."""
    path = frame.file
    if frame.native:
        return EXTENSIONS if re.search(r"jsonschema_rs|orjson", path) else None
    if path.startswith(f"{package}{os.sep}"):
        inside = Path(path).relative_to(package).parts[0]
        if inside in ("pipeline", "config"):
            return PIPELINE
        if inside in ("delivery", "amqp"):
            return DELIVERY
        return ROUTERD_OTHER
    parts = Path(path).parts
    if "aiormq" in parts:
        return AIORMQ
    if "pamqp" in parts:
        return PAMQP
    if "asyncio" in parts or Path(path).name == "selectors.py":
        return EVENT_LOOP
    return OTHER


def short_path(path: str, package: Path = PACKAGE) -> str:
    """`path` from its package on: routerd/..., aiormq/..., asyncio/..."""
    # Site-packages first: the venv may sit beside the package, in the same tree.
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if path.startswith(f"{package.parent}{os.sep}"):
        return str(Path(path).relative_to(package.parent))
    stdlib = re.search(r"/lib/python3\.\d+/(.*)$", path)
    return stdlib.group(1) if stdlib else path


def other_thread(frames: list[Frame]) -> bool:
    """A stack of a thread started by `threading` (not the main thread's event loop)."""
    return any(
        f.function == "Thread._bootstrap" and f.file.endswith("threading.py") for f in frames
    )


@dataclass
class Profile:
    samples: int = 0
    # Samples of threads other than the main one, left out of every share.
    other_threads: int = 0
    # Samples whose innermost frame of a layer is in it, and samples with it on the stack.
    self_by_layer: collections.Counter[str] = field(default_factory=collections.Counter)
    total_by_layer: collections.Counter[str] = field(default_factory=collections.Counter)
    # (function, short file, layer) of the innermost frame of a layer: its self samples.
    self_by_function: collections.Counter[tuple[str, str, str]] = field(
        default_factory=collections.Counter
    )

    def top(self, count: int) -> list[tuple[tuple[str, str, str], int]]:
        return self.self_by_function.most_common(count)


def group(stacks: list[tuple[list[Frame], int]], package: Path = PACKAGE) -> Profile:
    profile = Profile()
    for frames, count in stacks:
        if other_thread(frames):
            profile.other_threads += count
            continue
        profile.samples += count
        layers = [(frame, layer(frame, package)) for frame in frames]
        for name in {name for _, name in layers if name is not None}:
            profile.total_by_layer[name] += count
        innermost = next(((f, n) for f, n in reversed(layers) if n is not None), None)
        if innermost is None:
            # Nothing but unresolved native frames: say so rather than drop the time.
            profile.self_by_layer[OTHER] += count
            profile.self_by_function[("(native, unresolved)", "?", OTHER)] += count
            continue
        frame, name = innermost
        # Native frames are addresses more often than names: one row per library.
        function = "(native code)" if frame.native else frame.function
        profile.self_by_layer[name] += count
        profile.self_by_function[(function, short_path(frame.file, package), name)] += count
    return profile


def profile_json(profile: Profile, top: int) -> dict[str, Any]:
    return {
        "samples": profile.samples,
        "other_thread_samples": profile.other_threads,
        "layers": [
            {
                "layer": name,
                "self": profile.self_by_layer[name],
                "total": profile.total_by_layer[name],
            }
            for name in LAYERS
        ],
        "functions": [
            {"function": function, "file": file, "layer": name, "self": samples}
            for (function, file, name), samples in profile.top(top)
        ],
    }


# --------------------------------------------------------------------------- sampling


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(spy: str, pid: int, raw: Path, rate: int, native: bool) -> Any:
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
    command += ["--full-filenames", "--output", str(raw)] + (["--native"] if native else [])
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_recording(recorder: Any, raw: Path) -> tuple[str, str | None]:
    """py-spy's output, and what went wrong if it wrote no profile."""
    # py-spy writes what it sampled when interrupted, as on Ctrl-C.
    recorder.send_signal(signal.SIGINT)
    output, _ = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not raw.exists():
        return output, f"py-spy exited {recorder.returncode}: {output.strip()[-600:]}"
    return output, None


async def profiled_drain(args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    """Drain a backlog with py-spy recording the daemon into `raw`; the drain's figures
    and py-spy's own words."""
    spy = py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy, in the dev extra)"}
    bodies = backlog(args.count, 0.05)
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        config = isolated_copy(Path(tmp), suffix, None)
        queues, _ = topology(config)
        source, targets = catch_all_and_targets(config, queues)
        async with Broker(args.amqp_url) as broker:
            await broker.declare_config(config)
            await preload(broker, source, bodies)
            daemon = start_daemon(config, args.amqp_url, Path(tmp) / "logs", name="profile")
            try:
                await daemon.wait_ready(60)
                recorder = start_recording(spy, daemon.pid, raw, args.rate, args.native)
                result = await measure(
                    broker, targets, len(bodies), daemon.pid, "profiled drain", args.limit
                )
                output, error = await asyncio.to_thread(stop_recording, recorder, raw)
                if await daemon.stop(30) != 0:
                    print(daemon.log_tail(), file=sys.stderr)
            finally:
                daemon.kill()
    drain = {k: v for k, v in result.as_json().items() if k != "rss_mib"}
    figures: dict[str, Any] = {"drain": drain, "py_spy": output.strip().splitlines()[-3:]}
    if error is not None:
        figures["error"] = error
    return figures


def version_of(command: str) -> str:
    run = subprocess.run([command, "--version"], capture_output=True, text=True, check=False)
    return run.stdout.strip()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-profile-raw-") as tmp:
        raw = args.raw or Path(tmp) / "profile.txt"
        figures = await profiled_drain(args, raw)
        spy = py_spy()
        report: dict[str, Any] = {
            "profiler": version_of(spy) if spy else "py-spy (missing)",
            "rate_hz": args.rate,
            "native": args.native,
            "count": args.count,
            **figures,
        }
        if "error" not in figures:
            report |= profile_json(group(parse_raw(raw.read_text())), args.top)
    if "error" in report:
        print(f"no profile: {report['error']}", file=sys.stderr)
    else:
        print_profile(report, args.top)
    if args.json is not None:
        write_json(args.json, report)
    if "error" in report:
        raise SystemExit(1)


def print_profile(report: dict[str, Any], top: int) -> None:
    samples = max(report["samples"], 1)
    drain = report["drain"]
    print(
        f"{report['profiler']}, {report['rate_hz']} Hz"
        f"{', native stacks' if report['native'] else ''}: {report['samples']} samples of "
        f"the event loop's busy time while routerd drained {report['count']} requests "
        f"({drain['rate']:.0f} msg/s under the profiler; {report['other_thread_samples']} "
        "samples of other threads left out)"
    )
    print(f"{'layer':<44} {'self':>6} {'total':>6}")
    for row in report["layers"]:
        print(
            f"{row['layer']:<44} {100 * row['self'] / samples:>5.1f}% "
            f"{100 * row['total'] / samples:>5.1f}%"
        )
    # A short drain samples fewer functions than asked for: say so rather than shrink the
    # heading (routerd drains the test suite's 1,000 requests in 13 samples now).
    listed = len(report["functions"])
    print(f"\ntop {top} functions by self time" + (f" ({listed} sampled)" if listed < top else ""))
    for row in report["functions"]:
        print(f"{100 * row['self'] / samples:>5.1f}%  {row['function']}  ({row['file']})")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30_000, help="backlog drained (30000)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second (200)")
    parser.add_argument(
        "--no-native",
        dest="native",
        action="store_false",
        help="Python frames only (time in orjson and jsonschema_rs then goes to their callers)",
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed by self time")
    parser.add_argument("--amqp-url", default=DEFAULT_URL)
    parser.add_argument("--limit", type=float, default=300.0, help="seconds of drain at most")
    parser.add_argument("--json", type=Path, default=None, help="also write the profile here")
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's raw output here")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
