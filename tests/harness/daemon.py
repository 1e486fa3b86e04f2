"""`routerd serve` as a subprocess: start it on a free port, wait for /readyz, always kill it
at the end (and print its log tail, which pytest shows when the test fails), and read what a
black-box test may observe of it: exit code, log, /metrics, memory, broker sockets.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from tests.harness.connections import tcp_local_ports
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def routerd_command() -> list[str]:
    """`.venv/bin/routerd` when the package is installed, else the same entry point via python.

    ROUTERD_TEST_COMMAND (shell words) overrides it, e.g. to test an installed build.
    """
    override = os.environ.get("ROUTERD_TEST_COMMAND")
    if override:
        return shlex.split(override)
    exe = VENV_BIN / "routerd"
    if exe.exists():
        return [str(exe)]
    python = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
    return [str(python), "-c", "from routerd.cli import main; main()"]


def routerd_available() -> bool:
    """True once `routerd serve --help` works (the daemon may still be under construction)."""
    try:
        out = subprocess.run(
            [*routerd_command(), "serve", "--help"],
            capture_output=True,
            timeout=30,
            env=_child_env(),
            cwd=ROOT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Settings come from flags only: a developer's ROUTERD_* must not leak into a test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class DaemonExited(AssertionError):
    pass


async def http_get(port: int, path: str, *, within: float = 2.0) -> tuple[int, bytes] | None:
    """A minimal HTTP/1.0 GET on 127.0.0.1; None when nothing answers."""
    try:
        with anyio.fail_after(within):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
                chunks = []
                with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while True:
                        chunks.append(await stream.receive())
    except (OSError, TimeoutError):
        return None
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body


@dataclass
class Daemon:
    """One `routerd serve` subprocess and what a black-box test may observe of it."""

    proc: subprocess.Popen[bytes]
    http_port: int
    config: Path
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    async def get(self, path: str) -> tuple[int, bytes] | None:
        return await http_get(self.http_port, path)

    async def ready_status(self) -> int | None:
        answer = await self.get("/readyz")
        return None if answer is None else answer[0]

    async def wait_not_ready(self, within: float, *, during: str) -> None:
        """Wait until /readyz answers 503; `during` names the fault in a timeout's message."""
        await wait_for(
            self.ready_status,
            lambda status: status == 503,
            within=within,
            what=f"/readyz 503 {during}",
            interval=0.1,
        )

    async def wait_ready(self, within: float = 30.0) -> None:
        async def probe() -> int | None:
            if self.proc.poll() is not None:
                raise DaemonExited(
                    f"routerd exited with {self.proc.returncode} before ready:\n{self.log_tail()}"
                )
            return await self.ready_status()

        try:
            await wait_for(probe, lambda s: s == 200, within=within, what="/readyz 200")
        except DaemonExited:
            raise
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- routerd log ---\n{self.log_tail()}") from None

    async def metrics(self) -> str:
        answer = await self.get("/metrics")
        return "" if answer is None else answer[1].decode("utf-8", "replace")

    async def decided(self) -> int:
        """Send requests whose decision the broker confirmed, by the daemon's own counters:
        readable while the broker is away, when queue depths are not."""
        text = await self.metrics()
        return int(
            metric_sum(text, "routerd_requests_routed_total")
            + metric_sum(text, "routerd_requests_rejected_total")
        )

    def send(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, within: float) -> int:
        async def probe() -> int | None:
            return self.proc.poll()

        try:
            rc = await wait_for(probe, lambda rc: rc is not None, within=within, what="exit")
        except AssertionError as e:
            raise AssertionError(f"routerd did not exit: {e}\n{self.log_tail()}") from None
        assert rc is not None
        return rc

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.send(signal.SIGTERM)
        return await self.wait_exit(within)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def wait_for_log(self, pattern: str, *, within: float, after: int = 0) -> re.Match[str]:
        """Wait until the log, from character offset `after`, matches `pattern`."""
        regex = re.compile(pattern, re.MULTILINE)

        async def probe() -> re.Match[str] | None:
            return regex.search(self.log_text(), after)

        try:
            match = await wait_for(probe, lambda m: m is not None, within=within, what=pattern)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- routerd log ---\n{self.log_tail()}") from None
        assert match is not None
        return match

    def peak_rss_kib(self) -> int | None:
        """VmHWM of the live process (peak resident set), in KiB."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) if match else None

    def amqp_local_ports(self, broker_port: int = 5672) -> set[int]:
        return tcp_local_ports(self.pid, broker_port)


def start_daemon(
    config: Path,
    amqp_url: str,
    log_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    name: str = "routerd",
) -> Daemon:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    args = ["serve", "--config", str(config), "--amqp-url", amqp_url]
    args += ["--http-addr", f"127.0.0.1:{port}", *extra_args]
    return spawn(args, port=port, config=config, log_path=log_dir / f"{name}-{port}.log")


def spawn(
    args: Sequence[str], *, port: int, config: Path, log_path: Path, append: bool = False
) -> Daemon:
    """`routerd ARGS` as a subprocess, its output in `log_path`, its HTTP endpoint on
    `port` (ARGS say so)."""
    with log_path.open("ab" if append else "wb") as log:
        proc = subprocess.Popen(
            [*routerd_command(), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            cwd=ROOT,
            start_new_session=True,  # a Ctrl-C on the test run must not reach it first
        )
    return Daemon(proc=proc, http_port=port, config=config, log_path=log_path)


def start_api(
    config: Path,
    amqp_url: str,
    keys: Path,
    port: int,
    log_path: Path,
    *flags: str,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> subprocess.Popen[bytes]:
    """`routerd api` (or `command api`) as a process, set up as a deployment does: by
    variables (`env` adds to them), `--listen` and `flags`; its output in `log_path`."""
    variables = {
        "ROUTERD_CONFIG": str(config),
        "ROUTERD_AMQP_URL": amqp_url,
        "ROUTERD_API_KEYS": str(keys),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*(command or routerd_command()), "api", "--listen", f"127.0.0.1:{port}", *flags],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(variables),
            cwd=ROOT,
            start_new_session=True,
        )


@asynccontextmanager
async def running_daemon(
    config: Path,
    amqp_url: str,
    log_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
    wait_ready: bool = True,
    name: str = "routerd",
) -> AsyncIterator[Daemon]:
    """A started (and by default ready) daemon that is always killed when the block ends."""
    daemon = start_daemon(config, amqp_url, log_dir, extra_args=extra_args, name=name)
    try:
        if wait_ready:
            await daemon.wait_ready(ready_timeout)
        yield daemon
    finally:
        daemon.kill()
        print(f"--- {name} (pid {daemon.pid}, exit {daemon.returncode}) log tail ---")
        print(daemon.log_tail(80))


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of metric `name` (optionally with these label values) in a
    Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total
