"""A RabbitMQ cluster of its own on loopback: N nodes of the Debian rabbitmq-server, each on
its own ports and in its own folder, sharing one fresh Erlang cookie; stop, kill and bring
back single nodes; ask who leads a quorum queue.

Nothing here touches the shared broker (rabbit@localhost at 5672): the nodes are named
`<prefix>1@localhost`... (the tests put their pid in the prefix), listen on ports picked
free at start, keep their data, logs, config, plugin list and cookie (the `HOME` of the
node and of `rabbitmqctl`) under one folder, and read an empty env file instead of
/etc/rabbitmq/rabbitmq-env.conf (whose NODENAME is the shared broker's). `rabbitmqctl`
itself takes ports 35672-35682 for its own distribution (the shared broker's 25672 +
10000), so node ports are never picked there.

Synchronous on purpose: tests call it through `anyio.to_thread`, and scripts/rabbit-cluster.py
uses it to start a cluster by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

RABBITMQ_BIN = Path(os.environ.get("ROUTERD_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
SERVER = RABBITMQ_BIN / "rabbitmq-server"
CTL = RABBITMQ_BIN / "rabbitmqctl"
DEFAULT_FIRST_PORT = 46000
# rabbitmqctl's own distribution listens in this range; a node must not take it.
_CLI_PORTS = range(35672, 35683)
START_TIMEOUT = 120.0
T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster could not be started or driven; the text says which command said what."""


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    for tool in (SERVER, CTL):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed (Debian: apt-get install rabbitmq-server)"
    return None


@dataclass(frozen=True)
class Node:
    name: str  # rtest1@localhost
    amqp_port: int
    dist_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


