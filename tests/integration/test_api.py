"""The reference public API against the real broker, over real HTTP (uvicorn in-process):
what lands in the source and for which customer, each error answer, an end-to-end run
through `routerd serve`, and every documented response checked against the OpenAPI
document.
"""

from __future__ import annotations

import platform
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import anyio
import httpx
import orjson
import pytest
import uvicorn
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import routerd.api.app
import routerd.api.body
from routerd.allocator import LARGE_BLOCK
from routerd.api.app import create_app
from routerd.api.keys import KeyStore, hash_key
from routerd.api.settings import DEFAULT_MAX_IN_FLIGHT
from routerd.client import Publisher
from routerd.rejections.store import RejectionStore
from tests.factories import valid_v1, valid_v2
from tests.harness import (
    Broker,
    QueueNames,
    free_port,
    http_get,
    running_daemon,
    start_api,
    wait_for,
)
from tests.harness.config import keep_one_source

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

KEY = "key-of-cus-42"
OTHER_KEY = "key-of-cus-7"
KEYS = KeyStore.from_mapping(
    {"cus-42": [hash_key(KEY)], "cus-7": [hash_key(OTHER_KEY)]}, Path("keys.yaml")
)
LIMIT = 4096
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def isolated_config(isolated_config: Path) -> Path:
    """One source: these tests are about publishing, not about which source takes a request
    (tests/integration/test_sources.py is)."""
    return keep_one_source(isolated_config)


@pytest.fixture
def small_config(isolated_config: Path) -> Path:
    """The isolated config with a body limit small enough to exceed cheaply."""
    data = yaml.safe_load(isolated_config.read_text())
    data["limits"]["max_body_bytes"] = LIMIT
    isolated_config.write_text(yaml.safe_dump(data, sort_keys=False))
    return isolated_config


