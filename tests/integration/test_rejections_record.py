"""`routerd rejections record` end to end, against SQLite and the real PostgreSQL server.

Black box: invalid send requests go through a real `routerd serve` to the rejected queue;
a real recorder subprocess consumes it into the database; the test counts rows by their
idempotency key. The recorder is killed with SIGKILL mid-stream, and (PostgreSQL) its
database connection is cut through a TCP proxy the test runs, then restored.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio
import asyncpg
import jsonschema
import pytest
import yaml
from anyio.abc import SocketStream, TaskGroup, TaskStatus

from routerd.rejections.record import rejection_json
from routerd.rejections.store import Query, RejectionStore
from tests.conftest import ROOT
from tests.factories import encode, invalid_v1, undecodable
from tests.harness import (
    Broker,
    Outgoing,
    QueueNames,
    close_connections_of,
    running_daemon,
    wait_for,
)
from tests.harness.daemon import Daemon, free_port, metric_sum, spawn

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

PG_ADMIN_URL = os.environ.get("ROUTERD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_HOST, PG_PORT = "127.0.0.1", 5432
REJECTION_SCHEMA = yaml.safe_load((ROOT / "schemas" / "rejections" / "rejection.json").read_text())


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A database of its own on the shared server (`rej_<uuid>`), dropped at the end."""
    name = f"rej_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        with anyio.move_on_after(30, shield=True):
            admin = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


def pg_url(database: str, port: int = PG_PORT) -> str:
    return f"postgresql://postgres@{PG_HOST}:{port}/{database}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The recorder's database URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rejections.sqlite3'}"
        return
    async with postgres_database() as name:
        yield pg_url(name)


def start_recorder(
    config: Path, amqp_url: str, db: str, log_dir: Path, *, extra_args: Sequence[str] = ()
) -> Daemon:
    """`routerd rejections record` as a subprocess, observed like `routerd serve`."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    args = ["rejections", "record", "--config", str(config), "--amqp-url", amqp_url]
    args += ["--db", db, "--http-addr", f"127.0.0.1:{port}", "--reconnect-max", "1", *extra_args]
    log_path = log_dir / f"recorder-{port}.log"
    return spawn(args, port=port, config=config, log_path=log_path, append=True)


@asynccontextmanager
async def running_recorder(
    config: Path,
    amqp_url: str,
    db: str,
    log_dir: Path,
    *,
    wait_ready: bool = True,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Daemon]:
    recorder = start_recorder(config, amqp_url, db, log_dir, extra_args=extra_args)
    try:
        if wait_ready:
            await recorder.wait_ready(30)
        yield recorder
    finally:
        recorder.kill()
        print(f"--- recorder (pid {recorder.pid}, exit {recorder.returncode}) log tail ---")
        print(recorder.log_tail(60))


def invalid_requests(n: int, tag: str) -> tuple[list[Outgoing], set[str]]:
    """`n` send requests serve must reject, each with its message_id, and their keys.

    Every message_id is set: aiormq gives a mandatory publish without one a fresh id of its
    own, so the test could not know the key (a body's hash is the key only for a message
    published without one; tests/unit/test_rejections.py covers that).
    """
    items: list[Outgoing] = []
    keys: set[str] = set()
    for i in range(n):
        request = invalid_v1(i)
        request["customer_id"] = f"cus-{i % 7}"
        body = encode(request) if i % 5 else undecodable(i)
        message_id = f"{tag}-{i}"
        keys.add(f"id:{message_id}")
        properties = {"message_id": message_id, "content_type": "application/json"}
        items.append(Outgoing(body, properties=properties))
    return items, keys


async def rows(db: str) -> list[str]:
    store = RejectionStore.open(db)
    try:
        return await store.keys() if await store.version() else []
    finally:
        await store.close()


async def row_count(db: str) -> int:
    return len(await rows(db))


async def wait_rows(db: str, count: int, within: float) -> None:
    await wait_for(lambda: row_count(db), lambda c: c >= count, within=within, what=f"{count} rows")


async def test_n_invalid_requests_through_serve_end_as_exactly_n_rows(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
    db_url: str,
) -> None:
    n = 300
    items, keys = invalid_requests(n, uuid.uuid4().hex[:8])
    with anyio.fail_after(120):
        async with (
            running_daemon(isolated_config, amqp_url, log_dir),
            running_recorder(isolated_config, amqp_url, db_url, log_dir) as recorder,
        ):
            await broker.publish(names.source, items)
            await wait_rows(db_url, n, within=60)
            await wait_for(
                lambda: broker.depth(names.rejected), lambda d: d == 0, within=20, what="empty"
            )
            metrics = await recorder.metrics()
            assert await recorder.stop() == 0
        found = await rows(db_url)
        assert len(found) == n and set(found) == keys
        assert metric_sum(metrics, "routerd_rejections_recorded_total") == n
        # Every row in the shape the contract states, with what serve put in the headers.
        store = RejectionStore.open(db_url)
        try:
            stored = await store.find(Query(limit=n))
            by_customer = await store.find(Query(customer_id="cus-3", limit=n))
            too_many = await store.find(Query(reason="too_many_errors", limit=n))
        finally:
            await store.close()
    for row in stored:
        jsonschema.validate(rejection_json(row.rejection, row.id), REJECTION_SCHEMA)
    decodable = [r.rejection for r in stored if int(r.rejection.message_id.split("-")[-1]) % 5]
    assert decodable and all(r.reasons[0]["code"] == "schema_violation" for r in decodable)
    assert all(r.schema_version == "1" for r in decodable)
    assert {r.rejection.customer_id for r in by_customer} == {"cus-3"}
    assert len(by_customer) == sum(1 for r in decodable if r.customer_id == "cus-3")
    assert too_many == []
    assert {r.rejection.reason for r in stored} >= {"schema_violation", "invalid_utf8"}


async def test_a_recorder_killed_mid_stream_leaves_no_duplicate_and_no_gap(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
    db_url: str,
) -> None:
    n = 3000
    items, keys = invalid_requests(n, uuid.uuid4().hex[:8])
    with anyio.fail_after(240):
        async with running_daemon(isolated_config, amqp_url, log_dir):
            await broker.publish(names.source, items)
            await wait_for(
                lambda: broker.depth(names.rejected),
                lambda d: d >= n // 2,
                within=60,
                what="rejections waiting",
            )
            async with running_recorder(isolated_config, amqp_url, db_url, log_dir) as first:
                await wait_for(
                    lambda: row_count(db_url), lambda c: c >= n // 5, within=60, what="rows"
                )
                first.proc.send_signal(signal.SIGKILL)
                assert await first.wait_exit(10) == -signal.SIGKILL
            killed_at = await row_count(db_url)
            assert killed_at < n, "the recorder finished before the kill: make n larger"
            async with running_recorder(isolated_config, amqp_url, db_url, log_dir) as second:
                await wait_rows(db_url, n, within=120)
                await wait_for(
                    lambda: broker.depth(names.rejected),
                    lambda d: d == 0,
                    within=30,
                    what="an empty rejected queue",
                )
                assert await second.stop() == 0
    found = await rows(db_url)
    assert len(found) == len(set(found)) == n
    assert set(found) == keys


class TcpProxy:
    """A loopback TCP relay the test can cut (every connection closed, nothing accepted)
    and restore on the same port: a database that becomes unreachable and comes back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._scope: anyio.CancelScope | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
            async with listener, anyio.create_task_group() as tg:
                task_status.started()
                await listener.serve(lambda client: self._relay(client, tg), task_group=tg)

    async def _relay(self, client: SocketStream, tg: TaskGroup) -> None:
        async with client:
            try:
                server = await anyio.connect_tcp(PG_HOST, self.target_port)
            except OSError:
                return
            async with server, anyio.create_task_group() as pair:
                pair.start_soon(_pipe, client, server, pair.cancel_scope)
                pair.start_soon(_pipe, server, client, pair.cancel_scope)

    def cut(self) -> None:
        assert self._scope is not None
        self._scope.cancel()


