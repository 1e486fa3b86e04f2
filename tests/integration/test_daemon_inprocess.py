"""The daemon run in-process against the real broker: routing, rejects, bounds, stop, reconnect.

Each test has its own queues and exchanges (`isolated_config`), deleted afterwards by the
`broker` fixture. Waits poll a condition under `fail_after`; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiormq
import anyio
import pytest

from routerd.config.loader import load
from routerd.daemon import Daemon
from routerd.settings import Settings
from tests.factories import encode, mixed, valid_v1
from tests.harness.accounting import Accounting, QueueNames, SteadyPublisher, drain_all
from tests.harness.broker import Broker
from tests.harness.config import dump_config, read_config, source_entries
from tests.harness.connections import tcp_local_ports

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def until(check: Callable[[], Awaitable[bool] | bool], *, within: float, what: str) -> None:
    """Poll `check` until true; fail naming `what` after `within` seconds."""
    try:
        with anyio.fail_after(within):
            while True:
                result = check()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.exit_code: int | None = None
        self.exited = anyio.Event()

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0

    async def stop(self, within: float = 30.0) -> int:
        self.daemon.shutdown()
        with anyio.fail_after(within):
            await self.exited.wait()
        assert self.exit_code is not None
        return self.exit_code


@asynccontextmanager
async def running(config: Path, amqp_url: str, **overrides: Any) -> AsyncIterator[Running]:
    """A ready in-process daemon; stopped gracefully at the end if the test did not."""
    options: dict[str, Any] = {
        "config_path": config,
        "amqp_url": amqp_url,
        "http_port": 0,
        "shutdown_timeout": 15.0,
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        **overrides,
    }
    daemon = Daemon(Settings(**options), load(config))
    run = Running(daemon)

    async def serve() -> None:
        try:
            run.exit_code = await daemon.run(handle_signals=False)
        finally:
            run.exited.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        await until(lambda: daemon.health.ready, within=20, what="the daemon to be ready")
        try:
            yield run
        finally:
            if not run.exited.is_set():
                await run.stop()


async def depth_sum(broker: Broker, queues: tuple[str, ...]) -> int:
    return sum((await broker.depths(queues)).values())


def edit_config(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = read_config(path)
    change(data)
    path.write_text(dump_config(data))


async def test_requests_are_routed_exactly_once_with_headers(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str
) -> None:
    published = mixed(400, seed=3)
    async with running(isolated_config, amqp_url) as run:
        await broker.publish(names.source, [body for _, body in published])
        await until(
            lambda: depth_sum_equals(broker, names.targets, len(published)),
            within=60,
            what=f"{len(published)} requests in the target queues",
        )
        assert await run.stop() == 0
    assert run.metric("routerd_requests_consumed_total") == len(published)
    assert run.metric("routerd_source_acks_total") == len(published)
    assert await broker.depth(names.source) == 0

    received = await drain_all(broker, names)
    accounting = Accounting.of(published, received, names)
    assert accounting.exact, accounting.describe()
    for message in received:
        assert message.delivery_mode == 2, "decisions are published persistent"
        if message.queue == names.rejected:
            assert message.headers["x-rejected-reason"]
            assert message.headers["x-rejected-reasons"][0]["code"]
        else:
            assert message.headers["x-category"] == names.category_of(message.queue)
            assert message.headers["x-rule"]
            assert str(message.headers["x-schema-version"]) in ("1", "2")
            assert "x-delivery-count" not in message.headers


async def depth_sum_equals(broker: Broker, queues: tuple[str, ...], n: int) -> bool:
    return await depth_sum(broker, queues) == n


async def test_an_unroutable_target_ends_in_rejected(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str, unique: str
) -> None:
    orphan = f"orphan.{unique}"

    def no_queue_for_transactional(data: dict[str, Any]) -> None:
        # An exchange of its own with nothing bound: every publish to it comes back.
        data["targets"]["transactional"]["exchange"] = orphan
        data["targets"]["transactional"]["queues"] = []

    edit_config(isolated_config, no_queue_for_transactional)
    broker.track(exchanges=[orphan])
    body = encode(valid_v1(7, tags=["password-reset"]))
    async with running(isolated_config, amqp_url) as run:
        await broker.publish(names.source, [body])
        await until(
            lambda: depth_sum_equals(broker, (names.rejected,), 1),
            within=20,
            what="the request in rejected",
        )
        assert await run.stop() == 0
    [message] = await broker.drain(names.rejected)
    assert message.body == body
    assert message.headers["x-rejected-reason"] == "unroutable"
    assert "transactional" in message.headers["x-rejected-reasons"][0]["message"]
    assert message.delivery_mode == 2
    assert run.metric("routerd_requests_rejected_total", reason="unroutable") == 1
    assert await broker.depth(names.source) == 0


@pytest.mark.parametrize("source_type", ["quorum", "classic"])
async def test_a_publish_that_keeps_failing_is_bounded(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str, source_type: str
) -> None:
    limit = 2

    def refusing_transactional_queue(data: dict[str, Any]) -> None:
        for source in source_entries(data):
            source["type"] = source_type
            source["max_redeliveries"] = limit
        # A queue that takes nothing: the broker nacks every publish routed to it.
        queue = data["targets"]["transactional"]["queues"][0]
        queue["type"] = "classic"
        queue["arguments"] = {"x-max-length": 0, "x-overflow": "reject-publish"}

    edit_config(isolated_config, refusing_transactional_queue)
    body = encode(valid_v1(11, tags=["2fa"]))
    async with running(isolated_config, amqp_url) as run:
        await broker.publish(names.source, [body])
        await until(
            lambda: depth_sum_equals(broker, (names.rejected,), 1),
            within=30,
            what="the request in rejected",
        )
        assert await run.stop() == 0
    [message] = await broker.drain(names.rejected)
    assert message.body == body
    assert message.headers["x-rejected-reason"] == "redelivery_limit"
    failures = run.metric("routerd_publish_failures_total", target="transactional", cause="nack")
    assert failures == limit + 1, "one try per delivery: the first and `limit` redeliveries"
    assert run.metric("routerd_source_nacks_total") == limit
    assert await broker.depth(names.source) == 0
    assert await broker.depth(names.transactional) == 0


async def test_a_graceful_stop_under_load_loses_and_duplicates_nothing(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str
) -> None:
    published = mixed(3000, seed=5)
    bodies = [body for _, body in published]
    async with running(isolated_config, amqp_url) as run, anyio.create_task_group() as tg:
        tg.start_soon(broker.publish, names.source, bodies)
        await until(
            lambda: run.metric("routerd_source_acks_total") >= 300,
            within=60,
            what="300 requests routed",
        )
        assert await run.stop() == 0
    assert run.metric("routerd_in_flight_requests") == 0
    received = await drain_all(broker, names)
    left = await broker.drain(names.source)
    assert len(received) >= 300
    assert all(m.headers.get("x-category") or m.headers.get("x-rejected-reason") for m in received)
    assert not any(m.headers.get("x-category") for m in left), "the source holds only originals"
    everything = Counter(m.body for m in [*received, *left])
    assert everything == Counter(bodies), "each request exactly once: routed or still queued"
    categories: dict[bytes, set[str]] = {}
    for category, body in published:
        categories.setdefault(body, set()).add(category)
    misrouted = [m for m in received if names.category_of(m.queue) not in categories[m.body]]
    assert not misrouted, f"{len(misrouted)} misrouted, e.g. {misrouted[0]}"


async def test_a_lost_connection_is_reestablished_and_nothing_is_lost(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str
) -> None:
    ours = tcp_local_ports(os.getpid(), 5672)
    async with running(isolated_config, amqp_url) as run:
        daemon_ports = tcp_local_ports(os.getpid(), 5672) - ours
        assert daemon_ports, "the daemon's connection is visible"
        publisher = SteadyPublisher(
            broker, names.source, lambda i: encode(valid_v1(i, recipients=1)), rate=400
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            await until(
                lambda: run.metric("routerd_source_acks_total") >= 100,
                within=30,
                what="100 requests routed",
            )
            closed = await close_by_ports(daemon_ports)
            assert closed == 1
            await until(
                lambda: run.metric("routerd_reconnects_total") >= 1 and run.daemon.health.ready,
                within=30,
                what="a reconnect",
            )
            mark = run.metric("routerd_source_acks_total")
            await until(
                lambda: run.metric("routerd_source_acks_total") >= mark + 100,
                within=30,
                what="routing after the reconnect",
            )
            sent = await publisher.stop()
        await until(
            lambda: source_empty_and_targets_hold(broker, names, sent),
            within=60,
            what=f"{sent} requests routed",
        )
        assert await run.stop() == 0
    assert run.metric("routerd_in_flight_requests") == 0
    received = await drain_all(broker, names)
    found = Counter(m.body for m in received)
    lost = Counter(publisher.sent) - found
    assert not lost, f"{sum(lost.values())} requests lost across the reconnect"


async def test_a_lost_publisher_channel_restarts_the_session_and_redeclares(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str
) -> None:
    exchange = read_config(isolated_config)["targets"]["transactional"]["exchange"]
    bodies = [encode(valid_v1(i, recipients=1, tags=["2fa"])) for i in range(50)]
    async with running(isolated_config, amqp_url) as run:
        # Publishing to a deleted exchange closes the publisher channel (404 NOT_FOUND);
        # the consumer channel stays open but its session must end and start again.
        await delete_exchange(amqp_url, exchange)
        await broker.publish(names.source, bodies)
        await until(
            lambda: depth_sum_equals(broker, (names.transactional,), len(bodies)),
            within=30,
            what="every request routed after the redeclare",
        )
        assert run.metric("routerd_reconnects_total") >= 1
        assert (
            run.metric("routerd_publish_failures_total", target="transactional", cause="nack") == 0
        )
        assert await run.stop() == 0
    received = await broker.drain(names.transactional)
    assert Counter(m.body for m in received) == Counter(bodies)
    assert await broker.depth(names.rejected) == 0, "a lost channel is not the request's fault"


async def delete_exchange(amqp_url: str, name: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)


async def source_empty_and_targets_hold(broker: Broker, names: QueueNames, sent: int) -> bool:
    return await broker.depth(names.source) == 0 and await depth_sum(broker, names.targets) >= sent


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


async def close_by_ports(ports: set[int]) -> int:
    # harness.close_connections_of closes a whole process's connections; this process
    # also holds the test's own, so close only the daemon's ports.
    listing = await anyio.to_thread.run_sync(
        rabbitmqctl, "list_connections", "--no-table-headers", "pid", "peer_port"
    )
    closed = 0
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip().isdigit() and int(parts[1]) in ports:
            await anyio.to_thread.run_sync(rabbitmqctl, "close_connection", parts[0], "test")
            closed += 1
    return closed


async def test_a_reload_declares_new_targets_before_routing_to_them(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str, unique: str
) -> None:
    security = f"email.security.{unique}"
    broker.track(queues=[security])
    body = encode(valid_v1(21, tags=["2fa"]))
    async with running(isolated_config, amqp_url) as run:

        def security_target(data: dict[str, Any]) -> None:
            exchange = data["targets"]["transactional"]["exchange"]
            data["targets"]["security"] = {
                "exchange": exchange,
                "type": "topic",
                "routing_key": "security",
                "queues": [{"name": security, "type": "quorum", "binding_key": "security"}],
            }
            for rule in data["rules"]:
                if rule["name"] == "security-codes":
                    rule["target"] = "security"

        edit_config(isolated_config, security_target)
        assert await run.daemon.reloader.reload("test") is True
        assert run.daemon.holder.generation == 2
        assert await broker.depth(security) == 0, "declared before the swap"
        await broker.publish(names.source, [body])
        await until(
            lambda: depth_sum_equals(broker, (security,), 1),
            within=20,
            what="the request in the new target",
        )
        assert await run.stop() == 0
    [message] = await broker.drain(security)
    assert message.body == body
    assert message.headers["x-rule"] == "security-codes"


async def test_a_reload_the_broker_refuses_keeps_the_running_table(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str, unique: str
) -> None:
    taken = f"email.taken.{unique}"
    await broker.declare_queue(taken, quorum=True)
    async with running(isolated_config, amqp_url) as run:

        def conflicting_queue(data: dict[str, Any]) -> None:
            # The queue exists durable; declaring it transient is refused (406).
            data["targets"]["transactional"]["queues"].append(
                {"name": taken, "type": "quorum", "durable": False, "binding_key": "x"}
            )

        edit_config(isolated_config, conflicting_queue)
        assert await run.daemon.reloader.reload("test") is False
        assert run.daemon.holder.generation == 1
        assert run.daemon.health.ready, "a refused declaration does not touch the session"
        body = encode(valid_v1(5, tags=["2fa"]))
        await broker.publish(names.source, [body])
        await until(
            lambda: depth_sum_equals(broker, (names.transactional,), 1),
            within=20,
            what="routing with the running table",
        )
        assert await run.stop() == 0


async def test_each_source_has_its_own_redelivery_bound(
    broker: Broker, isolated_config: Path, names: QueueNames, amqp_url: str
) -> None:
    first, last = names.sources

    def bounds(data: dict[str, Any]) -> None:
        for source, limit in zip(source_entries(data), (1, 3), strict=True):
            source["max_redeliveries"] = limit
        queue = data["targets"]["transactional"]["queues"][0]
        queue["type"] = "classic"
        queue["arguments"] = {"x-max-length": 0, "x-overflow": "reject-publish"}

    edit_config(isolated_config, bounds)
    async with running(isolated_config, amqp_url) as run:
        # The same request, once through each source.
        await broker.publish(first, [encode(valid_v1(12, tags=["2fa"]))])
        await broker.publish(last, [encode(valid_v1(13, tags=["2fa"]))])
        await until(
            lambda: depth_sum_equals(broker, (names.rejected,), 2),
            within=30,
            what="both requests in rejected",
        )
        assert await run.stop() == 0
    failures = run.metric("routerd_publish_failures_total", target="transactional", cause="nack")
    assert failures == (1 + 1) + (3 + 1), "each source's own max_redeliveries"
