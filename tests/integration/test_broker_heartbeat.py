"""A black-holed broker connection (bytes accepted, nothing answered) is found by the heartbeat.

Between routerd and the real broker sits a TCP proxy that can stop passing bytes on the
connections it carries while still accepting them, as a dead NAT entry or a partitioned
network does: no FIN, no RST, just silence. Only the heartbeat can tell; with aiormq's
default of 60 s that takes minutes, so the options always state one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest

from routerd.amqp.connection import connect
from routerd.amqp.options import BrokerOptions
from tests.factories import mixed
from tests.harness.accounting import Accounting, QueueNames, drain_all
from tests.harness.broker import Broker
from tests.integration.test_daemon_inprocess import depth_sum, running, until

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# aiormq closes a connection that received nothing for 3 x (heartbeat + 1) seconds.
HEARTBEAT = 1
GRACE = 3 * (HEARTBEAT + 1)


class BlackHoleProxy:
    """Forwards TCP to the broker until `black_hole()`, then swallows what it is sent."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.carried = 0
        self._holed: set[int] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def black_hole(self) -> None:
        """Silence every connection carried so far; later ones pass normally."""
        self._holed.update(range(self.carried))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.carried
        self.carried += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(number, source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, number: int, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if number not in self._holed:
                    sink.write(data)
                    await sink.drain()


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[BlackHoleProxy]:
    parts = urlsplit(amqp_url)
    async with BlackHoleProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as p:
        yield p


def through(proxy: BlackHoleProxy, amqp_url: str, query: str = f"heartbeat={HEARTBEAT}") -> str:
    """The broker URL by way of the proxy, with a short heartbeat in its query."""
    parts = urlsplit(amqp_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def test_a_black_holed_connection_closes_within_the_heartbeat_grace(
    proxy: BlackHoleProxy, amqp_url: str
) -> None:
    # The heartbeat set on the options object alone (not in the URL) is what aiormq uses.
    options = BrokerOptions(through(proxy, amqp_url, query=""), heartbeat=HEARTBEAT)
    connection = await connect(options)
    try:
        assert connection.connection_tune.heartbeat == HEARTBEAT
        await connection.channel()
        proxy.black_hole()
        started = time.monotonic()
        with anyio.fail_after(GRACE + 10):
            # asyncio.wait, not await: the close reason can be CancelledError itself.
            await asyncio.wait({connection.closing})
        assert connection.is_closed
        assert time.monotonic() - started < GRACE + 3
    finally:
        await connection.close()


async def test_the_daemon_notices_a_black_hole_and_routes_on_without_loss(
    proxy: BlackHoleProxy,
    amqp_url: str,
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
) -> None:
    requests = mixed(200, seed=21)
    first, during = requests[:100], requests[100:]
    async with running(isolated_config, through(proxy, amqp_url)) as run:
        await broker.publish(names.source, [body for _, body in first])
        await until(
            lambda: routed_at_least(broker, names, len(first)),
            within=30,
            what="the first requests routed",
        )
        proxy.black_hole()
        # Sent while the hole lasts: the broker pushes some into the silent connection and
        # must get them back once it gives up on it.
        await broker.publish(names.source, [body for _, body in during])
        await until(
            lambda: run.metric("routerd_reconnects_total") >= 1,
            within=GRACE + 20,
            what="a reconnect after the black hole",
        )
        await until(
            lambda: routed_at_least(broker, names, len(requests)),
            within=60,
            what="every request routed",
        )
        assert await run.stop() == 0
    assert await broker.depth(names.source) == 0
    accounting = Accounting.of(requests, await drain_all(broker, names), names)
    assert not accounting.lost(), accounting.describe()
    assert not accounting.misrouted(), accounting.describe()


async def routed_at_least(broker: Broker, names: QueueNames, count: int) -> bool:
    # At-least-once: a request in flight when the connection went silent may arrive twice.
    return await depth_sum(broker, names.targets) >= count
