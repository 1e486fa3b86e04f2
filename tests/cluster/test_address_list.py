"""The quick form of the cluster tests, on the shared broker: a URL list whose other entries
are dead still gets routerd and the client to the one broker that answers, whatever the
order they try them in."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from routerd.client import Publisher
from routerd.observe.logs import redact_url
from tests.factories import expected_category, valid_v1
from tests.harness.accounting import QueueNames
from tests.harness.broker import Broker
from tests.harness.daemon import metric_sum, running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


def dead_url() -> str:
    # A port bound but never listening: connecting is refused at once, like a dead node.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"


async def test_serve_and_the_client_skip_dead_nodes_in_the_list(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    urls = [dead_url(), amqp_url, dead_url()]
    requests = [valid_v1(seed) for seed in range(20)]
    async with running_daemon(isolated_config, ",".join(urls), log_dir) as daemon:
        async with Publisher(urls, config=isolated_config) as publisher:
            for request in requests:
                await publisher.send(request)

        async def routed() -> float:
            return metric_sum(await daemon.metrics(), "routerd_source_acks_total")

        await wait_for(routed, lambda n: n >= len(requests), within=30, what="all routed")
        assert await daemon.stop(within=30) == 0
    depths = await broker.depths(names.targets)
    by_category = {names.category_of(q): n for q, n in depths.items() if n}
    expected: dict[str, int] = {}
    for request in requests:
        category = expected_category(request)
        expected[category] = expected.get(category, 0) + 1
    assert by_category == expected
    log = daemon.log_text()
    assert f"connected broker={redact_url(amqp_url)}" in log
    assert ":guest@" not in log, "a password reached the log"
