"""`Publisher`: send requests to routerd's source, each one confirmed by the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from routerd.amqp.connection import BrokerUnavailable as ConnectFailed
from routerd.amqp.options import BrokerOptions
from routerd.amqp.sender import SourceSender
from routerd.client._request import prepare
from routerd.client.errors import (
    BrokerUnavailable,
    NotConfirmed,
    NotConfirmedCause,
    PublishError,
    Unroutable,
)
from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.delivery.errors import PublishFailed
from routerd.delivery.errors import Unroutable as Returned

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_PUBLISH_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 64


class Publisher:
    """Publishes send requests to routerd's source queues: persistent, mandatory, confirmed.

    With `config` (a routes.yaml, loaded as `routerd serve` loads it; a config `routerd lint`
    rejects raises `ConfigError`), every request is first run through routerd's own
    `decide`, and one routerd would reject raises `RequestInvalid` without being sent
    (`check=False` publishes it anyway, to the catch-all source); each request goes to the
    first of the config's sources whose `accepts` holds for it. Without it, `queue` names
    the queue and requests are only published.

    `url` is one broker URL, or for a RabbitMQ cluster one per node (a list, or one string
    separated by commas): each connection goes to the first node that answers, tried in a
    random order, and a lost node is replaced by another at the next send.

    `connect_timeout` bounds how long a send waits for a connection (attempts are retried
    with backoff and jitter within it) before `BrokerUnavailable`; `publish_timeout` how long
    it waits for the broker's confirm before `NotConfirmed`. Use it as an async context
    manager; one Publisher serves any number of concurrent sends on its event loop.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        config: str | Path | None = None,
        queue: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        app_id: str | None = None,
        check: bool = True,
    ) -> None:
        self.table: RouteTable | None = load(Path(config)) if config is not None else None
        if self.table is not None:
            queues = _queues(self.table)
            if queue is not None and queue not in queues:
                raise ValueError(
                    f"queue={queue!r} is not a source of the config ({', '.join(queues)}): "
                    "give one of them"
                )
            # The catch-all: where a request goes that no earlier source accepts.
            queue = self.table.source.queue
        if not queue:
            raise ValueError("say where to publish: config=<routes.yaml> or queue=<name>")
        self.queue = queue
        # False: requests routerd would reject are published anyway (to the catch-all).
        self.check = check
        self.app_id = app_id
        urls = url if isinstance(url, str) else ",".join(url)
        options = BrokerOptions.from_url(urls, publish_timeout=publish_timeout)
        self._options = options
        self._sender = SourceSender(options, queue, ready_timeout=connect_timeout)

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect now; raises BrokerUnavailable when that fails within the connect timeout."""
        try:
            await self._sender.open()
        except ConnectFailed as exc:
            raise BrokerUnavailable(self._options.redacted_url, str(exc.cause)) from None

    async def close(self) -> None:
        await self._sender.close()

    def use_table(self, table: RouteTable) -> None:
        """Check requests against `table` from now on: a route config reloaded after a change.
        Its sources must be the queues this publisher sends to (what each accepts may change)."""
        if self.table is None:
            raise ValueError("this Publisher was built without config=: it checks nothing")
        if _queues(table) != _queues(self.table):
            raise ValueError(
                f"the new route config's sources ({', '.join(_queues(table))}) are not "
                f"{', '.join(_queues(self.table))}, where this publisher sends: restart it "
                "to change the sources"
            )
        self.table = table

    @property
    def connected(self) -> bool:
        """Whether a broker session is open now. False before `connect`, after a loss not
        yet repaired (the next send reconnects), and after `close`."""
        return self._sender.connected

    async def send(
        self, request: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None
    ) -> str:
        """Publish one send request (its JSON body as a mapping); return its message_id once
        the broker confirmed it. `headers` are extra AMQP headers to send with it.

        Raises `RequestInvalid`, `Unroutable`, `NotConfirmed` or `BrokerUnavailable`.
        """
        prepared = prepare(
            request, self.table, headers=headers, app_id=self.app_id, check=self.check
        )
        queue = prepared.queue or self.queue
        try:
            await self._sender.publish(
                prepared.body, prepared.headers, prepared.properties, queue=queue
            )
        except Returned as exc:
            raise Unroutable(prepared.message_id, queue, exc.reply) from None
        except PublishFailed as exc:
            cause = NotConfirmedCause(exc.cause.value)
            raise NotConfirmed(prepared.message_id, cause, exc.detail) from None
        except ConnectFailed as exc:
            raise BrokerUnavailable(self._options.redacted_url, str(exc.cause)) from None
        return prepared.message_id

    async def send_many(
        self,
        requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> list[str | PublishError]:
        """Publish many send requests, at most `max_in_flight` unconfirmed at a time.

        Returns one result per request, in order: its message_id, or the `PublishError` it
        failed with (one failure does not stop the others). For more requests than a list
        of results should hold, use `send_each`.
        """
        results: list[str | PublishError] = []

        def keep(index: int, result: str | PublishError) -> None:
            results.extend([_PENDING] * (index + 1 - len(results)))
            results[index] = result

        await self.send_each(requests, keep, max_in_flight=max_in_flight)
        return results

    async def send_each(
        self,
        requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        on_result: Callable[[int, str | PublishError], None],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        """Publish many send requests, at most `max_in_flight` unconfirmed at a time, calling
        `on_result(index, result)` as each one is done (in completion order): its message_id,
        or the `PublishError` it failed with; one failure does not stop the others.

        `requests` is read lazily, one request each time a slot is free, so a generator
        keeps memory bounded by `max_in_flight` requests however many it yields; an async
        iterable may pace them. Anything that is not a `PublishError` (a request that is not
        a mapping, an `on_result` that raises) is a bug in the caller: it stops the batch
        and propagates, in an ExceptionGroup.
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        slots = asyncio.Semaphore(max_in_flight)

        async def one(index: int, request: Mapping[str, Any]) -> None:
            try:
                result: str | PublishError = await self.send(request)
            except PublishError as exc:
                result = exc
            finally:
                slots.release()
            on_result(index, result)

        pending = _aiter(requests)
        async with asyncio.TaskGroup() as group:
            index = 0
            while True:
                # The slot first: the next request is not even made before it can be sent.
                await slots.acquire()
                try:
                    request = await anext(pending)
                except StopAsyncIteration:
                    break
                group.create_task(one(index, request))
                index += 1


def _queues(table: RouteTable) -> tuple[str, ...]:
    return tuple(source.queue for source in table.sources)


async def _aiter(
    requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
) -> AsyncIterator[Mapping[str, Any]]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


# A placeholder each result slot holds until its send finishes; never returned.
_PENDING = PublishError("pending")
