"""Dropping one process's broker connections (`rabbitmqctl close_connection`), leaving every
other client of the shared broker alone; the process's sockets are found in /proc.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import anyio


def tcp_local_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of `pid`'s TCP sockets connected to `remote_port` (from /proc, no tools)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], cols[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def rabbitmqctl(*args: str) -> str:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


async def broker_connections_of(pid: int, broker_port: int = 5672) -> list[str]:
    """The broker's ids (`<rabbit@host.1.2.3>`) of process `pid`'s AMQP connections.

    Looked up ahead of a close, so that the close itself is one quick `rabbitmqctl` call.
    """
    ports = tcp_local_ports(pid, broker_port)
    listing = await anyio.to_thread.run_sync(
        rabbitmqctl, "list_connections", "--no-table-headers", "pid", "peer_port"
    )
    found = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip().isdigit() and int(parts[1]) in ports:
            found.append(parts[0])
    return found


async def close_connections(connections: Iterable[str], reason: str = "test") -> int:
    """Close these broker connections, broker side, as `rabbitmqctl close_all_connections` would
    close every one; other clients sharing the broker keep theirs. Returns how many."""
    closed = 0
    for connection in connections:
        await anyio.to_thread.run_sync(rabbitmqctl, "close_connection", connection, reason)
        closed += 1
    return closed


async def close_connections_of(pid: int, reason: str = "test", broker_port: int = 5672) -> int:
    """Close, broker side, every AMQP connection process `pid` has; return how many."""
    return await close_connections(await broker_connections_of(pid, broker_port), reason)
