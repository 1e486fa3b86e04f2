"""Opening the broker connection, and the backoff between attempts.

aiormq does not reconnect; routerd does (see `link.py`). The delay between attempts grows
exponentially and is drawn with full jitter, so a fleet of replicas that lost the broker
at the same moment does not come back in lockstep and knock it over again.

With several broker URLs (a cluster), one attempt tries every node once, in a fresh random
order: a dead node refuses at once and the next one is tried without waiting for the
backoff, which is only for "no node answered".
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

import aiormq
from aiormq.abc import AbstractConnection

from routerd.amqp.options import BrokerOptions, redact_urls
from routerd.observe.logs import redact_url

log = logging.getLogger(__name__)


class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(max, min * 2**n))."""

    def __init__(
        self,
        minimum: float,
        maximum: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"backoff needs 0 < minimum <= maximum, got {minimum}, {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng

    def cap(self) -> float:
        # min() before the power would overflow for a broker that stays down for days.
        return min(self.maximum, self.minimum * 2.0 ** min(self.attempt, 64))

    def next(self) -> float:
        delay = self._rng() * self.cap()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached or refused the connection; never shows the password."""

    def __init__(self, url: str, cause: BaseException | str) -> None:
        self.url = redact_urls(url)
        self.cause = cause
        super().__init__(str(self))

    def describe_cause(self) -> str:
        return self.cause if isinstance(self.cause, str) else _describe(self.cause)

    def __str__(self) -> str:
        return f"cannot connect to {self.url}: {self.describe_cause()}"


def shuffled(urls: Sequence[str]) -> list[str]:
    # Random, not round-robin: replicas that start together spread over the nodes.
    return random.sample(list(urls), len(urls))


async def connect(
    options: BrokerOptions, order: Callable[[Sequence[str]], list[str]] = shuffled
) -> AbstractConnection:
    """Open one AMQP connection as the options say, to the first of their broker URLs (in
    `order`) that accepts it; raise BrokerUnavailable naming each URL's failure."""
    failures: list[BrokerUnavailable] = []
    for url in order(options.urls):
        try:
            connection = await _connect_one(options, url)
        except BrokerUnavailable as exc:
            failures.append(exc)
            continue
        if len(options.urls) > 1:
            log.info("connected", extra={"broker": redact_url(url)})
        return connection
    if len(failures) == 1:
        raise failures[0]
    causes = "; ".join(f"{failure.url}: {failure.describe_cause()}" for failure in failures)
    raise BrokerUnavailable(options.url, f"no broker answered ({causes})")


async def _connect_one(options: BrokerOptions, url: str) -> AbstractConnection:
    try:
        async with asyncio.timeout(options.connect_timeout):
            # The heartbeat and TLS files travel in the URL's query, where aiormq reads them.
            connection: AbstractConnection = await aiormq.connect(
                options.client_url(url),
                client_properties={"connection_name": options.connection_name},
            )
    except TimeoutError:
        raise BrokerUnavailable(url, f"no answer within {options.connect_timeout:g}s") from None
    except (aiormq.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(url, exc) from None
    return connection


def _describe(exc: BaseException) -> str:
    # aiormq's exceptions render their class and a message template filled with args;
    # repr() of them is the most informative text they have.
    text = repr(exc) if isinstance(exc, aiormq.exceptions.AMQPError) else str(exc)
    return text or type(exc).__name__
