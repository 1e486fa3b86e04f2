"""The cluster tests' own 3-node RabbitMQ cluster: started once per session (about 20 s),
always stopped and deleted at the end. Never the shared broker at 5672."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.cluster import RabbitCluster, available


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    missing = available()
    if missing:
        pytest.skip(missing)
    # Node names unique per test run: two runs at once (or `make cluster-up`) must not meet
    # in epmd under one name.
    folder = tmp_path_factory.mktemp("rabbit-cluster")
    cluster = RabbitCluster(folder, size=3, prefix=f"rt{os.getpid()}n")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
