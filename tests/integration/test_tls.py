"""AMQPS end to end: `routerd serve` (and `routerd send`) through a TLS endpoint the test
runs on loopback (tests/harness/tlsproxy.py) in front of the local broker.

The CA and certificates are made per test by trustme. What ops meet: the right CA works; a
wrong CA, a certificate for another host, a broker that wants a client certificate each
fail with a log line that says what to do, and /readyz stays 503; the name check can be
turned off on its own; a client certificate, when given, is presented.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import trustme

from tests.factories import encode, valid_v1
from tests.harness import ROOT, Broker, Daemon, QueueNames, routerd_command, wait_for
from tests.harness.broker import Outgoing
from tests.harness.daemon import running_daemon
from tests.harness.tlsproxy import TlsFiles, TlsProxy, issue, server_context, tls_proxy

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA, tmp_path: Path) -> TlsFiles:
    return issue(ca, tmp_path / "tls", "broker", "127.0.0.1", "localhost")


@pytest.fixture
async def proxy(server: TlsFiles) -> AsyncIterator[TlsProxy]:
    async with tls_proxy(server_context(server)) as running:
        yield running


def amqps(port: int, **query: str | Path) -> str:
    url = f"amqps://guest:guest@127.0.0.1:{port}/"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


async def routes_one_request(daemon: Daemon, broker: Broker, names: QueueNames) -> None:
    request = valid_v1(1, recipients=1, tags=[], stream="transactional")
    await broker.publish(names.source, [Outgoing(encode(request), {})])
    await wait_for(
        lambda: broker.depth(names.transactional),
        lambda d: d == 1,
        within=30,
        what="the request routed over TLS",
    )
    assert await daemon.stop(within=30) == 0


async def fails_saying(
    isolated_config: Path, url: str, log_dir: Path, *expected: str
) -> tuple[str, int | None]:
    """Start serve on `url`, wait for a failed connection's log line saying `expected[0]`;
    that line, /readyz."""
    async with running_daemon(isolated_config, url, log_dir, wait_ready=False) as daemon:
        pattern = rf"^.*broker session failed.*{re.escape(expected[0])}.*$"
        match = await daemon.wait_for_log(pattern, within=60)
        status = await daemon.ready_status()
        line = match.group(0)
        for text in expected:
            assert text in line, line
        return line, status


async def test_serve_routes_over_amqps_with_the_ca(
    proxy: TlsProxy,
    server: TlsFiles,
    broker: Broker,
    names: QueueNames,
    isolated_config: Path,
    log_dir: Path,
) -> None:
    url = amqps(proxy.port, cafile=server.ca)
    async with running_daemon(isolated_config, url, log_dir) as daemon:
        assert proxy.connections >= 1, "routerd's connection went through the TLS endpoint"
        assert "tls=True" in daemon.log_text()
        await routes_one_request(daemon, broker, names)


async def test_a_wrong_ca_fails_with_what_to_do(
    proxy: TlsProxy, tmp_path: Path, isolated_config: Path, log_dir: Path
) -> None:
    other = issue(trustme.CA(), tmp_path / "other", "other", "127.0.0.1")
    _, ready = await fails_saying(
        isolated_config,
        amqps(proxy.port, cafile=other.ca),
        log_dir,
        "the broker's certificate is not trusted",
        f"by cafile={other.ca}",
        "set cafile= in the URL to the CA that signed the broker's certificate",
    )
    assert ready == 503
    assert proxy.connections == 0


async def test_without_a_cafile_the_system_cas_are_used_and_named(
    proxy: TlsProxy, isolated_config: Path, log_dir: Path
) -> None:
    await fails_saying(
        isolated_config, amqps(proxy.port), log_dir, "not trusted", "by the system's CA store"
    )


async def test_a_certificate_for_another_host_fails_unless_the_name_check_is_off(
    ca: trustme.CA,
    tmp_path: Path,
    broker: Broker,
    names: QueueNames,
    isolated_config: Path,
    log_dir: Path,
) -> None:
    elsewhere = issue(ca, tmp_path / "tls", "elsewhere", "broker.example")
    async with tls_proxy(server_context(elsewhere)) as proxy:
        _, ready = await fails_saying(
            isolated_config,
            amqps(proxy.port, cafile=elsewhere.ca),
            log_dir,
            "the broker's certificate does not name 127.0.0.1",
            "verify_hostname=0",
        )
        assert ready == 503
        assert proxy.connections == 0
        # Turned off explicitly, the certificate is still verified against the CA.
        url = amqps(proxy.port, cafile=elsewhere.ca, verify_hostname=0)
        async with running_daemon(isolated_config, url, log_dir, name="no-name-check") as daemon:
            assert "verify_hostname=False" in daemon.log_text()
            await routes_one_request(daemon, broker, names)


async def test_a_client_certificate_is_presented_when_the_broker_requires_one(
    ca: trustme.CA,
    server: TlsFiles,
    tmp_path: Path,
    broker: Broker,
    names: QueueNames,
    isolated_config: Path,
    log_dir: Path,
) -> None:
    client = issue(ca, tmp_path / "tls", "routerd-client", "routerd@example.com")
    async with tls_proxy(server_context(server, client_ca=client.ca)) as proxy:
        await fails_saying(
            isolated_config,
            amqps(proxy.port, cafile=server.ca),
            log_dir,
            "the broker asks for a client certificate",
            "add certfile= and keyfile=",
        )
        url = amqps(proxy.port, cafile=server.ca, certfile=client.cert, keyfile=client.key)
        async with running_daemon(isolated_config, url, log_dir, name="with-cert") as daemon:
            await routes_one_request(daemon, broker, names)


async def test_send_publishes_over_amqps(
    proxy: TlsProxy, server: TlsFiles, broker: Broker, names: QueueNames, isolated_config: Path
) -> None:
    for queue in names.sources:  # routerd send picks the source each request goes to
        await broker.declare_queue(queue)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")}
    env["PYTHONPATH"] = str(ROOT)
    env["ROUTERD_AMQP_URL"] = amqps(proxy.port, cafile=server.ca)
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [*routerd_command(), "send", "--config", str(isolated_config), "-n", "3"],
            env=env,
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    assert proxy.connections >= 1

    async def in_the_sources() -> int:
        return sum((await broker.depths(names.sources)).values())

    await wait_for(in_the_sources, lambda d: d == 3, within=30, what="3 in the sources")
