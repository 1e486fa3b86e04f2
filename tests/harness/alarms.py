"""Faults of the shared broker itself, always undone: its memory alarm, its restart.

`rabbitmqctl set_vm_memory_high_watermark` with a tiny fraction makes every connection that
publishes blocked (`connection.blocked`), as a broker short of memory does. The watermark is
read first and always restored, so the broker is left as found even when a test fails.
`rabbitmqctl stop_app` stops the broker application (every connection dropped, the node
left running); `start_app` always follows, and the block waits until it is up again.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from tests.harness.connections import rabbitmqctl

TINY = "0.0000001"


def memory_watermark() -> list[str]:
    """The current watermark as `set_vm_memory_high_watermark`'s arguments."""
    text = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", text)
    if absolute:
        return ["absolute", absolute.group(1)]
    float(text)  # a fraction, or this is not a value we know how to put back
    return [text]


def alarms() -> str:
    return rabbitmqctl("eval", "rabbit_alarm:get_alarms().").strip()


@asynccontextmanager
async def memory_alarm() -> AsyncIterator[None]:
    """The broker's memory alarm raised for the block's duration, then cleared."""
    before = await anyio.to_thread.run_sync(memory_watermark)
    try:
        await anyio.to_thread.run_sync(rabbitmqctl, "set_vm_memory_high_watermark", TINY)
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(rabbitmqctl, "set_vm_memory_high_watermark", *before)


@asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """The broker application stopped for the block's duration; started again, and up, after."""
    try:
        await anyio.to_thread.run_sync(rabbitmqctl, "stop_app")
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(rabbitmqctl, "start_app")
            await anyio.to_thread.run_sync(rabbitmqctl, "await_startup")
