"""serve_http on a real socket: scrapes, probes, and clients that misbehave."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

import routerd.observe.http as http
from routerd.observe import Health, HTTPBindError, Metrics, serve_http

pytestmark = pytest.mark.anyio


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[int, Metrics, Health]]:
    metrics, health = Metrics(), Health()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "127.0.0.1", 0, metrics, health)
        yield port, metrics, health
        tg.cancel_scope.cancel()


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert status_line.startswith("HTTP/1.1 ")
    assert int(headers["Content-Length"]) == len(body) or request.startswith(b"HEAD")
    return int(status_line.split()[1]), headers, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


async def test_metrics_are_served_in_prometheus_text(
    endpoint: tuple[int, Metrics, Health],
) -> None:
    port, metrics, _ = endpoint
    metrics.consumed.inc(7)
    status, headers, body = await exchange(port, get("/metrics"))
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert b"routerd_requests_consumed_total 7.0" in body
    status, _, _ = await exchange(port, get("/metrics?name[]=x"))
    assert status == 200


async def test_healthz_is_ok_while_alive(endpoint: tuple[int, Metrics, Health]) -> None:
    status, _, body = await exchange(endpoint[0], get("/healthz"))
    assert (status, body) == (200, b"ok\n")


async def test_readyz_follows_health(endpoint: tuple[int, Metrics, Health]) -> None:
    port, _, health = endpoint
    status, _, body = await exchange(port, get("/readyz"))
    assert status == 503
    assert body == (
        b"not ready: no route table loaded, not connected to the broker, not consuming the source\n"
    )
    health.connected = health.consuming = health.table_loaded = True
    status, _, body = await exchange(port, get("/readyz"))
    assert (status, body) == (200, b"ready\n")
    health.connected = False
    status, _, body = await exchange(port, get("/readyz"))
    assert (status, body) == (503, b"not ready: not connected to the broker\n")


async def test_unknown_path_and_method(endpoint: tuple[int, Metrics, Health]) -> None:
    port = endpoint[0]
    assert (await exchange(port, get("/nope")))[0] == 404
    status, headers, _ = await exchange(
        port, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    status, headers, body = await exchange(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert (status, headers["Content-Length"], body) == (200, "3", b"")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"\r\n\r\n",
    ],
)
async def test_garbage_gets_400_and_the_server_lives_on(
    endpoint: tuple[int, Metrics, Health], garbage: bytes
) -> None:
    port = endpoint[0]
    assert (await exchange(port, garbage))[0] == 400
    assert (await exchange(port, get("/healthz")))[0] == 200


async def test_oversized_request_is_refused(endpoint: tuple[int, Metrics, Health]) -> None:
    port = endpoint[0]
    huge = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * (http.MAX_HEAD_BYTES * 2) + b"\r\n\r\n"
    assert (await exchange(port, huge))[0] == 431
    assert (await exchange(port, get("/healthz")))[0] == 200


async def test_silent_and_vanishing_clients_do_not_block_others(
    endpoint: tuple[int, Metrics, Health], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = endpoint[0]
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.2)
    silent = await anyio.connect_tcp("127.0.0.1", port)
    half = await anyio.connect_tcp("127.0.0.1", port)
    await half.send(b"GET /metr")
    gone = await anyio.connect_tcp("127.0.0.1", port)
    await gone.aclose()
    try:
        assert (await exchange(port, get("/healthz")))[0] == 200
        with anyio.fail_after(5):
            # The server gives up on the silent client and closes its side.
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await silent.receive()
    finally:
        await silent.aclose()
        await half.aclose()


async def test_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HTTPBindError) as info:
            await serve_http("127.0.0.1", port, Metrics(), Health())
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "already in use" in str(info.value)
    assert "--http-addr" in str(info.value)


async def test_connections_beyond_the_bound_are_closed_until_a_slot_frees(
    endpoint: tuple[int, Metrics, Health], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = endpoint[0]
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.3)
    async with await anyio.connect_tcp("127.0.0.1", port):
        # The silent client holds the only slot until the head timeout drops it.
        refused = 0
        with anyio.fail_after(5):
            while True:
                try:
                    status = (await exchange(port, get("/healthz")))[0]
                except (ValueError, AssertionError, KeyError):
                    refused += 1  # closed without an answer: no free slot yet
                    continue
                break
        assert refused > 0
        assert status == 200
