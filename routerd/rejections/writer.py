"""Batched, acknowledged inserts: each delivery waits until its row is committed.

Every delivery handler calls `record()`, which queues the row and returns once the
transaction holding it committed. One writer task takes whatever is queued (at most
`batch_size` rows) and inserts it in one transaction; while it commits, the next batch
gathers, so batches grow with the load and a lone rejection is written at once.

When the database fails, the writer keeps the batch and tries again after a backoff, and
nobody's `record()` returns: no delivery is acked, so nothing is lost, and the broker's
prefetch bounds how many rows can wait. A handler that goes away (its channel closed, the
broker will deliver it again) cancels its wait, and its row is dropped from the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from routerd.amqp.connection import Backoff
from routerd.rejections.record import Rejection

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256


class Store(Protocol):
    async def add(self, batch: list[Rejection]) -> int: ...


class BatchWriter:
    """Inserts queued rows in batches; `record()` returns once its row is committed."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backoff: Backoff | None = None,
        on_written: Callable[[int, int], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._store = store
        self.batch_size = batch_size
        self._backoff = backoff if backoff is not None else Backoff(0.2, 10.0)
        # Told (rows written, rows already there) after each commit; and each failure.
        self._on_written = on_written
        self._on_failed = on_failed
        self._queued: list[tuple[Rejection, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        # False from a failed insert until the next commit: readiness reports it.
        self.healthy = True

    def __len__(self) -> int:
        return len(self._queued)

    async def record(self, rejection: Rejection) -> None:
        """Return once `rejection` is committed (or was there already)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((rejection, done))
        self._wake.set()
        await done

    async def run(self) -> None:
        """Write until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queued:
                batch = self._queued[: self.batch_size]
                del self._queued[: self.batch_size]
                await self._write(batch)

    async def _write(self, batch: list[tuple[Rejection, asyncio.Future[None]]]) -> None:
        while True:
            # A waiter cancelled meanwhile: its delivery returns to the queue unacked.
            batch = [(row, done) for row, done in batch if not done.done()]
            if not batch:
                return
            try:
                new = await self._store.add([row for row, _ in batch])
            except Exception as exc:
                self.healthy = False
                delay = round(self._backoff.next(), 3)
                log.error(
                    "writing rejections failed; their deliveries wait unacked",
                    extra={"rows": len(batch), "error": _describe(exc), "retry_in": delay},
                )
                if self._on_failed is not None:
                    self._on_failed(exc)
                await asyncio.sleep(delay)
                continue
            if not self.healthy:
                log.info("writing rejections again", extra={"rows": len(batch)})
            self.healthy = True
            self._backoff.reset()
            if self._on_written is not None:
                self._on_written(new, len(batch) - new)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            return


def _describe(exc: BaseException) -> str:
    # SQLAlchemy appends the statement and its parameters (bodies) to its messages: the
    # first line says what went wrong without flooding the log.
    text = str(exc).split("\n", 1)[0] or type(exc).__name__
    return text[:500]