@asynccontextmanager
async def running_api(
    publisher: Publisher,
    keys: KeyStore = KEYS,
    rejections: RejectionStore | None = None,
    *,
    watch_config: bool = False,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API under uvicorn on a free port, and an HTTP client pointed at it."""
    port = free_port()
    app = create_app(
        publisher, keys, rejections, watch_config=watch_config, max_in_flight=max_in_flight
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)

        async def started() -> bool:
            return server.started

        await wait_for(started, bool, within=20, what="uvicorn started")
        try:
            # Timeouts are the test's fail_after; httpx's own 5 s would fail a slow broker.
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=None
            ) as client:
                yield client
        finally:
            server.should_exit = True


def request_v1(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    body = valid_v1(seed, **overrides)
    del body["customer_id"]
    return body


async def test_a_valid_request_is_202_and_in_the_source_with_the_keys_customer(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    with anyio.fail_after(60):
        async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:
            first = await http.post("/v1/send", json=request_v1(1), headers=AUTH)
            same = await http.post("/v1/send", json=valid_v1(2, customer_id="cus-42"), headers=AUTH)
            v2 = valid_v2(3)
            del v2["account"]
            second = await http.post(
                "/v1/send", json=v2, headers={"Authorization": f"Bearer {OTHER_KEY}"}
            )
        got = await broker.drain(names.source, 3)
    assert [r.status_code for r in (first, same, second)] == [202, 202, 202]
    assert first.json() == {"message_id": "msg-1"}
    assert second.json() == {"message_id": "msg-v2-3"}
    bodies = [orjson.loads(r.body) for r in got]
    assert [b["message_id"] for b in bodies] == ["msg-1", "msg-2", "msg-v2-3"]
    assert bodies[0]["customer_id"] == "cus-42" and bodies[1]["customer_id"] == "cus-42"
    assert bodies[2]["account"] == {"id": "cus-7"}
    assert all(r.delivery_mode == 2 for r in got)
    assert got[0].properties["message_id"] == "msg-1"


async def test_concurrent_sends_share_one_publisher_and_each_lands_once(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    statuses: list[int] = []
    with anyio.fail_after(120):
        async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:

            async def post(seed: int) -> None:
                answer = await http.post("/v1/send", json=request_v1(seed), headers=AUTH)
                statuses.append(answer.status_code)

            async with anyio.create_task_group() as tg:
                for seed in range(300):
                    tg.start_soon(post, seed)
        got = await broker.drain(names.source, 300)
    assert statuses == [202] * 300
    ids = sorted(orjson.loads(r.body)["message_id"] for r in got)
    assert ids == sorted(f"msg-{seed}" for seed in range(300))
    assert await broker.depth(names.source) == 0


async def test_invalid_requests_are_400_with_reasons_and_nothing_is_published(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    with anyio.fail_after(60):
        async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:
            no_recipients = await http.post(
                "/v1/send", json=request_v1(1, to=[], subject="x" * 1000), headers=AUTH
            )
            other_customer = await http.post(
                "/v1/send", json=valid_v1(2, customer_id="cus-7"), headers=AUTH
            )
            not_json = await http.post("/v1/send", content=b"{not json", headers=AUTH)
            not_object = await http.post("/v1/send", json=[1, 2], headers=AUTH)
            unknown_version = await http.post(
                "/v1/send", json=request_v1(3, schema_version=9), headers=AUTH
            )
        assert await broker.depth(names.source) == 0
    for answer in (no_recipients, other_customer, not_json, not_object, unknown_version):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]
    pointers = {(r["code"], r["pointer"]) for r in no_recipients.json()["reasons"]}
    assert ("schema_violation", "/to") in pointers
    assert ("schema_violation", "/subject") in pointers
    assert other_customer.json()["reasons"] == [
        {
            "code": "customer_mismatch",
            "message": other_customer.json()["error"],
            "pointer": "/customer_id",
        }
    ]
    assert not_json.json()["reasons"][0]["code"] == "invalid_json"
    assert not_object.json()["reasons"][0]["code"] == "not_an_object"
    assert unknown_version.json()["reasons"][0]["code"] == "unknown_schema_version"


async def test_a_missing_or_unknown_key_is_401_with_www_authenticate(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    with anyio.fail_after(60):
        async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:
            answers = [
                await http.post("/v1/send", json=request_v1(), headers=headers)
                for headers in (
                    {},
                    {"Authorization": "Bearer not-a-key"},
                    {"Authorization": "Bearer"},
                    {"Authorization": f"Basic {KEY}"},
                    # The hash itself is not a key: the file holds nothing that opens the API.
                    {"Authorization": f"Bearer {hash_key(KEY)}"},
                )
            ]
        assert await broker.depth(names.source) == 0
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in answer.json()["error"]


async def raw_post(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request written by hand; the status and body of the answer."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await stream.send(head + b"\r\n" + body)
        raw = b""
        try:
            while True:
                raw += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_body_over_the_limit_is_413_and_never_read_whole(
    amqp_url: str, small_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    big = request_v1(1, text="x" * LIMIT)
    with anyio.fail_after(60):
        async with Publisher(amqp_url, config=small_config) as pub, running_api(pub) as http:
            declared = await http.post("/v1/send", json=big, headers=AUTH)

            async def chunks() -> AsyncIterator[bytes]:
                data = orjson.dumps(big)
                for start in range(0, len(data), 1000):
                    yield data[start : start + 1000]

            chunked = await http.post("/v1/send", content=chunks(), headers=AUTH)
            # A Content-Length of a gigabyte and no body at all: answered at once, so the
            # API did not wait to read it.
            port = http.base_url.port
            assert port is not None
            status, body = await raw_post(
                port,
                b"POST /v1/send HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                b"Content-Length: 1000000000\r\n",
            )
            just_fits = await http.post(
                "/v1/send", content=orjson.dumps(request_v1(2)), headers=AUTH
            )
        got = await broker.drain(names.source, 1)
    assert declared.status_code == 413 and declared.json()["limit"] == LIMIT
    assert "4096" in declared.json()["error"]
    assert chunked.status_code == 413
    assert status == 413 and orjson.loads(body)["limit"] == LIMIT
    assert just_fits.status_code == 202
    assert [orjson.loads(r.body)["message_id"] for r in got] == ["msg-2"]


async def test_broker_unreachable_or_source_missing_is_503_with_retry_after(
    isolated_config: Path, amqp_url: str, broker: Broker, names: QueueNames
) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    with anyio.fail_after(60):
        down = Publisher(closed, config=isolated_config, connect_timeout=0.5)
        async with running_api(down) as http:
            unreachable = await http.post("/v1/send", json=request_v1(1), headers=AUTH)
            health = await http.get("/healthz")
        # The source queue is not declared: the broker returns the publish.
        async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:
            unroutable = await http.post("/v1/send", json=request_v1(2), headers=AUTH)
    assert unreachable.status_code == 503
    assert int(unreachable.headers["retry-after"]) > 0
    assert "broker" in unreachable.json()["error"]
    assert "guest" not in unreachable.text  # nothing of the broker URL reaches a customer
    assert health.status_code == 200
    assert unroutable.status_code == 503
    assert int(unroutable.headers["retry-after"]) > 0
    assert unroutable.json()["message_id"] == "msg-2"


async def test_a_nacked_publish_is_503_with_the_message_id_to_retry_with(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames
) -> None:
    # A source that refuses every publish (length 0, reject-publish): the broker nacks.
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        arguments = {"x-max-length": 0, "x-overflow": "reject-publish"}
        await channel.queue_declare(names.source, durable=True, arguments=arguments)
    finally:
        await connection.close()
    with anyio.fail_after(60):
        async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:
            refused = await http.post("/v1/send", json=request_v1(31), headers=AUTH)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["message_id"] == "msg-31"
    assert "retry with the same message_id" in refused.json()["error"]


async def test_http_to_the_api_to_routerd_serve_to_the_target_queue(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames, log_dir: Path
) -> None:
    with anyio.fail_after(120):
        async with running_daemon(isolated_config, amqp_url, log_dir):
            async with Publisher(amqp_url, config=isolated_config) as pub, running_api(pub) as http:
                accepted = await http.post(
                    "/v1/send", json=request_v1(5, tags=["password-reset"]), headers=AUTH
                )
                bulk = await http.post(
                    "/v1/send", json=request_v1(6, stream="broadcast"), headers=AUTH
                )
                refused = await http.post("/v1/send", json=request_v1(7, to=[]), headers=AUTH)

            async def settled() -> dict[str, int]:
                return await broker.depths([names.source, names.transactional, names.bulk])

            depths = await wait_for(
                settled,
                lambda d: d[names.transactional] == 1 and d[names.bulk] == 1,
                within=30,
                what="the two accepted requests in their target queues",
            )
        (transactional,) = await broker.drain(names.transactional, 1)
        (bulky,) = await broker.drain(names.bulk, 1)
    assert accepted.status_code == 202 and bulk.status_code == 202
    assert refused.status_code == 400
    assert depths[names.source] == 0
    assert await broker.depth(names.rejected) == 0  # refused at the API, never published
    body = orjson.loads(transactional.body)
    assert body["message_id"] == accepted.json()["message_id"] == "msg-5"
    assert body["customer_id"] == "cus-42"
    assert transactional.headers["x-category"] == "transactional"
    assert orjson.loads(bulky.body)["message_id"] == "msg-6"


# Every `routerd api` here also has a variable naming an address nobody can bind: the
# --listen flag must win over it.
FLAG_WINS = {"ROUTERD_API_ADDR": "127.0.0.1:1"}


async def test_routerd_api_runs_from_its_settings_reloads_on_sighup_and_stops_on_sigterm(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames, tmp_path: Path
) -> None:
    await broker.declare_queue(names.source)
    keys = tmp_path / "keys.json"
    keys.write_text(orjson.dumps({"cus-42": [hash_key(KEY)]}).decode())
    port = free_port()
    log = tmp_path / "api.log"
    proc = start_api(isolated_config, amqp_url, keys, port, log, env=FLAG_WINS)
    try:
        with anyio.fail_after(60):

            async def health() -> int | None:
                assert proc.poll() is None, log.read_text()
                answer = await http_get(port, "/healthz")
                return None if answer is None else answer[0]

            await wait_for(health, lambda s: s == 200, within=30, what="routerd api /healthz")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                accepted = await http.post("/v1/send", json=request_v1(21), headers=AUTH)
            (got,) = await broker.drain(names.source, 1)
            # SIGHUP reloads the route config; the API keeps running.
            proc.send_signal(signal.SIGHUP)

            async def reloads() -> str:
                answer = await http_get(port, "/metrics")
                return "" if answer is None else answer[1].decode()

            await wait_for(
                reloads,
                lambda page: 'routerd_reloads_total{result="unchanged"} 1.0' in page,
                within=30,
                what="the SIGHUP reload",
            )
            proc.send_signal(signal.SIGTERM)

            async def exited() -> int | None:
                return proc.poll()

            code = await wait_for(exited, lambda rc: rc is not None, within=30, what="exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert accepted.status_code == 202, log.read_text()
    assert orjson.loads(got.body)["customer_id"] == "cus-42"
    assert got.properties["app_id"] == "routerd-api"
    assert code == 0, log.read_text()
    assert "guest:guest" not in log.read_text()


async def test_sends_beyond_max_in_flight_wait_before_their_body_is_read(
    amqp_url: str,
    isolated_config: Path,
    broker: Broker,
    names: QueueNames,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await broker.declare_queue(names.source)
    limit, count = 2, 12
    arrived = holding = peak = 0
    release = anyio.Event()
    check_key, read_body = routerd.api.app._customer, routerd.api.body.read_body

    def counting_arrivals(*args: Any) -> str | None:
        nonlocal arrived
        arrived += 1
        return check_key(*args)

    async def counting_reads(*args: Any) -> bytes:
        nonlocal holding, peak
        holding += 1
        peak = max(peak, holding)
        return await read_body(*args)

    monkeypatch.setattr(routerd.api.app, "_customer", counting_arrivals)
    monkeypatch.setattr(routerd.api.app, "read_body", counting_reads)
    with anyio.fail_after(60):
        async with Publisher(amqp_url, config=isolated_config) as pub:
            publish = pub.send

            async def held_send(body: dict[str, Any]) -> str:
                nonlocal holding
                # Each send keeps its place until the test has seen all of them arrive.
                await release.wait()
                try:
                    return await publish(body)
                finally:
                    holding -= 1

            monkeypatch.setattr(pub, "send", held_send)
            answers: list[int] = []
            async with running_api(pub, max_in_flight=limit) as http:

                async def post(i: int) -> None:
                    answer = await http.post("/v1/send", json=request_v1(100 + i), headers=AUTH)
                    answers.append(answer.status_code)

                async with anyio.create_task_group() as tg:
                    for i in range(count):
                        tg.start_soon(post, i)

                    async def state() -> tuple[int, int]:
                        return arrived, holding

                    # Every request is in the app, and only `limit` hold a body.
                    await wait_for(
                        state, lambda s: s == (count, limit), within=30, what="all arrived"
                    )
                    release.set()
        got = await broker.drain(names.source, count)
    assert answers == [202] * count
    assert peak == limit
    assert len(got) == count


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's")
async def test_routerd_api_maps_large_blocks(
    amqp_url: str, isolated_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API inherits this environment: without the operator's own threshold.
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    keys = tmp_path / "keys.json"
    keys.write_text(orjson.dumps({"cus-42": [hash_key(KEY)]}).decode())
    log = tmp_path / "api.log"
    proc = start_api(
        isolated_config, amqp_url, keys, free_port(), log, "--log-level", "debug", env=FLAG_WINS
    )
    said = f"blocks of {LARGE_BLOCK} bytes and more are mapped and unmapped"
    try:

        async def log_text() -> str:
            return log.read_text(errors="replace")

        await wait_for(log_text, lambda text: said in text, within=30, what=repr(said))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_routerd_api_exits_2_when_its_address_is_taken(
    amqp_url: str, isolated_config: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f'cus-42: ["{hash_key(KEY)}"]\n')
    log = tmp_path / "api.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = start_api(
            isolated_config, amqp_url, keys, taken.getsockname()[1], log, env=FLAG_WINS
        )
        try:

            async def exited() -> int | None:
                return proc.poll()

            code = await wait_for(exited, lambda rc: rc is not None, within=60, what="exit")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert code == 2, log.read_text()
    assert "address already in use" in log.read_text()


@asynccontextmanager
async def forwarding(port: int, to: tuple[str, int]) -> AsyncIterator[None]:
    """A plain TCP relay on `port` to `to`: the broker appearing at an address the API
    could not reach before."""

    async def pipe(reader: anyio.abc.ByteReceiveStream, writer: anyio.abc.ByteSendStream) -> None:
        async with writer:
            async for chunk in reader:
                await writer.send(chunk)

    async def relay(client: anyio.abc.SocketStream) -> None:
        async with (
            client,
            await anyio.connect_tcp(*to) as upstream,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(pipe, client, upstream)
            tg.start_soon(pipe, upstream, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, relay)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


async def test_readyz_follows_the_broker_and_metrics_count_the_answers(
    small_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    port = free_port()
    publisher = Publisher(
        f"amqp://guest:guest@127.0.0.1:{port}/", config=small_config, connect_timeout=1
    )
    with anyio.fail_after(90):
        async with running_api(publisher) as http:
            down = await http.get("/readyz")
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            refused = await http.post("/v1/send", json=request_v1(31), headers=AUTH)
            assert refused.status_code == 503
            async with forwarding(port, ("127.0.0.1", 5672)):

                async def ready() -> int:
                    return (await http.get("/readyz")).status_code

                # No send in between: the probe itself reconnects.
                await wait_for(
                    ready, lambda s: s == 200, within=30, what="/readyz after the broker"
                )
                accepted = await http.post("/v1/send", json=request_v1(32), headers=AUTH)
                assert accepted.status_code == 202
                invalid = await http.post("/v1/send", json=request_v1(33, to=[]), headers=AUTH)
                assert invalid.status_code == 400
                page = (await http.get("/metrics")).text
    code = invalid.json()["reasons"][0]["code"]
    assert 'routerd_api_send_answers_total{reason="",status="202"} 1.0' in page
    assert 'routerd_api_send_answers_total{reason="",status="503"} 1.0' in page
    assert f'routerd_api_send_answers_total{{reason="{code}",status="400"}} 1.0' in page
    assert "routerd_api_send_seconds_count 3.0" in page
    assert "routerd_api_broker_connected 1.0" in page
    (stored,) = await broker.drain(names.source)
    assert orjson.loads(stored.body)["message_id"] == accepted.json()["message_id"]


async def test_the_api_follows_config_edits_and_keeps_its_config_on_a_broken_one(
    amqp_url: str, small_config: Path, broker: Broker, names: QueueNames
) -> None:
    await broker.declare_queue(names.source)
    big = request_v1(41, text="x" * LIMIT)
    config = anyio.Path(small_config)
    data = yaml.safe_load(await config.read_text())
    with anyio.fail_after(60):
        async with (
            Publisher(amqp_url, config=small_config) as pub,
            running_api(pub, watch_config=True) as http,
        ):
            assert (await http.post("/v1/send", json=big, headers=AUTH)).status_code == 413
            data["limits"]["max_body_bytes"] = 4 * LIMIT
            await config.write_text(yaml.safe_dump(data, sort_keys=False))

            async def status() -> int:
                return (await http.post("/v1/send", json=big, headers=AUTH)).status_code

            await wait_for(status, lambda s: s == 202, within=30, what="the raised limit")

            # An edit lint refuses: the API keeps checking with the config it runs.
            await config.write_text(await config.read_text() + "rules: [\n")

            async def refused() -> str:
                return (await http.get("/metrics")).text

            await wait_for(
                refused,
                lambda page: 'routerd_reloads_total{result="refused"} 1.0' in page,
                within=30,
                what="the broken edit refused",
            )
            assert await status() == 202
            invalid = await http.post("/v1/send", json=request_v1(42, to=[]), headers=AUTH)
            assert invalid.status_code == 400
    assert await broker.depth(names.source) == 2


# --- the API driven from its OpenAPI document ------------------------------------------


@dataclass(frozen=True)
class Case:
    """How to make the API give one documented response."""

    method: str
    path: str
    status: int
    kwargs: Callable[[], dict[str, Any]]
    publisher: str = "up"  # "up": the broker with the source declared; "down": a closed port
    # "sqlite": GET /v1/rejections reads a SQLite file; "none": no database; "down": a
    # PostgreSQL URL on a closed port.
    rejections: str = "sqlite"


CASES = [
    Case("post", "/v1/send", 202, lambda: {"json": request_v1(11), "headers": AUTH}),
    Case("post", "/v1/send", 400, lambda: {"json": request_v1(12, to=[]), "headers": AUTH}),
    Case("post", "/v1/send", 401, lambda: {"json": request_v1(13)}),
    Case(
        "post",
        "/v1/send",
        413,
        lambda: {"json": request_v1(14, text="x" * LIMIT), "headers": AUTH},
    ),
    Case("post", "/v1/send", 503, lambda: {"json": request_v1(15), "headers": AUTH}, "down"),
    Case("get", "/v1/rejections", 200, lambda: {"headers": AUTH}),
    Case("get", "/v1/rejections", 400, lambda: {"params": {"limit": "0"}, "headers": AUTH}),
    Case("get", "/v1/rejections", 401, dict),
    Case("get", "/v1/rejections", 404, lambda: {"headers": AUTH}, rejections="none"),
    Case("get", "/v1/rejections", 503, lambda: {"headers": AUTH}, rejections="down"),
    Case("get", "/healthz", 200, dict),
    Case("get", "/readyz", 200, dict),
    Case("get", "/readyz", 503, dict, "down"),
    Case("get", "/metrics", 200, dict),
    Case("get", "/openapi.yaml", 200, dict),
]


def documented_responses(document: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status in operation["responses"]:
                yield method, path, int(status)


def response_validator(document: dict[str, Any], case: Case, media_type: str) -> Any:
    pointer = "/".join(
        part.replace("~", "~0").replace("/", "~1")
        for part in ["paths", case.path, case.method, "responses", str(case.status)]
    )
    responses = document["paths"][case.path][case.method]["responses"]
    assert media_type in responses[str(case.status)]["content"], (case, media_type)
    media = media_type.replace("~", "~0").replace("/", "~1")
    uri = "urn:routerd-api"
    registry = Registry().with_resource(
        uri, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{uri}#/{pointer}/content/{media}/schema"}, registry=registry
    )


async def test_every_documented_response_is_produced_and_matches_its_schema(
    amqp_url: str, small_config: Path, broker: Broker, names: QueueNames, tmp_path: Path
) -> None:
    await broker.declare_queue(names.source)
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    store = RejectionStore.open(str(tmp_path / "rejections.sqlite3"))
    await store.migrate()
    with anyio.fail_after(60):
        async with (
            Publisher(amqp_url, config=small_config) as pub,
            running_api(pub, rejections=store) as http,
        ):
            served = await http.get("/openapi.yaml")
            document = yaml.safe_load(served.content)
            assert document["openapi"] == "3.1.0"
            documented = sorted(documented_responses(document))
            assert documented == sorted((c.method, c.path, c.status) for c in CASES), (
                "each documented response needs a Case here, and each Case a documented response"
            )
            answers = {
                case: await http.request(case.method.upper(), case.path, **case.kwargs())
                for case in CASES
                if case.publisher == "up" and case.rejections == "sqlite"
            }
        for kind in ("none", "down"):
            down_db = RejectionStore.open(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
            async with (
                Publisher(amqp_url, config=small_config) as pub,
                running_api(pub, rejections=down_db if kind == "down" else None) as http,
            ):
                for case in CASES:
                    if case.rejections == kind:
                        answers[case] = await http.request(
                            case.method.upper(), case.path, **case.kwargs()
                        )
        down = Publisher(closed, config=small_config, connect_timeout=0.5)
        async with running_api(down) as http:
            for case in CASES:
                if case.publisher == "down":
                    answers[case] = await http.request(
                        case.method.upper(), case.path, **case.kwargs()
                    )
    for case, answer in answers.items():
        assert answer.status_code == case.status, (case, answer.text)
        media_type = answer.headers["content-type"].split(";")[0]
        body = (
            answer.json()
            if media_type == "application/json"
            else yaml.safe_load(answer.content)
            if media_type == "application/yaml"
            else answer.text
        )
        validator = response_validator(document, case, media_type)
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, (case, body, errors)
        operation = document["paths"][case.path][case.method]
        for header in operation["responses"][str(case.status)].get("headers", {}):
            assert header.lower() in answer.headers, (case, header)
