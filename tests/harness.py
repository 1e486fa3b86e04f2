"""Black-box helpers for tests that run `routerd serve` as a subprocess against a real broker.

- `running_daemon`: start `routerd serve` on a free port, wait for /readyz, always kill it at
  the end (and print its log tail, which pytest shows when the test fails).
- `Broker`: the test's own AMQP connection: publish with publisher confirms, queue depth by
  passive declare, drain a queue exactly, delete the test's queues and exchanges at the end.
- `settle`, `Accounting`, `drain_all`: wait for the daemon to finish, then count every
  request by body (and by its `x-test-seq` header) to name what was lost, doubled, misrouted.
- `broker_connections_of` / `close_connections`: drop one process's broker connections
  (`rabbitmqctl close_connection`), leaving every other client of the shared broker alone.
- Config helpers: read/write routes.yaml, build a Kubernetes ConfigMap-style volume and swap it.

Waits are conditions polled under `anyio.fail_after`, never fixed sleeps.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiormq
import anyio
import yaml
from pamqp.commands import Basic

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
POLL = 0.05

T = TypeVar("T")


# --------------------------------------------------------------------------- waiting


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float,
    what: str,
    interval: float = POLL,
) -> T:
    """Poll `probe` until `done(value)`; on timeout fail naming `what` and the last value."""
    last: T | None = None
    try:
        with anyio.fail_after(within):
            while True:
                value = await probe()
                last = value
                if done(value):
                    return value
                await anyio.sleep(interval)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {within}s waiting for {what}; last: {last!r}"
        ) from None


# --------------------------------------------------------------------------- daemon


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
    log_path = log_dir / f"{name}-{port}.log"
    cmd = [
        *routerd_command(),
        "serve",
        "--config",
        str(config),
        "--amqp-url",
        amqp_url,
        "--http-addr",
        f"127.0.0.1:{port}",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            cwd=ROOT,
            start_new_session=True,  # a Ctrl-C on the test run must not reach it first
        )
    return Daemon(proc=proc, http_port=port, config=config, log_path=log_path)


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


# --------------------------------------------------------------------------- broker side


@dataclass(frozen=True)
class Outgoing:
    body: bytes
    headers: Mapping[str, Any] | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    queue: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool

    @property
    def delivery_mode(self) -> int | None:
        return self.properties.get("delivery_mode")


def plain(value: Any) -> Any:
    """AMQP field values as plain Python: bytes that are text become str, tables dicts."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
)


def _received(queue: str, message: Any) -> Received:
    props = message.header.properties
    properties = {n: getattr(props, n, None) for n in _PROPERTY_NAMES}
    return Received(
        queue=queue,
        body=bytes(message.body),
        headers=plain(props.headers or {}),
        properties={k: v for k, v in properties.items() if v is not None},
        exchange=message.delivery.exchange or "",
        routing_key=message.delivery.routing_key or "",
        redelivered=bool(getattr(message.delivery, "redelivered", False)),
    )


def topology(config: Path) -> tuple[list[str], list[str]]:
    """(queues, exchanges) a routes.yaml names: the source, every target's, rejected's."""
    data = yaml.safe_load(Path(config).read_text())
    queues = [data["source"]["queue"]]
    exchanges: list[str] = []
    for target in [*data.get("targets", {}).values(), data["rejected"]]:
        if target.get("exchange"):
            exchanges.append(target["exchange"])
        queues.extend(q["name"] for q in target.get("queues", []))
    return sorted(set(queues)), sorted(set(exchanges))


async def _delete_queue(channel: Any, name: str) -> Any:
    return await channel.queue_delete(name)


async def _delete_exchange(channel: Any, name: str) -> Any:
    return await channel.exchange_delete(name)