@dataclass
class RabbitCluster:
    """N RabbitMQ nodes under `folder`; `start()` forms the cluster, `destroy()` removes it."""

    folder: Path
    size: int = 3
    prefix: str = "rtest"
    first_port: int | None = None
    nodes: list[Node] = field(default_factory=list)
    _servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- building ---------------------------------------------------------------------

    def plan(self) -> None:
        """Pick free ports and write each node's config, cookie and plugin list."""
        self.folder.mkdir(parents=True, exist_ok=True)
        home = self.folder / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(32)))
            # Erlang refuses a cookie file others can read.
            cookie.chmod(0o400)
        (self.folder / "rabbitmq-env.conf").write_text("# empty: not /etc/rabbitmq's\n")
        # No plugins: no management or Prometheus listener to clash with the shared broker.
        (self.folder / "enabled_plugins").write_text("[].\n")
        base = _free_base(self.first_port or DEFAULT_FIRST_PORT, self.size)
        self.nodes = []
        for i in range(1, self.size + 1):
            node = Node(
                name=f"{self.prefix}{i}@localhost",
                amqp_port=base + i,
                dist_port=base + 100 + i,
                folder=self.folder / f"{self.prefix}{i}",
            )
            node.folder.mkdir(exist_ok=True)
            (node.folder / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
                # A paused minority stops serving rather than diverging; the default for
                # a cluster of three on one host is fine, said here to be explicit.
                "cluster_partition_handling = pause_minority\n"
                "log.console = false\n"
                "log.file.level = info\n"
            )
            self.nodes.append(node)

    def start(self) -> None:
        """Start every node in parallel, then join nodes 2..N to node 1."""
        if not self.nodes:
            self.plan()
        _parallel(self._boot, self.nodes)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        self.wait_running(self.nodes)

    def _boot(self, node: Node) -> None:
        self.spawn(node)
        self.await_startup(node)

    def spawn(self, node: Node) -> None:
        """Start `node`'s server process (its data folder is kept: a restart rejoins)."""
        node.pid_file.unlink(missing_ok=True)
        out = (node.folder / "server.out").open("ab")
        self._servers[node.name] = subprocess.Popen(
            [str(SERVER)],
            env=self.node_env(node),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=node.folder,
            start_new_session=True,  # a Ctrl-C on the test run must not reach it first
        )
        out.close()

    def await_startup(self, node: Node, within: float = START_TIMEOUT) -> None:
        # `await_startup` fails at once while the node is not yet registered with epmd.
        deadline = time.monotonic() + within
        last = ""
        while time.monotonic() < deadline:
            server = self._servers.get(node.name)
            if server is not None and server.poll() is not None:
                raise ClusterError(
                    f"{node.name} exited with {server.returncode} while starting:\n"
                    + _tail(node.folder / "server.out")
                )
            done = self._run_ctl(node, "await_startup", "--timeout", "30", check=False)
            if done.returncode == 0:
                return
            last = (done.stdout + done.stderr).strip()[-800:]
            time.sleep(0.5)
        raise ClusterError(f"{node.name} did not start within {within:g}s: {last}")

    # --- driving ------------------------------------------------------------------------

    def node_env(self, node: Node | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.folder / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_MNESIA_BASE=str(node.folder / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.folder / "log"),
                RABBITMQ_CONFIG_FILE=str(node.folder / "rabbitmq.conf"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
                RABBITMQ_PID_FILE=str(node.pid_file),
                # Distribution on loopback only, like the node's AMQP listener.
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
        return env

    def _run_ctl(
        self, node: Node, *args: str, check: bool = True, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(CTL), "-q", "-n", node.name, *args],
            env=self.node_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-800:]}"
            )
        return done

    def ctl(self, node: Node, *args: str) -> str:
        """`rabbitmqctl -q -n NODE ARGS...` with the cluster's cookie; its stdout."""
        return self._run_ctl(node, *args).stdout

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name or node.name.split("@")[0] == name:
                return node
        raise KeyError(name)

    def node_on_port(self, port: int) -> Node:
        return next(node for node in self.nodes if node.amqp_port == port)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def stop_app(self, node: Node) -> None:
        """The RabbitMQ application stops (clients are disconnected); Erlang stays up."""
        self.ctl(node, "stop_app")

    def start_app(self, node: Node) -> None:
        self.ctl(node, "start_app")
        self.wait_running([node])

    def kill(self, node: Node) -> int:
        """kill -9 of the node's Erlang VM: no goodbye to clients or peers. Returns the pid."""
        pid = node.pid()
        if pid is None:
            raise ClusterError(f"{node.name} has no pid file at {node.pid_file}")
        os.kill(pid, signal.SIGKILL)
        server = self._servers.pop(node.name, None)
        if server is not None:
            server.wait(timeout=30)
        return pid

    def restart(self, node: Node) -> None:
        """Start a killed node again from its data folder; it rejoins the cluster."""
        self.spawn(node)
        self.await_startup(node)
        self.wait_running([node])

    def running_nodes(self, via: Node) -> set[str]:
        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))

    def wait_running(self, nodes: Iterable[Node], within: float = 60.0) -> None:
        """Until every node of the cluster sees `nodes` as running members."""
        asked = list(nodes)
        want = {node.name for node in asked}
        deadline = time.monotonic() + within
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = set.intersection(*(self.running_nodes(node) for node in asked))
            if want <= seen:
                return
            time.sleep(0.2)
        raise ClusterError(
            f"nodes {sorted(want)} not running after {within:g}s: saw {sorted(seen)}"
        )

    def queue_info(self, via: Node, queue: str) -> dict[str, Any]:
        """`list_queues` of one queue from `via`: type, leader, members, online, messages."""
        rows = json.loads(
            self.ctl(
                via,
                "list_queues",
                "name",
                "type",
                "leader",
                "members",
                "online",
                "messages",
                "--formatter",
                "json",
            )
        )
        for row in rows:
            if row.get("name") == queue:
                return dict(row)
        raise ClusterError(f"no queue {queue!r} on {via.name}")

    def leader_of(self, queue: str, via: Node) -> Node:
        return self.node(str(self.queue_info(via, queue)["leader"]))

    # --- tearing down -------------------------------------------------------------------

    def destroy(self) -> None:
        """Stop every node (shutdown, else kill -9) and delete the folder."""
        _parallel(self._shutdown, self.nodes)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _shutdown(self, node: Node) -> None:
        pid = node.pid()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run_ctl(node, "shutdown", check=False, timeout=60)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        server = self._servers.pop(node.name, None)
        if server is not None:
            server.kill()
            server.wait(timeout=30)

    # --- saving, for scripts/rabbit-cluster.py ------------------------------------------

    def save(self) -> None:
        state = {
            "size": self.size,
            "prefix": self.prefix,
            "nodes": [
                {"name": n.name, "amqp_port": n.amqp_port, "dist_port": n.dist_port}
                for n in self.nodes
            ],
        }
        (self.folder / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> RabbitCluster:
        state = json.loads((folder / "cluster.json").read_text())
        cluster = cls(folder=folder, size=state["size"], prefix=state["prefix"])
        cluster.nodes = [
            Node(n["name"], n["amqp_port"], n["dist_port"], folder / n["name"].split("@")[0])
            for n in state["nodes"]
        ]
        return cluster


def _free_base(start: int, size: int) -> int:
    """A base port such that base+1..base+size and base+101..base+100+size are free."""
    base = start
    for _ in range(50):
        ports = [base + i for i in range(1, size + 1)] + [
            base + 100 + i for i in range(1, size + 1)
        ]
        if all(p not in _CLI_PORTS and _port_free(p) for p in ports):
            return base
        base += 200
    raise ClusterError(f"no free block of ports from {start} up")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the node's listener binds: a port in TIME_WAIT from the last cluster is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def _parallel(work: Callable[[Node], None], nodes: Iterable[Node]) -> None:
    nodes = list(nodes)
    if not nodes:
        return
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        for future in [pool.submit(work, node) for node in nodes]:
            future.result()


def describe(cluster: RabbitCluster) -> Mapping[str, Any]:
    return {
        "folder": str(cluster.folder),
        "nodes": {n.name: n.url for n in cluster.nodes},
        "urls": ",".join(cluster.urls),
    }
