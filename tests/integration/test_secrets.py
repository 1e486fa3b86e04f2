"""The broker password, given as ops give it (a secret file, a variable, a flag), never
reaches what routerd prints or serves: its log, its errors, /metrics, /readyz, its argv.

Each run is a real `routerd serve` (or `send`) subprocess whose connection fails in a way
ops meet: a host that does not resolve, a port nobody listens on, a wrong password.
Everything it wrote to stdout and stderr is searched for the password.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import pytest

from tests.harness import ROOT, Broker, QueueNames, free_port, routerd_command, wait_for
from tests.harness.daemon import http_get

pytestmark = [pytest.mark.anyio]

# Characters a URL parser or a log formatter might treat specially, so that a partial
# redaction (a password cut at its @ or /) would still leave a searchable piece.
PASSWORD = "Pw-9f3Kx7Zq@sec/ret"
PIECES = ("Pw-9f3Kx7Zq", "sec/ret", "9f3Kx7Zq")
ENCODED = PASSWORD.replace("@", "%40").replace("/", "%2F")


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def _assert_no_password(what: str, text: str) -> None:
    for piece in (*PIECES, ENCODED):
        assert piece not in text, f"{what} shows the password ({piece!r}):\n{text[-3000:]}"


def _start(cmd: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(env),
            cwd=ROOT,
            start_new_session=True,
        )


async def _serve_until_it_failed_to_connect(
    tmp_path: Path, config: Path, env: Mapping[str, str], args: Sequence[str] = ()
) -> tuple[str, str, str, bytes]:
    """Run serve until it logged a failed broker session; its log, /readyz, /metrics, argv."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    cmd = [*routerd_command(), "serve", "--config", str(config)]
    cmd += ["--http-addr", f"127.0.0.1:{port}", *args]
    proc = _start(cmd, env, log_path)
    try:
        await wait_for(
            lambda: anyio.to_thread.run_sync(log_path.read_text),
            lambda text: text.count("broker session failed") >= 2,
            within=60,
            what="two failed connection attempts in the log",
        )
        ready = await http_get(port, "/readyz")
        metrics = await http_get(port, "/metrics")
        cmdline = await anyio.Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        proc.send_signal(signal.SIGTERM)
        await wait_for(
            lambda: anyio.to_thread.run_sync(proc.poll),
            lambda rc: rc is not None,
            within=30,
            what="exit after SIGTERM",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert ready is not None and ready[0] == 503, ready
    assert metrics is not None and metrics[0] == 200
    return (
        log_path.read_text(errors="replace"),
        ready[1].decode(errors="replace"),
        metrics[1].decode(errors="replace"),
        cmdline,
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    "where",
    [
        pytest.param("no-such-host.invalid:5672", id="host-does-not-resolve"),
        pytest.param("127.0.0.1:1", id="connection-refused"),
        pytest.param("127.0.0.1:5672", id="wrong-password", marks=pytest.mark.broker),
    ],
)
async def test_the_password_from_a_secret_file_is_never_shown(
    tmp_path: Path, isolated_config: Path, where: str, log_format: str
) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text(f"amqp://guest:{ENCODED}@{where}/?timeout=5\n")
    env = {"ROUTERD_AMQP_URL_FILE": str(secret), "ROUTERD_LOG_FORMAT": log_format}
    log, ready, metrics, cmdline = await _serve_until_it_failed_to_connect(
        tmp_path, isolated_config, env
    )
    _assert_no_password("the log", log)
    _assert_no_password("/readyz", ready)
    _assert_no_password("/metrics", metrics)
    _assert_no_password("argv", cmdline.decode(errors="replace"))
    assert "guest:***@" in log, "the URL is logged, redacted"
    assert f"file {secret} named by environment variable ROUTERD_AMQP_URL_FILE" in log


async def test_a_password_on_the_command_line_is_warned_about_and_still_redacted(
    tmp_path: Path, isolated_config: Path
) -> None:
    url = f"amqp://guest:{ENCODED}@127.0.0.1:1/?timeout=5"
    log, ready, metrics, _ = await _serve_until_it_failed_to_connect(
        tmp_path, isolated_config, {}, ["--amqp-url", url]
    )
    _assert_no_password("the log", log)
    _assert_no_password("/readyz", ready)
    _assert_no_password("/metrics", metrics)
    assert "WARNING routerd.daemon the broker password is on the command line" in log


async def test_both_the_url_and_its_file_stop_serve_with_a_clear_message(
    tmp_path: Path, isolated_config: Path
) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text(f"amqp://guest:{ENCODED}@127.0.0.1:5672/\n")
    env = {
        "ROUTERD_AMQP_URL_FILE": str(secret),
        "ROUTERD_AMQP_URL": f"amqp://guest:{ENCODED}@127.0.0.1:5672/",
    }
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*routerd_command(), "serve", "--config", str(isolated_config)],
            env=_env(env),
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "ROUTERD_AMQP_URL is set too; set only one of them" in err
    _assert_no_password("stderr", err + done.stdout.decode())


@pytest.mark.broker
async def test_send_reads_the_url_from_its_file(
    tmp_path: Path, isolated_config: Path, broker: Broker, names: QueueNames, amqp_url: str
) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text(amqp_url + "\n")
    for queue in names.sources:  # routerd send picks the source each request goes to
        await broker.declare_queue(queue)
    env = {"ROUTERD_AMQP_URL_FILE": str(secret)}
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [*routerd_command(), "send", "--config", str(isolated_config), "-n", "5"],
            env=_env(env),
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()

    async def in_the_sources() -> int:
        return sum((await broker.depths(names.sources)).values())

    await wait_for(in_the_sources, lambda d: d == 5, within=30, what="5 in the sources")
