"""A TLS endpoint in front of the local broker, run by the tests themselves on loopback.

RabbitMQ in the test environment listens in plain AMQP only; a broker's TLS listener does
nothing but terminate TLS and speak AMQP inside it, so a proxy that terminates TLS with a
test CA's certificate and relays the bytes to 127.0.0.1:5672 is, to routerd, an amqps://
broker. Certificates come from `trustme` (a CA, server and client certificates in memory,
written to files as ops would mount them).

`connections` counts the connections whose TLS handshake succeeded, so a test can tell that
routerd's traffic went through TLS and not around it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import trustme

UPSTREAM = ("127.0.0.1", 5672)


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a certificate it signed, as PEM files: what a URL's cafile/certfile/keyfile
    name, and what the proxy serves."""

    ca: Path
    cert: Path
    key: Path


def issue(ca: trustme.CA, folder: Path, name: str, *identities: str) -> TlsFiles:
    """Write `ca`'s certificate and a certificate for `identities` (host names, IPs) with its
    key into `folder`, named after `name`."""
    folder.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*identities)
    files = TlsFiles(folder / f"{name}-ca.pem", folder / f"{name}.pem", folder / f"{name}.key")
    ca.cert_pem.write_to_path(str(files.ca))
    with files.cert.open("wb") as out:
        for pem in leaf.cert_chain_pems:
            out.write(pem.bytes())
    leaf.private_key_pem.write_to_path(str(files.key))
    return files


def server_context(server: TlsFiles, client_ca: Path | None = None) -> ssl.SSLContext:
    """The proxy's side: its certificate; with `client_ca`, a client certificate signed by
    that CA is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


class TlsProxy:
    """Threads, blocking sockets and OpenSSL's own handshake: a refused handshake sends its
    alert (certificate required, unknown CA) as a broker's TLS listener does, which asyncio's
    TLS server drops. It runs beside the test's event loop, never blocked by it."""

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int] = UPSTREAM) -> None:
        self.context = context
        self.upstream = upstream
        self.connections = 0
        self.failed_handshakes: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._spawn(self._accept_loop)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, raw)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        tls = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.failed_handshakes.append(str(exc))
            _close_gently(tls)
            return
        try:
            up = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            tls.close()
            return
        self.connections += 1
        with self._lock:
            self._open.update((tls, up))
        try:
            _relay(tls, up, self._closed)
        finally:
            with self._lock:
                self._open.difference_update((tls, up))
            for sock in (tls, up):
                with contextlib.suppress(OSError):
                    sock.close()


def _close_gently(tls: ssl.SSLSocket) -> None:
    """Close after the alert went out, reading what the client still sends: closing with
    unread bytes makes the kernel send a reset, which can overtake the alert."""
    with contextlib.suppress(OSError):
        # SSLSocket.shutdown drops the TLS layer: what follows is plain socket I/O.
        tls.shutdown(socket.SHUT_WR)
        tls.settimeout(2)
        while tls.recv(65536):
            pass
    tls.close()


def _relay(tls: ssl.SSLSocket, up: socket.socket, closed: threading.Event) -> None:
    """Copy bytes both ways until either side closes (one thread: an SSL socket must not be
    read and written from two threads at once)."""
    tls.settimeout(None)
    up.settimeout(None)
    while not closed.is_set():
        readable, _, _ = select.select([tls, up], [], [], 0.2)
        try:
            if tls in readable or tls.pending():
                data = tls.recv(65536)
                while data and tls.pending():
                    data += tls.recv(tls.pending())
                if not data:
                    return
                up.sendall(data)
            if up in readable:
                data = up.recv(65536)
                if not data:
                    return
                tls.sendall(data)
        except (OSError, ssl.SSLError):
            return


@contextlib.asynccontextmanager
async def tls_proxy(context: ssl.SSLContext) -> AsyncIterator[TlsProxy]:
    """A started proxy on 127.0.0.1 (its `port`), closed with every relayed connection."""
    proxy = TlsProxy(context)
    proxy.start()
    try:
        yield proxy
    finally:
        await anyio.to_thread.run_sync(proxy.close)