class Broker:
    """The test's own AMQP connection, and cleanup of whatever the test tracked."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()
        self._conn: Any = None
        self._pub: Any = None

    async def __aenter__(self) -> Broker:
        self._conn = await aiormq.connect(self.url, client_properties={"connection_name": "tests"})
        self._pub = await self._conn.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.move_on_after(20, shield=True):
            await self.cleanup()
            with suppress(Exception):
                await self._conn.close()

    def track(self, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
        self.queues.update(queues)
        self.exchanges.update(exchanges)

    def track_config(self, config: Path) -> None:
        queues, exchanges = topology(config)
        self.track(queues, exchanges)

    async def cleanup(self) -> None:
        """Delete every tracked queue and exchange; a missing one is fine."""
        for queue in sorted(self.queues):
            await self._on_fresh_channel(partial(_delete_queue, name=queue))
        for exchange in sorted(self.exchanges):
            await self._on_fresh_channel(partial(_delete_exchange, name=exchange))

    async def _on_fresh_channel(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        # A failed passive declare or delete closes its channel, so each gets its own.
        channel = await self._conn.channel(publisher_confirms=False)
        try:
            return await op(channel)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelClosed):
            return None
        finally:
            if not channel.is_closed:
                with suppress(Exception):
                    await channel.close()

    async def declare_queue(self, name: str, *, quorum: bool = True) -> None:
        args = {"x-queue-type": "quorum"} if quorum else {}
        channel = await self._conn.channel(publisher_confirms=False)
        await channel.queue_declare(name, durable=True, arguments=args)
        await channel.close()
        self.track(queues=[name])

    async def bind_queue(
        self, queue: str, exchange: str, key: str, *, exchange_type: str = "topic"
    ) -> None:
        channel = await self._conn.channel(publisher_confirms=False)
        await channel.exchange_declare(exchange, exchange_type=exchange_type, durable=True)
        await channel.queue_bind(queue, exchange, routing_key=key)
        await channel.close()
        self.track(exchanges=[exchange])

    async def depth(self, queue: str) -> int | None:
        """Ready messages in `queue` (unacked ones not counted); None if it does not exist."""

        async def op(ch: Any) -> int:
            ok = await ch.queue_declare(queue, passive=True)
            return int(ok.message_count)

        result: int | None = await self._on_fresh_channel(op)
        return result

    async def depths(self, queues: Iterable[str]) -> dict[str, int]:
        return {q: (await self.depth(q)) or 0 for q in queues}

    async def publish(
        self,
        routing_key: str,
        items: Iterable[bytes | Outgoing],
        *,
        exchange: str = "",
        window: int = 500,
    ) -> int:
        """Publish persistent, mandatory, with confirms, `window` at a time; count acked."""
        batch: list[Outgoing] = []
        sent = 0
        for item in items:
            batch.append(item if isinstance(item, Outgoing) else Outgoing(item))
            if len(batch) >= window:
                sent += await self._publish_batch(exchange, routing_key, batch)
                batch = []
        if batch:
            sent += await self._publish_batch(exchange, routing_key, batch)
        return sent

    async def _publish_batch(self, exchange: str, routing_key: str, batch: list[Outgoing]) -> int:
        async def one(item: Outgoing) -> None:
            props = Basic.Properties(
                delivery_mode=2, headers=dict(item.headers or {}), **dict(item.properties)
            )
            confirm = await self._pub.basic_publish(
                item.body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=True,
                timeout=30,
            )
            if not isinstance(confirm, Basic.Ack):
                raise AssertionError(f"broker did not confirm a test publish: {confirm!r}")

        async with anyio.create_task_group() as tg:
            for item in batch:
                tg.start_soon(one, item)
        return len(batch)

    async def try_publish(self, routing_key: str, body: bytes, *, exchange: str = "") -> bool:
        """One persistent publish: True when the broker acked it, False when it nacked it."""
        try:
            confirm = await self._pub.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=Basic.Properties(delivery_mode=2),
                timeout=30,
            )
        except aiormq.exceptions.DeliveryError:
            return False
        return isinstance(confirm, Basic.Ack)

    async def delete_queue(self, name: str) -> None:
        await self._on_fresh_channel(partial(_delete_queue, name=name))

    async def drain(
        self, queue: str, count: int | None = None, *, within: float = 60.0
    ) -> list[Received]:
        """Consume `count` messages (default: the queue's whole depth now) and return them.

        Meant for queues nobody else consumes any more (the daemon has stopped), so the depth
        is exact and nothing can hide behind it; the queue is checked empty afterwards.
        """
        if count is None:
            count = await self.depth(queue) or 0
        got: list[Received] = []
        if count == 0:
            return got
        enough = anyio.Event()
        channel = await self._conn.channel(publisher_confirms=False)

        async def on_message(message: Any) -> None:
            got.append(_received(queue, message))
            if len(got) >= count:
                enough.set()

        try:
            await channel.basic_qos(prefetch_count=2000)
            ok = await channel.basic_consume(queue, on_message, no_ack=True)
            with anyio.move_on_after(within):
                await enough.wait()
            with suppress(Exception):
                await channel.basic_cancel(ok.consumer_tag)
        finally:
            with suppress(Exception):
                await channel.close()
        if len(got) < count:
            raise AssertionError(f"drained {len(got)} of {count} from {queue} in {within}s")
        return got


# --------------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class QueueNames:
    """The queues of a (shipped-shape) routes.yaml, by the category that ends in each."""

    source: str
    transactional: str
    bulk: str
    rejected: str

    @classmethod
    def of(cls, config: Path) -> QueueNames:
        data = read_config(config)
        return cls(
            source=data["source"]["queue"],
            transactional=data["targets"]["transactional"]["queues"][0]["name"],
            bulk=data["targets"]["bulk"]["queues"][0]["name"],
            rejected=data["rejected"]["queues"][0]["name"],
        )

    @property
    def targets(self) -> tuple[str, str, str]:
        return (self.transactional, self.bulk, self.rejected)

    def of_category(self, category: str) -> str:
        return {"transactional": self.transactional, "bulk": self.bulk}.get(category, self.rejected)

    def category_of(self, queue: str) -> str:
        return {self.transactional: "transactional", self.bulk: "bulk"}.get(queue, "rejected")


SEQ = "x-test-seq"


def numbered(bodies: Iterable[bytes], start: int = 0) -> list[Outgoing]:
    """Bodies with an `x-test-seq` header, so a missing or doubled request can be named."""
    return [Outgoing(body, {SEQ: start + i}) for i, body in enumerate(bodies)]


@dataclass
class Accounting:
    """Expected (category, body) multiset against what the queues held."""

    expected: Counter[tuple[str, bytes]]
    actual: Counter[tuple[str, bytes]]
    received: list[Received]

    @classmethod
    def of(
        cls, expected: Iterable[tuple[str, bytes]], received: Iterable[Received], names: QueueNames
    ) -> Accounting:
        got = list(received)
        return cls(
            expected=Counter(expected),
            actual=Counter((names.category_of(r.queue), r.body) for r in got),
            received=got,
        )

    @property
    def missing(self) -> Counter[tuple[str, bytes]]:
        return self.expected - self.actual

    @property
    def extra(self) -> Counter[tuple[str, bytes]]:
        return self.actual - self.expected

    def lost(self) -> Counter[bytes]:
        """Bodies found fewer times, in any queue, than they were published."""
        want = Counter[bytes]()
        have = Counter[bytes]()
        for (_, body), n in self.expected.items():
            want[body] += n
        for (_, body), n in self.actual.items():
            have[body] += n
        return want - have

    def duplicates(self) -> int:
        """Copies beyond the published count, of bodies that were published."""
        want = Counter[bytes]()
        have = Counter[bytes]()
        for (_, body), n in self.expected.items():
            want[body] += n
        for (_, body), n in self.actual.items():
            have[body] += n
        return sum(n for body, n in (have - want).items() if body in want)

    def misrouted(self) -> list[tuple[str, str, bytes]]:
        """(expected category, actual category, body) for bodies in the wrong queue."""
        missing = self.missing
        out = []
        for (got_cat, body), _ in self.extra.items():
            for (want_cat, want_body), _ in missing.items():
                if want_body == body and want_cat != got_cat:
                    out.append((want_cat, got_cat, body))
                    break
        return out

    def describe(self, examples: int = 5) -> str:
        seqs: dict[bytes, list[Any]] = {}
        for r in self.received:
            seqs.setdefault(r.body, []).append(r.headers.get(SEQ))
        lost = self.lost()
        lines = [
            f"published {sum(self.expected.values())}, found {sum(self.actual.values())}; "
            f"lost {sum(lost.values())}, duplicates {self.duplicates()}, "
            f"misrouted {len(self.misrouted())}, "
            f"surplus (cat, body) pairs {sum(self.extra.values())}",
        ]
        for body, n in list(lost.items())[:examples]:
            lines.append(f"  lost x{n}: {body[:100]!r}")
        for want, got, body in self.misrouted()[:examples]:
            lines.append(f"  misrouted {want} -> {got}: {body[:100]!r}")
        for (cat, body), n in list(self.extra.items())[:examples]:
            lines.append(f"  extra x{n} in {cat} (seq {seqs.get(body)}): {body[:100]!r}")
        return "\n".join(lines)

    @property
    def exact(self) -> bool:
        return self.expected == self.actual


async def drain_all(broker: Broker, names: QueueNames) -> list[Received]:
    """Everything in the three target queues (the daemon must have stopped)."""
    got: list[Received] = []
    for queue in names.targets:
        got.extend(await broker.drain(queue))
    return got


async def settle(broker: Broker, names: QueueNames, total: int, *, within: float) -> str | None:
    """Wait until the source is empty and the targets hold at least `total` requests.

    Returns None, or on timeout the reason as text instead of failing at once: the caller
    stops the daemon and counts first, so a failure names what was lost or doubled.
    """
    try:
        await wait_for(
            lambda: broker.depths([names.source, *names.targets]),
            lambda d: d[names.source] == 0 and sum(d[q] for q in names.targets) >= total,
            within=within,
            what=f"an empty source and {total} requests in the targets",
            interval=0.1,
        )
    except AssertionError as e:
        return str(e)
    return None


class SteadyPublisher:
    """Publishes numbered bodies at a steady pace until stopped; `sent` is what was confirmed.

    The pacing sleep sets the load, it waits for nothing.
    """

    def __init__(
        self,
        broker: Broker,
        queue: str,
        make_body: Callable[[int], bytes],
        *,
        rate: float = 500.0,
        batch: int = 25,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.make_body = make_body
        self.interval = batch / rate
        self.batch = batch
        self.sent: list[bytes] = []
        self._stop = anyio.Event()
        self.stopped = anyio.Event()

    def mark(self) -> int:
        """The seq of the next request to be published."""
        return len(self.sent)

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                start = len(self.sent)
                bodies = [self.make_body(start + i) for i in range(self.batch)]
                await self.broker.publish(self.queue, numbered(bodies, start))
                self.sent.extend(bodies)
                with anyio.move_on_after(self.interval):
                    await self._stop.wait()
        finally:
            self.stopped.set()

    async def stop(self) -> int:
        self._stop.set()
        await self.stopped.wait()
        return len(self.sent)


# --------------------------------------------------------------------------- connections


def tcp_local_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of `pid`'s TCP sockets connected to `remote_port` (from /proc, no tools)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], cols[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def rabbitmqctl(*args: str) -> str:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


async def broker_connections_of(pid: int, broker_port: int = 5672) -> list[str]:
    """The broker's ids (`<rabbit@host.1.2.3>`) of process `pid`'s AMQP connections.

    Looked up ahead of a close, so that the close itself is one quick `rabbitmqctl` call.
    """
    ports = tcp_local_ports(pid, broker_port)
    listing = await anyio.to_thread.run_sync(
        rabbitmqctl, "list_connections", "--no-table-headers", "pid", "peer_port"
    )
    found = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip().isdigit() and int(parts[1]) in ports:
            found.append(parts[0])
    return found


async def close_connections(connections: Iterable[str], reason: str = "test") -> int:
    """Close these broker connections, broker side, as `rabbitmqctl close_all_connections` would
    close every one; other clients sharing the broker keep theirs. Returns how many."""
    closed = 0
    for connection in connections:
        await anyio.to_thread.run_sync(rabbitmqctl, "close_connection", connection, reason)
        closed += 1
    return closed


async def close_connections_of(pid: int, reason: str = "test", broker_port: int = 5672) -> int:
    """Close, broker side, every AMQP connection process `pid` has; return how many."""
    return await close_connections(await broker_connections_of(pid, broker_port), reason)


# --------------------------------------------------------------------------- config files


def read_config(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    return data


def dump_config(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False)


def write_in_place(path: Path, text: str) -> None:
    """How `echo > file` or a simple editor saves: truncate and write the same inode."""
    with open(path, "w") as f:
        f.write(text)


def write_by_rename(path: Path, text: str) -> None:
    """How vim and most tools save: write a temp file beside it, rename it over the original."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_configmap(volume: Path, config: Path) -> Path:
    """Lay `config` and its schemas out like a kubelet-mounted ConfigMap volume.

    volume/..2024_01_01_00_00_00.000000001/{routes.yaml, send_request.v1.yaml, ...}
    volume/..data -> ..2024_...   volume/routes.yaml -> ..data/routes.yaml   (one per key)
    Schema paths are rewritten to the flat layout. Returns volume/routes.yaml.
    """
    data = read_config(config)
    files: dict[str, str] = {}
    base = config.parent
    schema_dirs = set()
    for schema in data.get("schemas", []):
        src = (base / schema["file"]).resolve()
        schema_dirs.add(src.parent)
        schema["file"] = src.name
    for d in schema_dirs:  # $ref'd siblings such as common.yaml come along
        for f in d.glob("*.yaml"):
            files[f.name] = f.read_text()
    files["routes.yaml"] = dump_config(data)
    volume.mkdir(parents=True, exist_ok=True)
    _configmap_publish(volume, files, "..2024_01_01_00_00_00.000000001")
    for name in files:
        os.symlink(f"..data/{name}", volume / name)
    return volume / "routes.yaml"


def configmap_update(volume: Path, changes: Mapping[str, str]) -> None:
    """Update the volume the way kubelet does: new timestamped dir, `..data` swapped by rename."""
    old = os.readlink(volume / "..data")
    files = {p.name: p.read_text() for p in (volume / old).iterdir()}
    files.update(changes)
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 10**9:09d}"
    _configmap_publish(volume, files, stamp)
    shutil.rmtree(volume / old)


def _configmap_publish(volume: Path, files: Mapping[str, str], stamp: str) -> None:
    (volume / stamp).mkdir()
    for name, text in files.items():
        (volume / stamp / name).write_text(text)
    tmp = volume / "..data_tmp"
    os.symlink(stamp, tmp)
    os.replace(tmp, volume / "..data")
