#!/usr/bin/env python3
"""The local stack: RabbitMQ, two `routerd serve` replicas, the reference public API and
the rejections recorder (its SQLite file in the state folder, read by the API).

    scripts/stack.py build | up | down | logs       (what `make build/up/down/logs` run)

With a container engine (`docker info` succeeds) the services run from `compose.yaml`;
without one they run as local processes under honcho (`scripts/stack.Procfile`), in the
background, with their labelled output in `<state>/stack.log`. Everything the stack writes
lives in the state folder (`.stack/` by default): the runner it used, the pids it started,
the environment it ran with, the demo API keys (hashed) and the plain demo key.

Every setting is an option or a variable (`--help`), so a test or a second stack runs
beside a developer's own. docs/stack.md says the rest.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PROCFILE = ROOT / "scripts" / "stack.Procfile"
COMPOSE = ["docker", "compose", "--project-name", "routerd", "-f", str(ROOT / "compose.yaml")]
DEMO_CUSTOMER = "cus-demo"
MANAGEMENT_UI = "http://127.0.0.1:15672"
POLL = 0.2  # seconds between two probes while waiting for readiness or an exit


class Runner(enum.Enum):
    COMPOSE = "compose"
    PROCESSES = "processes"


class StackError(Exception):
    """Something that stops a stack command, said so that the reader knows what to do."""


@dataclass(frozen=True)
class Options:
    state: Path
    config: Path
    amqp_url: str
    api_port: int
    metrics_ports: tuple[int, int]
    recorder_port: int
    runner: str
    timeout: float

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def probes(self) -> dict[str, str]:
        """Each service's own readiness probe: /readyz of a replica and of the recorder,
        /healthz of the API."""
        replicas = {
            f"routerd-{i}": f"http://127.0.0.1:{port}/readyz"
            for i, port in enumerate(self.metrics_ports, start=1)
        }
        recorder = f"http://127.0.0.1:{self.recorder_port}/readyz"
        return {**replicas, "api": f"{self.api_url}/healthz", "rejections": recorder}


# --- state folder ----------------------------------------------------------------------


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process counts as gone.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def started_pids(state: Path) -> dict[str, int]:
    """The pids this stack started (honcho and each service), as `up` recorded them."""
    text = _read(state / "pids.json")
    return {} if text is None else {k: int(v) for k, v in json.loads(text).items()}


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def write_demo_keys(state: Path) -> str:
    """A fresh demo key for the demo customer: the API's keys file holds only its hash."""
    from routerd.api.keys import hash_key  # the venv's routerd, as the API itself hashes

    key = f"demo-{secrets.token_urlsafe(18)}"
    (state / "keys.yaml").write_text(f'{DEMO_CUSTOMER}:\n  - "{hash_key(key)}"\n')
    _write_private(state / "demo-key", key + "\n")
    return key


# --- runners ---------------------------------------------------------------------------


