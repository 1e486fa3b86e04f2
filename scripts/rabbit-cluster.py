#!/usr/bin/env python3
"""Start, inspect and remove a local RabbitMQ cluster by hand: the one the cluster tests use.

    .venv/bin/python scripts/rabbit-cluster.py up [--nodes 3] [--port 46000]
    .venv/bin/python scripts/rabbit-cluster.py status
    .venv/bin/python scripts/rabbit-cluster.py stop-app 1 | start-app 1 | kill 1 | restart 1
    .venv/bin/python scripts/rabbit-cluster.py down

`up` prints the comma-separated URLs to give routerd (`--amqp-url` / ROUTERD_AMQP_URL) and
the client. Nodes are rcluster1@localhost... of the installed rabbitmq-server, on loopback
ports from --port + 1 (AMQP) and --port + 101 (distribution), with their data, logs and
Erlang cookie under --dir (default /tmp/routerd-cluster); the shared broker at 5672 is not touched.
`make cluster-up` / `make cluster-down` run `up` and `down`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import (  # noqa: E402 (the repository root is put on the path first)
    DEFAULT_FIRST_PORT,
    ClusterError,
    RabbitCluster,
    available,
)

DEFAULT_DIR = Path("/tmp/routerd-cluster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the nodes live")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the nodes and form the cluster")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--port", type=int, default=DEFAULT_FIRST_PORT, help="ports start above it")
    sub.add_parser("status", help="the nodes, their URLs, the cluster's running nodes")
    sub.add_parser("down", help="stop every node and delete --dir")
    for action in ("stop-app", "start-app", "kill", "restart"):
        one = sub.add_parser(action, help=f"{action} one node (its number, 1..N)")
        one.add_argument("node", type=int)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ClusterError as exc:
        print(f"rabbit-cluster: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if args.command == "up":
        missing = available()
        if missing:
            print(f"rabbit-cluster: {missing}", file=sys.stderr)
            return 1
        if (folder / "cluster.json").exists():
            print(f"rabbit-cluster: a cluster already lives in {folder}; run `down` first")
            return 1
        cluster = RabbitCluster(folder, size=args.nodes, prefix="rcluster", first_port=args.port)
        cluster.plan()
        cluster.save()
        try:
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        status(cluster)
        return 0
    if not (folder / "cluster.json").exists():
        print(f"rabbit-cluster: no cluster in {folder} (start one with `up`)", file=sys.stderr)
        return 1 if args.command != "down" else 0
    cluster = RabbitCluster.load(folder)
    if args.command == "status":
        status(cluster)
    elif args.command == "down":
        cluster.destroy()
        print(f"stopped {len(cluster.nodes)} nodes, removed {folder}")
    else:
        node = cluster.nodes[args.node - 1]
        {
            "stop-app": cluster.stop_app,
            "start-app": cluster.start_app,
            "kill": cluster.kill,
            "restart": cluster.restart,
        }[args.command](node)
        print(f"{args.command} {node.name}: done")
    return 0


def status(cluster: RabbitCluster) -> None:
    for node in cluster.nodes:
        print(f"{node.name:22} {node.url}   log {node.log_file}")
    try:
        running = sorted(cluster.running_nodes(cluster.nodes[0]))
    except (ClusterError, subprocess.TimeoutExpired) as exc:
        running = [f"(cannot ask {cluster.nodes[0].name}: {exc})"]
    print(f"running nodes: {', '.join(running)}")
    print(f"ROUTERD_AMQP_URL={','.join(cluster.urls)}")


if __name__ == "__main__":
    sys.exit(main())
