"""`routerd.client` against the real broker: what lands in the source, each error it raises,
bulk sends, the blocking facade from many threads, and client -> routerd serve -> targets."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiormq
import anyio
import orjson
import pytest

from routerd.client import (
    BlockingPublisher,
    BrokerUnavailable,
    NotConfirmed,
    NotConfirmedCause,
    Publisher,
    PublishError,
    RequestInvalid,
    Unroutable,
)
from routerd.config.loader import load
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope
from tests.factories import encode, expected_category, invalid_v1, valid_v1, valid_v2
from tests.harness import (
    ROOT,
    Broker,
    QueueNames,
    Received,
    close_connections,
    free_port,
    rabbitmqctl,
    running_daemon,
    wait_for,
)
from tests.harness.config import keep_one_source

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.fixture
def isolated_config(isolated_config: Path) -> Path:
    """One source: these tests are about publishing, not about which source takes a request
    (tests/integration/test_sources.py is)."""
    return keep_one_source(isolated_config)


def without_id(request: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k != "message_id"}


def check_source_message(got: Received, message_id: str, version: str) -> None:
    body = orjson.loads(got.body)
    assert got.delivery_mode == 2
    assert got.properties["message_id"] == message_id
    assert body["message_id"] == message_id
    assert got.properties["content_type"] == "application/json"
    assert got.headers["x-schema-version"] == version


async def test_valid_v1_and_v2_land_in_the_source_persistent_with_ids_and_headers(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    v1, v2 = without_id(valid_v1(1)), valid_v2(2)
    with anyio.fail_after(30):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            id1 = await pub.send(v1)
            id2 = await pub.send(v2, headers={"x-trace": "t-2"})
        got = await broker.drain(names.source, 2)
    assert len(id1) == 32 and "message_id" not in v1  # filled (uuid4 hex), caller's dict kept
    assert id2 == "msg-v2-2"
    first, second = got
    check_source_message(first, id1, "1")
    check_source_message(second, id2, "2")
    assert second.headers["x-trace"] == "t-2"
    assert orjson.loads(second.body) == v2


async def test_an_invalid_request_raises_decides_reasons_and_publishes_nothing(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    table = load(isolated_config)
    with anyio.fail_after(30):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            for seed in range(6):  # every breakage invalid_v1 knows
                request = invalid_v1(seed)
                with pytest.raises(RequestInvalid) as caught:
                    await pub.send(request)
                expected = decide(
                    table,
                    Envelope(
                        encode(request),
                        {"x-schema-version": "1"},
                        {"content_type": "application/json", "message_id": request["message_id"]},
                    ),
                )
                assert expected.rejected
                assert caught.value.reasons == expected.reasons
                assert caught.value.as_dicts() == [r.as_dict() for r in expected.reasons]
                assert caught.value.message_id == request["message_id"]
        assert await broker.depth(names.source) == 0


async def test_without_a_config_an_invalid_request_is_published(
    amqp_url: str, broker: Broker, unique: str
) -> None:
    queue = f"client.plain.{unique}"
    await broker.declare_queue(queue, quorum=False)
    with anyio.fail_after(30):
        async with Publisher(amqp_url, queue=queue) as pub:
            message_id = await pub.send(invalid_v1(0))
        (got,) = await broker.drain(queue, 1)
    assert message_id == "msg-0"
    check_source_message(got, "msg-0", "1")


async def test_a_missing_source_queue_is_unroutable(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    assert await broker.depth(names.source) is None
    with anyio.fail_after(30):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            with pytest.raises(Unroutable) as caught:
                await pub.send(valid_v1(3))
            # The publisher stays usable after a return.
            with pytest.raises(Unroutable):
                await pub.send(valid_v1(4))
    assert caught.value.queue == names.source
    assert caught.value.message_id == "msg-3"
    assert "NO_ROUTE" in str(caught.value)


async def test_an_unreachable_broker_raises_broker_unavailable_within_the_timeout() -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/"  # nothing listens there
    with anyio.fail_after(10):
        with pytest.raises(BrokerUnavailable) as caught:
            async with Publisher(url, queue="nowhere", connect_timeout=1.5):
                pass
    assert isinstance(caught.value, PublishError)
    assert "secret" not in str(caught.value) and "gave up after 1.5s" in str(caught.value)


async def test_send_many_confirms_every_request_in_order(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    count = 2000
    requests = (valid_v1(i) if i % 3 else without_id(valid_v2(i)) for i in range(count))
    with anyio.fail_after(120):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            results = await pub.send_many(requests, max_in_flight=64)
        got = await broker.drain(names.source, count)
    assert len(results) == count
    assert all(isinstance(r, str) for r in results)
    assert [r for i, r in enumerate(results) if i % 3] == [
        f"msg-{i}" for i in range(count) if i % 3
    ]
    assert len(set(results)) == count
    assert sorted(r.properties["message_id"] for r in got) == sorted(map(str, results))
    assert all(r.delivery_mode == 2 for r in got)


async def test_send_many_reports_each_failure_in_its_place(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    requests = [valid_v1(0), invalid_v1(1), valid_v2(2)]
    with anyio.fail_after(30):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            results = await pub.send_many(requests, max_in_flight=2)
    assert results[0] == "msg-0" and results[2] == "msg-v2-2"
    assert isinstance(results[1], RequestInvalid)
    assert await broker.depth(names.source) == 2


async def test_send_each_reads_lazily_and_reports_every_request_once(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    count, window = 3000, 16
    made = 0
    done: dict[int, str | PublishError] = {}
    ahead: list[int] = []

    def requests() -> Iterator[dict[str, Any]]:
        nonlocal made
        for i in range(count):
            # How far the reader runs ahead of the results: the memory a long run holds.
            ahead.append(made - len(done))
            made += 1
            yield valid_v1(i) if i % 10 else invalid_v1(i)

    def on_result(index: int, result: str | PublishError) -> None:
        assert index not in done
        done[index] = result

    with anyio.fail_after(120):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            await pub.send_each(requests(), on_result, max_in_flight=window)
    assert sorted(done) == list(range(count))
    # A request is made only once a slot is free for it.
    assert max(ahead) < window
    assert all(isinstance(done[i], RequestInvalid) == (i % 10 == 0) for i in range(count))
    assert await broker.depth(names.source) == count - count // 10


async def test_blocking_publisher_from_several_threads(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    threads, each = 8, 25
    sent: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(pub: BlockingPublisher, t: int) -> None:
        try:
            for i in range(each):
                message_id = pub.send(valid_v1(t * 1000 + i))
                with lock:
                    sent.append(message_id)
            results = pub.send_many([valid_v2(t * 1000 + i) for i in range(each)])
            with lock:
                sent.extend(str(r) for r in results)
        except BaseException as exc:
            errors.append(exc)

    def run_all() -> None:
        with BlockingPublisher(amqp_url, config=isolated_config) as pub:
            workers = [threading.Thread(target=work, args=(pub, t)) for t in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

    with anyio.fail_after(60):
        await anyio.to_thread.run_sync(run_all)
        got = await broker.drain(names.source, threads * each * 2)
    assert errors == []
    expected = {f"msg-{t * 1000 + i}" for t in range(threads) for i in range(each)}
    expected |= {f"msg-v2-{t * 1000 + i}" for t in range(threads) for i in range(each)}
    assert set(sent) == expected
    assert {r.properties["message_id"] for r in got} == expected


async def test_blocking_publisher_raises_the_same_errors(amqp_url: str, unique: str) -> None:
    def run() -> None:
        queue = f"client.missing.{unique}"
        with BlockingPublisher(amqp_url, queue=queue) as pub, pytest.raises(Unroutable):
            pub.send(valid_v1(5))
        url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        with pytest.raises(BrokerUnavailable):
            BlockingPublisher(url, queue="nowhere", connect_timeout=1).connect()

    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(run)


async def test_client_to_routerd_serve_to_the_targets(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames, log_dir: Path
) -> None:
    v1 = [valid_v1(10), valid_v1(11, tags=["2fa"]), without_id(valid_v1(12, recipients=60))]
    v2 = [valid_v2(20), valid_v2(21, labels=["password-reset"])]
    requests: list[dict[str, Any]] = [*v1, *v2]
    async with running_daemon(isolated_config, amqp_url, log_dir):
        with anyio.fail_after(60):
            async with Publisher(amqp_url, config=isolated_config) as pub:
                ids = [
                    await pub.send(r, headers={"x-trace": f"t{i}"}) for i, r in enumerate(requests)
                ]
                with pytest.raises(RequestInvalid) as refused:
                    await pub.send(invalid_v1(3))
            # The same invalid request sent without a config: routerd rejects it with the
            # very reasons the client gave.
            async with Publisher(amqp_url, queue=names.source) as plain_pub:
                await plain_pub.send(invalid_v1(3))
            (rejected,) = await broker.drain(names.rejected, 1)
            by_queue = {
                queue: sum(names.of_category(expected_category(r)) == queue for r in requests)
                for queue in (names.transactional, names.bulk)
            }
            got: dict[str, Received] = {}
            for queue, count in by_queue.items():
                for message in await broker.drain(queue, count):
                    got[message.properties["message_id"]] = message
    assert await broker.depth(names.rejected) == 0
    assert rejected.properties["message_id"] == "msg-3"
    assert rejected.headers["x-rejected-reasons"] == refused.value.as_dicts()
    for i, (request, message_id) in enumerate(zip(requests, ids, strict=True)):
        message = got[message_id]
        assert message.queue == names.of_category(expected_category(request))
        assert orjson.loads(message.body)["message_id"] == message_id
        assert message.delivery_mode == 2
        assert message.headers["x-trace"] == f"t{i}"
        assert message.headers["x-schema-version"] == str(request["schema_version"])
        assert message.headers["x-category"] == expected_category(request)


async def declare_full_queue(amqp_url: str, queue: str) -> None:
    """A queue that refuses every publish (length 0, reject-publish): the broker nacks."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        arguments = {"x-max-length": 0, "x-overflow": "reject-publish"}
        await channel.queue_declare(queue, durable=True, arguments=arguments)
    finally:
        await connection.close()


