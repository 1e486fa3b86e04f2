"""The sd_notify protocol's pure part: datagrams, addresses, the watchdog period, and what
the daemon's systemd link says in which state, through a real Unix datagram socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from routerd.observe import Health, Metrics
from routerd.observe.systemd import (
    Notifier,
    SystemdLink,
    monotonic_usec,
    notify_message,
    reload_and_wait,
    reload_counts,
    reload_outcome,
    socket_address,
    watchdog_interval,
)
from routerd.observe.systemd import _main as systemd_main


def test_message_is_key_value_lines() -> None:
    assert notify_message({"READY": "1", "STATUS": "routing email.send"}) == (
        b"READY=1\nSTATUS=routing email.send\n"
    )


def test_a_newline_in_a_value_cannot_start_an_assignment() -> None:
    assert notify_message({"STATUS": "bad\nREADY=1"}) == b"STATUS=bad READY=1\n"


@pytest.mark.parametrize("key", ["", "ready", "READY=1", "A B"])
def test_keys_are_systemd_names(key: str) -> None:
    with pytest.raises(ValueError, match="sd_notify key"):
        notify_message({key: "1"})


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@routerd/notify") == b"\0routerd/notify"
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("relative/path") is None


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "soon"},
        # Inherited from a parent that was the watched process: not meant for us.
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"},
    ],
)
def test_watchdog_off(environ: dict[str, str]) -> None:
    assert watchdog_interval(environ, 42) is None


def test_monotonic_usec_is_clock_monotonic() -> None:
    # time.monotonic is CLOCK_MONOTONIC on Linux; systemd compares MONOTONIC_USEC with it.
    before = int(time.monotonic() * 1e6)
    now = monotonic_usec()
    assert before <= now < before + 1_000_000


def test_no_notify_socket_means_silence() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"}, pid=1)
    assert not notifier.enabled and notifier.watchdog is None
    assert notifier.send(READY="1") is False


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@routerd-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(5)
    try:
        yield name, sock
    finally:
        sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_datagrams_reach_the_socket(listener: tuple[str, socket.socket]) -> None:
    name, sock = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": name}, pid=os.getpid())
    assert notifier.send(READY="1", STATUS="ok")
    assert received(sock) == {"READY": "1", "STATUS": "ok"}
    notifier.close()


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")}, pid=1)
    assert notifier.send(READY="1") is False
    assert notifier.send(WATCHDOG="1") is False


def link(sock_name: str, health: Health, **kw: float) -> SystemdLink:
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": sock_name, "WATCHDOG_USEC": "2000000"}, pid=os.getpid()
    )
    return SystemdLink(notifier, health, "a" * 64, "email.send", **kw)


def test_ready_once_consuming_then_reload_and_stop(listener: tuple[str, socket.socket]) -> None:
    name, sock = listener
    health = Health(table_loaded=True)
    systemd = link(name, health)
    systemd.report()
    assert received(sock) == {
        "STATUS": "connecting to the broker; route table aaaaaaaaaaaa; last reload: none yet"
    }
    health.connected = health.consuming = True
    systemd.report()
    first = received(sock)
    assert first["READY"] == "1" and first["STATUS"].startswith("routing email.send;")
    systemd.report()  # nothing changed: nothing sent
    systemd.reload_started("SIGHUP")
    reloading = received(sock)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    systemd.reload_finished("refused", "b" * 64)
    after = received(sock)
    assert after["READY"] == "1"
    assert "route table bbbbbbbbbbbb" in after["STATUS"]
    assert "last reload: refused at " in after["STATUS"]
    systemd.stopping()
    assert received(sock)["STOPPING"] == "1"
    systemd.stopping()
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)  # STOPPING=1 once


def test_a_reload_before_ready_is_no_reloading_state(listener: tuple[str, socket.socket]) -> None:
    name, sock = listener
    systemd = link(name, Health(table_loaded=True))
    systemd.reload_started("file change: routes.yaml")
    assert "RELOADING" not in received(sock)
    systemd.reload_finished("accepted", "c" * 64)
    assert "READY" not in received(sock)


def test_watchdog_follows_the_broker_session(listener: tuple[str, socket.socket]) -> None:
    name, _ = listener
    health = Health(table_loaded=True)
    systemd = link(name, health, stuck_after=10.0)
    assert systemd.notifier.watchdog == 1.0
    # Reconnecting (not connected) is the link doing its job: a restart would not help.
    assert systemd.session_healthy(0.0)
    health.connected = True
    assert systemd.session_healthy(100.0)
    assert systemd.session_healthy(109.0)
    # Connected for 10 s and still not consuming: stuck.
    assert not systemd.session_healthy(110.0)
    health.consuming = True
    assert systemd.session_healthy(111.0)
    health.consuming = False
    assert systemd.session_healthy(200.0)  # the clock restarts at each new stall
    assert not systemd.session_healthy(210.5)


def test_reload_counts_from_metrics() -> None:
    metrics = Metrics()
    metrics.reloads.labels(result="refused").inc()
    metrics.reloads.labels(result="accepted").inc(2)
    text = generate_latest(metrics.registry).decode()
    assert reload_counts(text) == {"accepted": 2.0, "refused": 1.0, "unchanged": 0.0}


@pytest.mark.parametrize(
    ("after", "outcome"),
    [
        ({"accepted": 1, "refused": 1, "unchanged": 0}, None),
        ({"accepted": 2, "refused": 1, "unchanged": 0}, "accepted"),
        ({"accepted": 1, "refused": 1, "unchanged": 1}, "unchanged"),
        ({"accepted": 1, "refused": 2, "unchanged": 0}, "refused"),
        # A file-change reload finished in between too: a refusal is never hidden.
        ({"accepted": 2, "refused": 2, "unchanged": 0}, "refused"),
    ],
)
def test_reload_outcome(after: dict[str, float], outcome: str | None) -> None:
    before = {"accepted": 1.0, "refused": 1.0, "unchanged": 0.0}
    assert reload_outcome(before, after) == outcome


def test_exec_reload_without_routerd_says_so_and_signals_nobody() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    # Our own pid: were SIGHUP sent, pytest itself would die of it.
    code, message = reload_and_wait(os.getpid(), f"http://127.0.0.1:{port}/metrics", 5)
    assert code == 1
    assert "is routerd running with this ROUTERD_HTTP_ADDR" in message
    assert "not requested" in message


def test_exec_reload_usage() -> None:
    assert systemd_main(["reload"]) == 2
    assert systemd_main(["reload", "not-a-pid"]) == 2
