"""A TCP fault proxy on loopback in front of the broker: the network faults routerd must survive.

Modes, switched at any moment while connections are carried:

- `PASS`: bytes flow both ways untouched.
- `BLACK_HOLE`: bytes are accepted from both sides and dropped; nothing is answered, no FIN,
  no RST, as a dead NAT entry or a partitioned network behaves. Only heartbeats and
  timeouts can tell. New connections are accepted and black-holed too.
- `SLOW`: every chunk is held `delay` seconds and the bytes per second are capped.

`cut()` closes both sides of every connection carried so far (a broker or load balancer
that went away); new connections pass as the mode says. Nothing here knows AMQP.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


class Mode(enum.Enum):
    PASS = "pass"
    BLACK_HOLE = "black hole"
    SLOW = "slow"


@dataclass
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Forwards 127.0.0.1:`port` to the upstream address, faulting as `mode` says."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5672,
        *,
        delay: float = 0.2,
        bytes_per_second: int = 64 * 1024,
    ) -> None:
        self.upstream = (host, port)
        self.mode = Mode.PASS
        self.delay = delay
        self.bytes_per_second = bytes_per_second
        self.port = 0
        self.accepted = 0
        self.dropped_bytes = 0
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        tasks = [task for link in self._links for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def url(self, amqp_url: str, query: str = "") -> str:
        """`amqp_url` by way of this proxy, its query replaced by `query`."""
        parts = urlsplit(amqp_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{userinfo}@{netloc}" if userinfo else netloc, query=query)
        )

    def set(self, mode: Mode) -> None:
        self.mode = mode

    def cut(self) -> int:
        """Close both sides of every connection carried so far; returns how many."""
        links, self._links = self._links, []
        for link in links:
            for writer in (link.client, link.upstream):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        return len(links)

    @property
    def open_connections(self) -> int:
        return sum(1 for link in self._links if not link.client.transport.is_closing())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                mode = self.mode
                if mode is Mode.BLACK_HOLE:
                    self.dropped_bytes += len(data)
                    continue
                if mode is Mode.SLOW:
                    # Hold the chunk, then let it through no faster than the byte rate.
                    await asyncio.sleep(self.delay + len(data) / self.bytes_per_second)
                sink.write(data)
                await sink.drain()
        # One side ended. A black hole never tells the other side; otherwise pass the end on.
        if self.mode is not Mode.BLACK_HOLE:
            for writer in (link.client, link.upstream):
                with contextlib.suppress(Exception):
                    writer.transport.abort()


@asynccontextmanager
async def fault_proxy(
    amqp_url: str, *, delay: float = 0.2, bytes_per_second: int = 64 * 1024
) -> AsyncIterator[FaultProxy]:
    """A started proxy in front of `amqp_url`'s host and port, closed at the end."""
    parts = urlsplit(amqp_url)
    proxy = FaultProxy(
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
        delay=delay,
        bytes_per_second=bytes_per_second,
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
