"""`routerd serve` under a test NOTIFY_SOCKET, as systemd runs a Type=notify unit: READY=1
once consuming, RELOADING=1/READY=1 around a config change (accepted or refused), WATCHDOG=1
pings at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import anyio
import pytest

from tests.harness.broker import Broker
from tests.harness.config import dump_config, read_config, write_by_rename
from tests.harness.daemon import ROOT, VENV_BIN, Daemon, _child_env, free_port, routerd_command
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


class NotifySocket:
    """What systemd's end of NOTIFY_SOCKET receives: each datagram as a dict, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.times.append(time.monotonic())
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def since(self, index: int) -> list[dict[str, str]]:
        return self.messages[index:]

    async def wait(self, what: str, matches: object, *, after: int = 0, within: float = 30) -> int:
        """Wait for a datagram past `after` for which `matches(msg)` holds; its index."""
        assert callable(matches)

        async def probe() -> int | None:
            for i, msg in enumerate(self.messages[after:], after):
                if matches(msg):
                    return i
            return None

        found = await wait_for(probe, lambda i: i is not None, within=within, what=what)
        assert found is not None
        return found


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    try:
        yield sock
    finally:
        sock.close()


def start_notified(config: Path, amqp_url: str, log_dir: Path, notify: NotifySocket) -> Daemon:
    """`routerd serve` as systemd starts a Type=notify unit with WatchdogSec=."""
    port = free_port()
    log_dir.mkdir(parents=True)
    log_path = log_dir / "routerd.log"
    env = _child_env({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    cmd = [*routerd_command(), "serve", "--config", str(config)]
    cmd += ["--amqp-url", amqp_url, "--http-addr", f"127.0.0.1:{port}"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    return Daemon(proc=proc, http_port=port, config=config, log_path=log_path)


async def exec_reload(daemon: Daemon, amqp_url: str) -> CompletedProcess[bytes]:
    """What the unit's ExecReload= runs, in the unit's environment."""
    python = VENV_BIN / "python"
    env = _child_env(
        {"ROUTERD_HTTP_ADDR": f"0.0.0.0:{daemon.http_port}", "ROUTERD_AMQP_URL": amqp_url}
    )
    cmd = [str(python), "-m", "routerd.observe.systemd", "reload", str(daemon.pid)]
    return await anyio.run_process(cmd, env=env, check=False)


async def test_serve_speaks_sd_notify(
    isolated_config: Path, amqp_url: str, broker: Broker, log_dir: Path, notify: NotifySocket
) -> None:
    daemon = start_notified(isolated_config, amqp_url, log_dir, notify)
    try:
        ready = await notify.wait("READY=1", lambda m: m.get("READY") == "1")
        # READY=1 means consuming: /readyz agrees at that moment already.
        assert await daemon.ready_status() == 200
        assert notify.messages[ready]["STATUS"].startswith("routing ")
        assert not any("READY" in m for m in notify.messages[:ready])

        # The watchdog: pings every half WATCHDOG_USEC, never more often.
        def pings() -> list[float]:
            return [
                t for t, m in zip(notify.times, notify.messages, strict=True) if "WATCHDOG" in m
            ]

        async def count() -> int:
            return len(pings())

        await wait_for(count, lambda n: n >= 4, within=10, what="4 WATCHDOG=1 pings")
        gaps = [b - a for a, b in itertools.pairwise(pings())]
        assert min(gaps) >= WATCHDOG_USEC / 2 / 1e6 * 0.9, gaps

        # An accepted reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 and the result.
        mark = len(notify.messages)
        data = read_config(isolated_config)
        data["rules"][0]["priority"] = data["rules"][0].get("priority", 0) + 1
        write_by_rename(isolated_config, dump_config(data))
        reloading = await notify.wait(
            "RELOADING=1", lambda m: m.get("RELOADING") == "1", after=mark
        )
        assert int(notify.messages[reloading]["MONOTONIC_USEC"]) > 0
        done = await notify.wait(
            "READY=1 after reload", lambda m: m.get("READY") == "1", after=reloading
        )
        assert "last reload: accepted" in notify.messages[done]["STATUS"]

        # The unit's ExecReload on files that did not change: success, "unchanged".
        reload = await exec_reload(daemon, amqp_url)
        assert (reload.returncode, reload.stdout) == (0, b"route table reload: unchanged\n")

        # A broken config: the file watcher refuses it, and so does `systemctl reload`
        # (ExecReload exits 1); systemd sees RELOADING=1, then READY=1 with the refusal.
        mark = len(notify.messages)
        write_by_rename(isolated_config, "rules: [\n")
        await notify.wait(
            "refused reload", lambda m: "last reload: refused" in m.get("STATUS", ""), after=mark
        )
        mark = len(notify.messages)
        reload = await exec_reload(daemon, amqp_url)
        assert reload.returncode == 1
        assert b"routerd refused the reload" in reload.stderr
        done = await notify.wait(
            "refused reload", lambda m: "last reload: refused" in m.get("STATUS", ""), after=mark
        )
        assert notify.messages[done].get("READY") == "1"
        assert any(m.get("RELOADING") == "1" for m in notify.since(mark)[: done - mark])

        # SIGTERM: STOPPING=1, and no watchdog ping after it.
        mark = len(notify.messages)
        assert await daemon.stop() == 0
        stopping = await notify.wait("STOPPING=1", lambda m: m.get("STOPPING") == "1", after=mark)
        assert not [m for m in notify.since(stopping) if "WATCHDOG" in m]
    finally:
        daemon.kill()
        print(daemon.log_tail(80))