async def _pipe(source: SocketStream, sink: SocketStream, scope: anyio.CancelScope) -> None:
    with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        async for chunk in source:
            await sink.send(chunk)
    scope.cancel()


async def test_a_database_unreachable_mid_stream_loses_nothing_once_it_is_back(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
) -> None:
    n = 400
    tag = uuid.uuid4().hex[:8]
    items, keys = invalid_requests(n, tag)
    async with postgres_database() as database, anyio.create_task_group() as tg:
        proxy = TcpProxy(PG_PORT)
        await tg.start(proxy.run)
        direct = pg_url(database)
        with anyio.fail_after(180):
            async with (
                running_daemon(isolated_config, amqp_url, log_dir),
                running_recorder(
                    isolated_config, amqp_url, pg_url(database, proxy.port), log_dir
                ) as recorder,
            ):
                await broker.publish(names.source, items[: n // 2])
                await wait_rows(direct, n // 2, within=60)
                proxy.cut()
                await broker.publish(names.source, items[n // 2 :])
                # Nothing is acked while nothing can be written: the recorder says so.
                await wait_for(
                    recorder.ready_status, lambda s: s == 503, within=30, what="/readyz 503"
                )
                await wait_for(
                    recorder.metrics,
                    lambda m: metric_sum(m, "routerd_rejections_write_failures_total") >= 1,
                    within=30,
                    what="a failed write",
                )
                assert await row_count(direct) == n // 2
                assert metric_sum(await recorder.metrics(), "routerd_source_acks_total") <= n // 2
                await tg.start(proxy.run)
                await wait_rows(direct, n, within=60)
                await wait_for(
                    lambda: broker.depth(names.rejected),
                    lambda d: d == 0,
                    within=30,
                    what="an empty rejected queue",
                )
                await recorder.wait_ready(30)
                assert await recorder.stop() == 0
            found = await rows(direct)
        tg.cancel_scope.cancel()
    assert len(found) == n and set(found) == keys


async def test_the_recorder_exits_2_naming_a_database_url_it_cannot_use(
    isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    recorder = start_recorder(isolated_config, amqp_url, "mysql://nowhere/db", log_dir)
    try:
        assert await recorder.wait_exit(30) == 2
    finally:
        recorder.kill()
    assert "use a file path, sqlite:///FILE or postgresql://" in recorder.log_text()


async def test_recorders_competing_on_the_queue_make_one_row_per_rejection(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
) -> None:
    n = 2000
    items, keys = invalid_requests(n, uuid.uuid4().hex[:8])
    async with postgres_database() as database:
        db = pg_url(database)
        with anyio.fail_after(180):
            async with (
                running_daemon(isolated_config, amqp_url, log_dir),
                running_recorder(isolated_config, amqp_url, db, log_dir) as first,
                running_recorder(isolated_config, amqp_url, db, log_dir) as second,
            ):
                await broker.publish(names.source, items)
                await wait_rows(db, n, within=120)
                await wait_for(
                    lambda: broker.depth(names.rejected),
                    lambda d: d == 0,
                    within=30,
                    what="an empty rejected queue",
                )
                counts = [
                    metric_sum(await r.metrics(), "routerd_rejections_recorded_total")
                    for r in (first, second)
                ]
                assert [await r.stop() for r in (first, second)] == [0, 0]
            found = await rows(db)
    assert len(found) == n and set(found) == keys
    # Both did work (the queue's prefetch shares deliveries between consumers).
    assert sum(counts) == n and min(counts) > 0, counts


async def test_sigterm_while_the_database_is_down_stops_within_the_timeout_and_loses_nothing(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
) -> None:
    n = 200
    items, keys = invalid_requests(n, uuid.uuid4().hex[:8])
    async with postgres_database() as database, anyio.create_task_group() as tg:
        proxy = TcpProxy(PG_PORT)
        await tg.start(proxy.run)
        through_proxy = pg_url(database, proxy.port)
        with anyio.fail_after(180):
            async with running_daemon(isolated_config, amqp_url, log_dir):
                async with running_recorder(
                    isolated_config,
                    amqp_url,
                    through_proxy,
                    log_dir,
                    extra_args=("--shutdown-timeout", "2"),
                ) as recorder:
                    proxy.cut()
                    await broker.publish(names.source, items)
                    await wait_for(
                        recorder.metrics,
                        lambda m: metric_sum(m, "routerd_rejections_waiting") > 0,
                        within=30,
                        what="rejections waiting for the database",
                    )
                    assert await recorder.stop(within=20) == 0
                    assert "shutdown timeout" in recorder.log_text()
                assert await row_count(pg_url(database)) == 0
                await tg.start(proxy.run)
                async with running_recorder(isolated_config, amqp_url, through_proxy, log_dir):
                    await wait_rows(pg_url(database), n, within=60)
            found = await rows(pg_url(database))
        tg.cancel_scope.cancel()
    assert len(found) == n and set(found) == keys


async def test_rows_older_than_the_retention_are_pruned(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
    tmp_path: Path,
) -> None:
    n = 20
    items, _ = invalid_requests(n, uuid.uuid4().hex[:8])
    db = f"sqlite:///{tmp_path / 'rejections.sqlite3'}"
    with anyio.fail_after(60):
        async with (
            running_daemon(isolated_config, amqp_url, log_dir),
            running_recorder(
                isolated_config, amqp_url, db, log_dir, extra_args=("--retention", "2s")
            ) as recorder,
        ):
            await broker.publish(names.source, items)
            await wait_for(
                recorder.metrics,
                lambda m: (
                    metric_sum(m, "routerd_rejections_recorded_total") == n
                    and metric_sum(m, "routerd_rejections_pruned_total") == n
                ),
                within=30,
                what="every row recorded, then pruned",
            )
            assert await row_count(db) == 0


async def test_after_a_lost_broker_connection_the_recorder_reconnects_and_loses_nothing(
    broker: Broker,
    isolated_config: Path,
    names: QueueNames,
    amqp_url: str,
    log_dir: Path,
    tmp_path: Path,
) -> None:
    n = 3000
    items, keys = invalid_requests(n, uuid.uuid4().hex[:8])
    db = f"sqlite:///{tmp_path / 'rejections.sqlite3'}"
    with anyio.fail_after(180):
        async with running_daemon(isolated_config, amqp_url, log_dir):
            await broker.publish(names.source, items[: n // 2])
            async with running_recorder(isolated_config, amqp_url, db, log_dir) as recorder:
                await wait_for(lambda: row_count(db), lambda c: c >= n // 5, within=60, what="rows")
                assert await close_connections_of(recorder.pid, "test: broker connection lost") >= 1
                # Only a new session can take these: the recorder must have reconnected.
                await broker.publish(names.source, items[n // 2 :])
                await wait_rows(db, n, within=120)
                await wait_for(
                    lambda: broker.depth(names.rejected),
                    lambda d: d == 0,
                    within=30,
                    what="an empty rejected queue",
                )
                metrics = await recorder.metrics()
                assert await recorder.stop() == 0
    found = await rows(db)
    assert len(found) == n and set(found) == keys
    assert metric_sum(metrics, "routerd_reconnects_total") >= 1
