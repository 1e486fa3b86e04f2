"""Two source queues for real: the client puts each request on its source, `routerd serve`
consumes both, and a transactional request is routed while a bulk backlog still waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from routerd.client import Publisher
from tests.factories import encode, valid_v1, valid_v2
from tests.harness.accounting import QueueNames
from tests.harness.broker import Broker
from tests.harness.config import catch_all_source, read_config, source_entries
from tests.harness.daemon import running_daemon
from tests.harness.wait import wait_for
from tests.integration.test_send import routerd_send

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

BACKLOG = 5000


def bulk(i: int) -> dict[str, Any]:
    return valid_v1(i, stream="broadcast", tags=["newsletter"], message_id=f"bulk-{i}")


async def test_the_client_puts_each_request_on_the_source_that_accepts_it(
    broker: Broker, isolated_config: Path, amqp_url: str
) -> None:
    data = read_config(isolated_config)
    transactional, catch_all = (s["queue"] for s in source_entries(data))
    for queue in (transactional, catch_all):
        await broker.declare_queue(queue)
    reset = valid_v1(1, tags=["password-reset"], stream="broadcast", message_id="reset")
    receipt = valid_v1(2, recipients=1, tags=["receipt"], message_id="receipt")
    receipt.pop("stream", None)
    code = valid_v2(3, labels=["2fa"], message_id="code-v2")
    async with Publisher(amqp_url, config=isolated_config) as publisher:
        for request in (reset, bulk(4), receipt, code, bulk(5)):
            await publisher.send(request)
    got = {
        queue: [orjson.loads(m.body)["message_id"] for m in await broker.drain(queue)]
        for queue in (transactional, catch_all)
    }
    assert got == {transactional: ["reset", "receipt", "code-v2"], catch_all: ["bulk-4", "bulk-5"]}


async def test_a_transactional_request_does_not_wait_behind_a_bulk_backlog(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    data = read_config(isolated_config)
    bulk_source = catch_all_source(data)["queue"]
    assert len(names.sources) == 2
    for queue in names.sources:
        await broker.declare_queue(queue)
    # The backlog is there before routerd starts: with one shared source, the request
    # below would be routed only after all of it.
    assert await broker.publish(bulk_source, (encode(bulk(i)) for i in range(BACKLOG))) == BACKLOG
    async with Publisher(amqp_url, config=isolated_config) as publisher:
        reset = valid_v1(7, recipients=1, tags=["password-reset"], message_id="reset")
        await publisher.send(reset)
    assert await broker.depths(names.sources) == {names.sources[0]: 1, bulk_source: BACKLOG}

    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        await wait_for(
            lambda: broker.depth(names.transactional),
            lambda depth: depth == 1,
            within=60,
            what="the password reset in the transactional target",
        )
        # Routed while bulk requests still wait in their own source.
        assert (await broker.depth(bulk_source) or 0) > 0
        for queue in names.sources:
            assert await broker.consumers(queue) == 1, f"no consumer on {queue}"
        await wait_for(
            lambda: broker.depths([*names.sources, names.bulk]),
            lambda d: d[bulk_source] == 0 and d[names.sources[0]] == 0 and d[names.bulk] == BACKLOG,
            within=120,
            what="the bulk backlog routed",
        )
        assert await daemon.stop(within=30) == 0
    (routed,) = await broker.drain(names.transactional)
    assert orjson.loads(routed.body)["message_id"] == "reset"
    assert routed.headers["x-rule"] == "security-codes"


async def test_routerd_send_without_the_check_still_picks_the_source(
    broker: Broker, isolated_config: Path, amqp_url: str
) -> None:
    transactional, catch_all = (s["queue"] for s in source_entries(read_config(isolated_config)))
    for queue in (transactional, catch_all):
        await broker.declare_queue(queue)
    requests = (
        valid_v1(1, tags=["2fa"], message_id="code"),
        bulk(2),
        # routerd rejects it (no recipients): the catch-all, where routerd says why.
        {**valid_v1(3, tags=["2fa"]), "to": [], "message_id": "invalid"},
    )
    stdin = b"\n".join(orjson.dumps(r) for r in requests)
    args = ["-", "--no-check", "--config", str(isolated_config), "--amqp-url", amqp_url]
    result = await routerd_send(args, stdin=stdin)
    assert result.returncode == 0, result.stdout.decode()
    assert f"3 requests sent to {transactional}, {catch_all}: 3 confirmed" in result.stdout.decode()
    got = {
        queue: [orjson.loads(m.body)["message_id"] for m in await broker.drain(queue)]
        for queue in (transactional, catch_all)
    }
    assert got == {transactional: ["code"], catch_all: ["bulk-2", "invalid"]}
