"""Starting and stopping the daemon when something is wrong: config, HTTP address, broker."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import anyio
import pytest

from routerd.config.loader import load
from routerd.daemon import Daemon, ServeExit, serve_async
from routerd.settings import Settings

pytestmark = pytest.mark.anyio

UNREACHABLE = "amqp://guest:s3cret@127.0.0.1:1/"


def break_config(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace("target: bulk\n", "target: nowhere\n", 1))


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Messages and their structured fields: a password must be in neither."""
    return "\n".join(str(r.__dict__) for r in caplog.records)


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    while True:
        if text in everything_logged(caplog):
            return
        await anyio.sleep(0.02)


async def test_a_broken_config_stops_the_start_with_lint_output(isolated_config: Path) -> None:
    break_config(isolated_config)
    err = io.StringIO()
    code = await serve_async(Settings(config_path=isolated_config, http_port=0), err=err)
    assert code == ServeExit.STARTUP
    lines = err.getvalue().splitlines()
    assert lines[0].startswith(f"{isolated_config}:")
    assert ": error: " in lines[0] and "nowhere" in lines[0]
    assert "not starting" in lines[-1]


async def test_a_missing_config_stops_the_start(tmp_path: Path) -> None:
    err = io.StringIO()
    code = await serve_async(Settings(config_path=tmp_path / "nope.yaml", http_port=0), err=err)
    assert code == ServeExit.STARTUP
    assert "nope.yaml" in err.getvalue()


async def test_an_http_address_in_use_stops_the_start(isolated_config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = io.StringIO()
        settings = Settings(config_path=isolated_config, http_port=port, amqp_url=UNREACHABLE)
        with anyio.fail_after(10):
            code = await serve_async(settings, err=err)
    assert code == ServeExit.STARTUP
    assert "already in use" in err.getvalue()


async def test_without_a_broker_it_waits_unready_and_still_stops_at_once(
    isolated_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        config_path=isolated_config,
        amqp_url=UNREACHABLE,
        http_port=0,
        reconnect_min=0.05,
        reconnect_max=0.2,
    )
    daemon = Daemon(settings, load(isolated_config))
    codes: list[int] = []

    async def run() -> None:
        codes.append(await daemon.run(handle_signals=False))

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await logged(caplog, "cannot connect")
            assert daemon.health.table_loaded and not daemon.health.ready
            assert daemon.health.reasons() == [
                "not connected to the broker",
                "not consuming the source",
            ]
            daemon.shutdown()
    assert codes == [0]
    assert "s3cret" not in everything_logged(caplog)
    assert "guest:***@127.0.0.1:1" in everything_logged(caplog)
