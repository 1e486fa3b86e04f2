"""A tiny HTTP/1.1 endpoint for /metrics, /healthz and /readyz, on anyio sockets only.

It answers probes and scrapes, nothing else, so it closes every connection after one
response and bounds what any client can cost it: request size, time, connection count.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST

from routerd.observe.health import Health
from routerd.observe.metrics import Metrics

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT = 5.0  # a client gets this long to send its request line and headers
CONNECTION_TIMEOUT = 15.0  # and this long for the whole exchange, a slow reader included
MAX_CONNECTIONS = 64
TEXT = "text/plain; charset=utf-8"


class HTTPBindError(OSError):
    """The HTTP endpoint could not listen on its address; names the address and the fix."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.host = host
        self.port = port
        self.cause = cause

    def __str__(self) -> str:
        where = f"{self.host or '*'}:{self.port}"
        if self.cause.errno == errno.EADDRINUSE:
            return (
                f"cannot listen on {where} for /metrics, /healthz and /readyz: the address "
                "is already in use (another routerd?); choose another with --http-addr "
                "or ROUTERD_HTTP_ADDR"
            )
        return f"cannot listen on {where} for /metrics, /healthz and /readyz: {self.cause}"


@dataclass(frozen=True, slots=True)
class _Response:
    status: HTTPStatus
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Endpoint:
    metrics: Metrics
    health: Health
    active: int = field(default=0)

    async def accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors and the like: back off instead of spinning, and
                # keep serving once the pressure is gone.
                log.warning("http accept failed", extra={"error": str(exc)})
                await anyio.sleep(0.5)
                continue
            tg.start_soon(self.handle, stream)

    async def handle(self, stream: SocketStream) -> None:
        if self.active >= MAX_CONNECTIONS:
            await anyio.aclose_forcefully(stream)
            return
        self.active += 1
        try:
            async with stream:
                with anyio.move_on_after(CONNECTION_TIMEOUT):
                    await self._exchange(stream)
        except Exception as exc:
            # A client that hangs up or sends nonsense must never take the endpoint down.
            log.debug("http connection dropped", extra={"error": repr(exc)})
        finally:
            self.active -= 1

    async def _exchange(self, stream: SocketStream) -> None:
        head: bytes | None = None
        with anyio.move_on_after(HEAD_TIMEOUT):
            head = await _read_head(stream)
        if head is None:
            return
        method, response = self._route(head)
        await _send(stream, response, with_body=method != "HEAD")
        # Half-close and drain so the client reads our answer before the socket closes;
        # closing with unread request bytes would reset the connection under it.
        await stream.send_eof()
        with anyio.move_on_after(1.0):
            drained = 0
            try:
                while drained < MAX_HEAD_BYTES:
                    drained += len(await stream.receive(4096))
            except anyio.EndOfStream:
                pass

    def _route(self, head: bytes) -> tuple[str, _Response]:
        if len(head) > MAX_HEAD_BYTES:
            return "GET", _Response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"too large\n")
        request_line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        parts = request_line.split(" ")
        if (
            len(parts) != 3
            or not parts[0].isalpha()
            or not parts[0].isupper()
            or not parts[2].startswith("HTTP/1.")
        ):
            return "GET", _Response(HTTPStatus.BAD_REQUEST, b"bad request\n")
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            allow = (("Allow", "GET, HEAD"),)
            return "GET", _Response(HTTPStatus.METHOD_NOT_ALLOWED, b"use GET\n", headers=allow)
        try:
            path = urlsplit(target).path
        except ValueError:
            return "GET", _Response(HTTPStatus.BAD_REQUEST, b"bad request\n")
        return method, self._answer(path)

    def _answer(self, path: str) -> _Response:
        if path == "/metrics":
            return _Response(HTTPStatus.OK, self.metrics.render(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return _Response(HTTPStatus.OK, b"ok\n")
        if path == "/readyz":
            if self.health.ready:
                return _Response(HTTPStatus.OK, b"ready\n")
            body = "not ready: " + ", ".join(self.health.reasons()) + "\n"
            return _Response(HTTPStatus.SERVICE_UNAVAILABLE, body.encode())
        return _Response(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz, /readyz\n")


async def _read_head(stream: SocketStream) -> bytes:
    """The request line and headers, or as much as arrived when the size bound was passed."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) > MAX_HEAD_BYTES:
            break
        try:
            buf += await stream.receive(4096)
        except anyio.EndOfStream:
            # Some clients (and netcat) half-close after a bare request line.
            break
    return bytes(buf)


async def _send(stream: SocketStream, response: _Response, *, with_body: bool) -> None:
    lines = [
        f"HTTP/1.1 {response.status.value} {response.status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    await stream.send(head + response.body if with_body else head)


async def serve_http(
    host: str,
    port: int,
    metrics: Metrics,
    health: Health,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /metrics, /healthz and /readyz until cancelled.

    Reports the bound port through `task_status.started(port)`, so `port=0` works for
    tests; an empty host listens on every interface. Raises `HTTPBindError` when it
    cannot listen.
    """
    try:
        listener = await anyio.create_tcp_listener(local_host=host or None, local_port=port)
    except OSError as exc:
        raise HTTPBindError(host, port, exc) from exc
    bound: int = listener.extra(SocketAttribute.local_port)
    endpoint = _Endpoint(metrics, health)
    async with listener, anyio.create_task_group() as tg:
        for sub in listener.listeners:
            assert isinstance(sub, SocketListener)
            tg.start_soon(endpoint.accept_loop, sub, tg)
        log.info("http endpoint listening", extra={"addr": f"{host or '*'}:{bound}"})
        task_status.started(bound)
