"""`BlockingPublisher`: the same publisher for synchronous code (Flask, Django, scripts).

It runs a `Publisher` on an event loop of its own, in a thread of its own (anyio's blocking
portal); every call hands its work to that loop and waits for the answer. Calls from many
threads at once are safe and are published concurrently on the one connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from routerd.client._publisher import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_PUBLISH_TIMEOUT,
    Publisher,
)
from routerd.client.errors import PublishError


class BlockingPublisher:
    """`Publisher`'s methods as blocking calls; use it as a context manager (or call
    `close()`). Arguments and errors are the same as `Publisher`'s."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        config: str | Path | None = None,
        queue: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        app_id: str | None = None,
    ) -> None:
        # Built here, in the caller's thread: a bad config or URL raises at once.
        self._publisher = Publisher(
            url,
            config=config,
            queue=queue,
            connect_timeout=connect_timeout,
            publish_timeout=publish_timeout,
            app_id=app_id,
        )
        self._stack = contextlib.ExitStack()
        self._portal: BlockingPortal | None = None
        # Opening and closing from two threads at once must not start two loops.
        self._lifecycle = threading.Lock()

    @property
    def queue(self) -> str:
        return self._publisher.queue

    def __enter__(self) -> BlockingPublisher:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Start the loop thread and connect; raises BrokerUnavailable like `Publisher`."""
        with self._lifecycle:
            if self._portal is not None:
                return
            portal = self._stack.enter_context(start_blocking_portal("asyncio"))
            try:
                portal.call(self._publisher.connect)
            except BaseException:
                self._stack.close()
                raise
            self._portal = portal

    def close(self) -> None:
        """Close the connection and stop the loop thread; sends in flight finish first."""
        with self._lifecycle:
            portal, self._portal = self._portal, None
            if portal is None:
                return
            try:
                portal.call(self._publisher.close)
            finally:
                self._stack.close()

    def send(self, request: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """`Publisher.send`, blocking until the broker confirmed."""
        return self._ready().call(lambda: self._publisher.send(request, headers=headers))

    def send_many(
        self,
        requests: Iterable[Mapping[str, Any]],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> list[str | PublishError]:
        """`Publisher.send_many`, blocking until every request has its result.

        `requests` is read on the publisher's loop thread: a generator must not need the
        calling thread's state.
        """
        return self._ready().call(
            lambda: self._publisher.send_many(requests, max_in_flight=max_in_flight)
        )

    def send_each(
        self,
        requests: Iterable[Mapping[str, Any]],
        on_result: Callable[[int, str | PublishError], None],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        """`Publisher.send_each`, blocking until every request has its result.

        `requests` is read and `on_result` called on the publisher's loop thread: neither may
        block, nor need the calling thread's state.
        """
        self._ready().call(
            lambda: self._publisher.send_each(requests, on_result, max_in_flight=max_in_flight)
        )

    def _ready(self) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            raise RuntimeError("BlockingPublisher is not open: use `with BlockingPublisher(...)`")
        return portal