async def test_a_nacked_publish_raises_not_confirmed(
    amqp_url: str, broker: Broker, unique: str
) -> None:
    queue = f"client.full.{unique}"
    await declare_full_queue(amqp_url, queue)
    broker.track(queues=[queue])
    with anyio.fail_after(30):
        async with Publisher(amqp_url, queue=queue) as pub:
            with pytest.raises(NotConfirmed) as caught:
                await pub.send(valid_v1(6))
            results = await pub.send_many([valid_v1(7), valid_v1(8)])
    assert caught.value.cause is NotConfirmedCause.NACK
    assert caught.value.message_id == "msg-6"
    assert all(isinstance(r, NotConfirmed) for r in results)


async def connections_named(name: str) -> list[str]:
    listing = await anyio.to_thread.run_sync(
        rabbitmqctl, "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    return [line.split("\t")[0] for line in listing.splitlines() if name in line]


async def test_the_publisher_reconnects_after_losing_the_broker(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames, unique: str
) -> None:
    await broker.declare_queue(names.source)
    name = f"client-test-{unique}"
    with anyio.fail_after(60):
        async with Publisher(f"{amqp_url}?name={name}", config=isolated_config) as pub:
            await pub.send(valid_v1(30))
            lost = await wait_for(
                lambda: connections_named(name), bool, within=20, what=f"connection {name}"
            )
            assert await close_connections(lost, "client reconnect test") == 1
            await wait_for(
                lambda: connections_named(name), lambda c: c != lost, within=20, what="the close"
            )
            await pub.send(valid_v1(31))
            results = await pub.send_many([valid_v1(32), valid_v1(33)])
        got = await broker.drain(names.source, 4)
    assert results == ["msg-32", "msg-33"]
    assert [r.properties["message_id"] for r in got] == [f"msg-{i}" for i in range(30, 34)]


def doc_examples() -> list[str]:
    text = (ROOT / "docs" / "client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    runnable = ("asyncio.run(", "with BlockingPublisher")
    return [block for block in blocks if any(mark in block for mark in runnable)]


async def test_the_examples_in_docs_client_md_run(
    amqp_url: str,
    isolated_config: Path,
    broker: Broker,
    names: QueueNames,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await broker.declare_queue(names.source)
    examples = doc_examples()
    assert len(examples) == 5
    with anyio.fail_after(60):
        for example in examples:
            code = example.replace("config/routes.yaml", str(isolated_config))
            code = code.replace('queue="email.send"', f"queue={names.source!r}")
            code = code.replace("amqp://guest:guest@127.0.0.1:5672/", amqp_url)
            await anyio.to_thread.run_sync(exec, compile(code, "docs/client.md", "exec"), {})
        out = capsys.readouterr().out
    assert "accepted " in out and "schema_violation" in out
    assert "2000 confirmed, 0 failed" in out
    assert "Counter({'str': 1000})" in out
    assert out.count("(202, {'message_id': ") == 4 and "[RequestInvalid(" in out
    # one accepted + 2,000 + 1,000 + four threads + one without a config
    assert await broker.depth(names.source) == 3006
