"""Black-box helpers for tests that run `routerd serve` as a subprocess against a real broker.

- `daemon`: `running_daemon` starts `routerd serve` on a free port, waits for /readyz and
  always kills it at the end (printing its log tail, which pytest shows when a test fails).
- `broker`: `Broker`, the test's own AMQP connection: publish with publisher confirms, queue
  depth by passive declare, drain a queue exactly, delete the test's queues and exchanges.
- `accounting`: `settle`, `Accounting`, `drain_all`: wait for the daemon to finish, then count
  every request by body (and by its `x-test-seq` header) to name what was lost, doubled,
  misrouted; `SteadyPublisher` for load.
- `connections`: `broker_connections_of` / `close_connections` drop one process's broker
  connections (`rabbitmqctl close_connection`), leaving every other client alone.
- `config`: read/write routes.yaml, build a Kubernetes ConfigMap-style volume and swap it.
- `wait`: `wait_for`, a condition polled under `anyio.fail_after`, never a fixed sleep.

Everything is re-exported here, so `from tests.harness import X` works for any of them.
"""

from __future__ import annotations

from tests.harness.accounting import (
    SEQ,
    Accounting,
    QueueNames,
    SteadyPublisher,
    drain_all,
    numbered,
    settle,
)
from tests.harness.broker import Broker, Outgoing, Received, plain, topology
from tests.harness.config import (
    configmap_update,
    dump_config,
    make_configmap,
    read_config,
    write_by_rename,
    write_in_place,
)
from tests.harness.connections import (
    broker_connections_of,
    close_connections,
    close_connections_of,
    rabbitmqctl,
    tcp_local_ports,
)
from tests.harness.daemon import (
    ROOT,
    VENV_BIN,
    Daemon,
    DaemonExited,
    free_port,
    http_get,
    metric_sum,
    routerd_available,
    routerd_command,
    running_daemon,
    start_api,
    start_daemon,
)
from tests.harness.wait import POLL, wait_for

__all__ = [
    "POLL",
    "ROOT",
    "SEQ",
    "VENV_BIN",
    "Accounting",
    "Broker",
    "Daemon",
    "DaemonExited",
    "Outgoing",
    "QueueNames",
    "Received",
    "SteadyPublisher",
    "broker_connections_of",
    "close_connections",
    "close_connections_of",
    "configmap_update",
    "drain_all",
    "dump_config",
    "free_port",
    "http_get",
    "make_configmap",
    "metric_sum",
    "numbered",
    "plain",
    "rabbitmqctl",
    "read_config",
    "routerd_available",
    "routerd_command",
    "running_daemon",
    "settle",
    "start_api",
    "start_daemon",
    "tcp_local_ports",
    "topology",
    "wait_for",
    "write_by_rename",
    "write_in_place",
]
