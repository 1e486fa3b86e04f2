"""Declaring what the route table asks for: the source queue, target exchanges and queues.

Declarations are idempotent on the broker, so routerd simply declares the whole table at
every connect (a restarted broker may have lost non-durable things, and a new broker has
nothing) and before a reloaded table is swapped in (new targets must exist before the
first request is routed to them).
"""

from __future__ import annotations

import logging
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection

from routerd.config.model import QueueSpec, RouteTable, Target

log = logging.getLogger(__name__)

DECLARE_TIMEOUT = 30.0
# What a declaration raises when the broker refuses it (and closes the channel), when the
# channel or connection is already gone, or when the broker does not answer.
_FAILURES = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    TimeoutError,
)


class TopologyError(Exception):
    """The broker refused a declaration; names the queue or exchange and the likely fix."""

    def __init__(self, kind: str, name: str, cause: BaseException) -> None:
        self.kind = kind
        self.name = name
        self.cause = cause
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"cannot declare {self.kind} {self.name!r}: {self.cause!r}"
        if isinstance(self.cause, aiormq.exceptions.ChannelPreconditionFailed):
            text += (
                "; it exists with other settings (type, durability or arguments): change "
                "the config to match it, or delete it on the broker"
            )
        elif isinstance(self.cause, aiormq.exceptions.ChannelNotFoundEntity):
            text += "; it does not exist and the config does not declare it (declare: false)"
        return text


def queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    arguments = dict(spec.arguments)
    # Classic is the broker's default; naming it would make a declaration differ from
    # one of a queue created without the argument.
    if spec.type != "classic":
        arguments.setdefault("x-queue-type", spec.type)
    return arguments


def _targets(table: RouteTable) -> list[Target]:
    seen: dict[str, Target] = {}
    for target in (*table.targets.values(), table.rejected, table.unmatched):
        if target is not None:
            seen.setdefault(target.name, target)
    return list(seen.values())


async def declare_topology(connection: AbstractConnection, table: RouteTable) -> None:
    """Declare everything `table` asks for on a channel of its own, or raise TopologyError.

    A refused declaration closes its channel, so it must not be the consumer's or the
    publisher's.
    """
    channel = await connection.channel(publisher_confirms=False)
    try:
        await _declare(channel, table)
    finally:
        if not channel.is_closed:
            await channel.close()


async def _declare(channel: AbstractChannel, table: RouteTable) -> None:
    queues: set[str] = set()
    for source in table.sources:
        if source.declare:
            await _queue(channel, source.queue_spec)
            queues.add(source.queue)
    exchanges: set[str] = set()
    for target in _targets(table):
        exchange = target.exchange
        if exchange and exchange not in exchanges:
            exchanges.add(exchange)
            await _exchange(channel, target, passive=not target.declare)
        if not (target.declare or exchange == ""):
            continue
        for spec in target.queues:
            if spec.name not in queues:
                queues.add(spec.name)
                await _queue(channel, spec)
            if exchange and spec.binding_key is not None:
                await _bind(channel, spec, exchange)
    log.info(
        "topology declared",
        extra={"exchanges": len(exchanges), "queues": len(queues), "table": table.content_hash},
    )


async def _exchange(channel: AbstractChannel, target: Target, *, passive: bool) -> None:
    # A target that does not declare its exchange is checked passively: publishing to a
    # missing exchange would close the publisher channel on every request.
    try:
        await channel.exchange_declare(
            target.exchange,
            exchange_type=target.exchange_type,
            durable=True,
            passive=passive,
            timeout=DECLARE_TIMEOUT,
        )
    except _FAILURES as exc:
        raise TopologyError("exchange", target.exchange, exc) from None


async def _queue(channel: AbstractChannel, spec: QueueSpec) -> None:
    try:
        await channel.queue_declare(
            spec.name,
            durable=spec.durable,
            arguments=queue_arguments(spec),
            timeout=DECLARE_TIMEOUT,
        )
    except _FAILURES as exc:
        raise TopologyError("queue", spec.name, exc) from None


async def _bind(channel: AbstractChannel, spec: QueueSpec, exchange: str) -> None:
    assert spec.binding_key is not None
    try:
        await channel.queue_bind(
            spec.name, exchange, routing_key=spec.binding_key, timeout=DECLARE_TIMEOUT
        )
    except _FAILURES as exc:
        raise TopologyError("binding of queue", spec.name, exc) from None