def _succeeds(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_runner(wanted: str) -> tuple[Runner, str]:
    if wanted != "auto":
        return Runner(wanted), f"asked for with --runner {wanted}"
    if not _succeeds(["docker", "info"]):
        return Runner.PROCESSES, "no container engine answers `docker info`"
    if not _succeeds(["docker", "compose", "version"]):
        return Runner.PROCESSES, "a container engine answers, but `docker compose` is missing"
    return Runner.COMPOSE, "`docker info` answered"


def _broker_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


def ensure_broker(opts: Options) -> None:
    """Start the local RabbitMQ only when none answers, and remember that this stack did."""
    if _broker_answers(opts.amqp_url):
        return
    if urlsplit(opts.amqp_url).hostname not in ("127.0.0.1", "localhost"):
        raise StackError(f"no broker answers at {redact(opts.amqp_url)}")
    subprocess.run([str(ROOT / "scripts" / "ensure-rabbitmq.sh")], check=True)
    (opts.state / "broker-started").write_text("rabbitmq-server -detached\n")


def stack_env(opts: Options) -> dict[str, str]:
    """What every service runs with; also written to stack.env for honcho and for people."""
    return {
        "ROUTERD_CONFIG": str(opts.config),
        "ROUTERD_AMQP_URL": opts.amqp_url,
        "STACK_DIR": str(opts.state),
        "STACK_API_PORT": str(opts.api_port),
        "STACK_METRICS_PORT_1": str(opts.metrics_ports[0]),
        "STACK_METRICS_PORT_2": str(opts.metrics_ports[1]),
        "STACK_RECORDER_PORT": str(opts.recorder_port),
        "PYTHONUNBUFFERED": "1",
    }


def start_processes(opts: Options) -> int:
    env_file = opts.state / "stack.env"
    values = stack_env(opts)
    _write_private(env_file, "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [
        str(VENV_BIN / "honcho"),
        "--no-colour",
        *("--procfile", str(PROCFILE), "--app-root", str(ROOT), "--env", str(env_file)),
        "start",
    ]
    with (opts.state / "stack.log").open("ab") as log:
        # Its own session: closing the terminal or Ctrl-C in `make` leaves the stack running.
        honcho = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    # Recorded at once, so `down` finds it even if this command is interrupted while waiting.
    (opts.state / "pids.json").write_text(json.dumps({"honcho": honcho.pid}) + "\n")
    return honcho.pid


def log_since(log: Path, offset: int) -> str:
    """What the log gained after `offset` bytes: this run's part of an appended log."""
    return log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""


def service_pids(log: Path, offset: int) -> dict[str, int]:
    """The services' pids as honcho logs them: `... system | api.1 started (pid=123)`."""
    pids: dict[str, int] = {}
    text = log_since(log, offset)
    for line in text.splitlines():
        head, started, tail = line.partition(" started (pid=")
        source, _, process = head.partition("|")
        if started and source.split()[-1:] == ["system"]:
            pids[process.strip().rsplit(".", 1)[0]] = int(tail.rstrip(")"))
    return pids


def start_compose(opts: Options) -> None:
    env = {**os.environ, **stack_env(opts)}
    # Inside the project network the replicas and the API reach the broker by its name.
    env["ROUTERD_AMQP_URL"] = "amqp://guest:guest@rabbitmq:5672/"
    subprocess.run([*COMPOSE, "up", "--detach", "--build"], check=True, env=env, cwd=ROOT)


# --- commands --------------------------------------------------------------------------


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_ready(opts: Options, honcho_pid: int | None) -> None:
    """Poll every service's own probe until all answer 200, within --timeout."""
    deadline = time.monotonic() + opts.timeout
    waiting = opts.probes()
    while waiting:
        waiting = {name: url for name, url in waiting.items() if _status(url) != 200}
        if not waiting:
            return
        if honcho_pid is not None and not _alive(honcho_pid):
            raise StackError(f"the stack stopped while starting; see {opts.state / 'stack.log'}")
        if time.monotonic() > deadline:
            raise StackError(
                f"not ready within {opts.timeout:g}s: {', '.join(sorted(waiting))}"
                f" (probed {', '.join(waiting.values())}); see `make logs`"
            )
        time.sleep(POLL)


def where(opts: Options, runner: Runner, why: str, key: str) -> str:
    body = (
        '{"schema_version": 1, "from": {"email": "noreply@shop.example"},'
        ' "to": [{"email": "ada@example.org"}], "subject": "Hello", "text": "Hi."}'
    )
    metrics = [f"http://127.0.0.1:{port}/metrics" for port in opts.metrics_ports]
    lines = [
        f"routerd stack is up (runner: {runner.value}: {why})",
        f"  API        {opts.api_url}   demo customer {DEMO_CUSTOMER}, demo key {key}",
        *(f"  metrics    {url}" for url in metrics),
        f"  broker     {redact(opts.amqp_url)}",
        f"  state      {opts.state}  (logs: {opts.state / 'stack.log'})",
        "",
        "Send a request:",
        f"  curl -s -X POST {opts.api_url}/v1/send \\",
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        f"    -d '{body}'",
        "Where it went (each replica's routed requests, by target):",
        f"  curl -s {' '.join(metrics)} | grep ^routerd_requests_routed_total",
        "Why a request was rejected (the recorder keeps each one):",
        f"  curl -s {opts.api_url}/v1/rejections -H 'Authorization: Bearer {key}'",
        f"  routerd rejections list --db {opts.state / 'rejections.sqlite3'}",
        "",
        "Follow the logs with `make logs`, stop the stack with `make down`.",
    ]
    if runner is Runner.PROCESSES and _status(MANAGEMENT_UI) is not None:
        lines.insert(5, f"  rabbitmq   {MANAGEMENT_UI} (management UI)")
    if runner is Runner.COMPOSE:
        lines[4:5] = [
            "  broker     amqp://guest:***@127.0.0.1:5673/ (compose's own RabbitMQ)",
            f"  rabbitmq   {MANAGEMENT_UI} (management UI, guest/guest)",
        ]
    return "\n".join(lines)


def _record_pids(state: Path, honcho_pid: int, log: Path, offset: int) -> None:
    pids = {"honcho": honcho_pid, **service_pids(log, offset)}
    (state / "pids.json").write_text(json.dumps(pids, indent=2) + "\n")


def up(opts: Options) -> None:
    opts.state.mkdir(parents=True, exist_ok=True)
    honcho_pid = started_pids(opts.state).get("honcho")
    if honcho_pid is not None and _alive(honcho_pid):
        raise StackError(f"a stack already runs from {opts.state} (honcho pid {honcho_pid})")
    runner, why = choose_runner(opts.runner)
    (opts.state / "runner").write_text(runner.value + "\n")
    key = write_demo_keys(opts.state)
    print(f"Starting the stack with {runner.value} ({why})...", file=sys.stderr)
    if runner is Runner.COMPOSE:
        start_compose(opts)
        wait_ready(opts, None)
    else:
        ensure_broker(opts)
        log = opts.state / "stack.log"
        offset = log.stat().st_size if log.exists() else 0
        pid = start_processes(opts)
        try:
            wait_ready(opts, pid)
        except StackError:
            # Half a stack helps nobody: stop what started and show why the rest did not.
            _record_pids(opts.state, pid, log, offset)
            stop_processes(opts.state, opts.timeout)
            print("\n".join(log_since(log, offset).splitlines()[-40:]), file=sys.stderr)
            raise
        _record_pids(opts.state, pid, log, offset)
    print(where(opts, runner, why, key))


def stop_processes(state: Path, timeout: float) -> None:
    """SIGTERM honcho (it stops its services); kill whatever of ours outlives the bound."""
    pids = started_pids(state)
    honcho_pid = pids.get("honcho")
    if honcho_pid is not None and _alive(honcho_pid):
        os.kill(honcho_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids.values()):
        if time.monotonic() > deadline:
            for name, pid in pids.items():
                if _alive(pid):
                    print(f"{name} (pid {pid}) did not stop: killing it", file=sys.stderr)
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(POLL)
    (state / "pids.json").unlink(missing_ok=True)
    if (state / "broker-started").exists():
        # Only the broker this stack started itself; a system RabbitMQ is never touched.
        subprocess.run(["rabbitmqctl", "shutdown"], check=False)
        (state / "broker-started").unlink()


def down(opts: Options) -> None:
    runner = _read(opts.state / "runner")
    if runner is None:
        print(f"No stack was started from {opts.state}.", file=sys.stderr)
        return
    if Runner(runner) is Runner.COMPOSE:
        subprocess.run([*COMPOSE, "down"], check=True, cwd=ROOT)
    else:
        stop_processes(opts.state, opts.timeout)
    (opts.state / "runner").unlink()
    print("routerd stack stopped.", file=sys.stderr)


def logs(opts: Options) -> None:
    runner = _read(opts.state / "runner")
    if runner == Runner.COMPOSE.value:
        os.execvp("docker", [*COMPOSE, "logs", "--follow"])
    log = opts.state / "stack.log"
    if not log.exists():
        raise StackError(f"no logs in {opts.state}: start the stack with `make up`")
    # honcho already labels each line with its service: `12:00:01 routerd-1.1 | ...`.
    os.execvp("tail", ["tail", "-n", "100", "-F", str(log)])


def build(opts: Options) -> None:
    runner, why = choose_runner(opts.runner)
    if runner is Runner.COMPOSE:
        subprocess.run([*COMPOSE, "build"], check=True, cwd=ROOT)
    else:
        print(f"Nothing to build ({why}): the stack runs from .venv.", file=sys.stderr)


COMMANDS = {"build": build, "up": up, "down": down, "logs": logs}


# option, its variable, its default, what it is; a variable's value stands in for the default.
SETTINGS = (
    ("--state-dir", "STACK_DIR", ".stack", "where the stack keeps its pids, log and keys"),
    ("--config", "ROUTERD_CONFIG", "config/routes.yaml", "the route config of every service"),
    ("--amqp-url", "ROUTERD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "the broker"),
    ("--api-port", "STACK_API_PORT", "8080", "the API's port on 127.0.0.1"),
    ("--metrics-ports", "STACK_METRICS_PORTS", "9464,9465", "the two replicas' HTTP ports"),
    ("--recorder-port", "STACK_RECORDER_PORT", "9466", "the rejections recorder's HTTP port"),
    ("--runner", "STACK_RUNNER", "auto", "auto, compose or processes"),
    ("--timeout", "STACK_TIMEOUT", "60", "seconds to wait for readiness, and for a stop"),
)


def parse(argv: Sequence[str]) -> tuple[str, Options]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=sorted(COMMANDS))
    for flag, variable, default, what in SETTINGS:
        value = os.environ.get(variable, default)
        parser.add_argument(flag, default=value, help=f"{what} (${variable}, default {default})")
    args = parser.parse_args(argv)
    if args.runner not in ("auto", *(r.value for r in Runner)):
        parser.error(f"--runner is auto, compose or processes, not {args.runner!r}")
    try:
        first, second = (int(p) for p in args.metrics_ports.split(","))
        api_port, timeout = int(args.api_port), float(args.timeout)
        recorder_port = int(args.recorder_port)
    except ValueError as exc:
        parser.error(f"ports are whole numbers, two of them for --metrics-ports: {exc}")
    return args.command, Options(
        state=(ROOT / args.state_dir).resolve(),
        config=(ROOT / args.config).resolve(),
        amqp_url=args.amqp_url,
        api_port=api_port,
        metrics_ports=(first, second),
        recorder_port=recorder_port,
        runner=args.runner,
        timeout=timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    command, opts = parse(sys.argv[1:] if argv is None else argv)
    try:
        COMMANDS[command](opts)
    except StackError as exc:
        print(f"stack {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
