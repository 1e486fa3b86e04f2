"""Waiting on a condition: polled under `anyio.fail_after`, never a fixed sleep."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

POLL = 0.05

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float,
    what: str,
    interval: float = POLL,
) -> T:
    """Poll `probe` until `done(value)`; on timeout fail naming `what` and the last value."""
    last: T | None = None
    try:
        with anyio.fail_after(within):
            while True:
                value = await probe()
                last = value
                if done(value):
                    return value
                await anyio.sleep(interval)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {within}s waiting for {what}; last: {last!r}"
        ) from None
