"""Counting every request by body (and by its `x-test-seq` header) once the daemon is done,
to name what was lost, doubled or misrouted; and a steady publisher to put load on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tests.harness.broker import Broker, Outgoing, Received
from tests.harness.config import catch_all_source, read_config, source_entries
from tests.harness.wait import wait_for


@dataclass(frozen=True)
class QueueNames:
    """The queues of a (shipped-shape) routes.yaml, by the category that ends in each."""

    # The catch-all source (the last; email.send, prefetch 256 in the shipped config), where
    # tests publishing straight to the broker put their requests: routerd routes a request
    # the same from any source. `sources` is every one, in order.
    source: str
    sources: tuple[str, ...]
    transactional: str
    bulk: str
    rejected: str

    @classmethod
    def of(cls, config: Path) -> QueueNames:
        data = read_config(config)
        return cls(
            source=catch_all_source(data)["queue"],
            sources=tuple(source["queue"] for source in source_entries(data)),
            transactional=data["targets"]["transactional"]["queues"][0]["name"],
            bulk=data["targets"]["bulk"]["queues"][0]["name"],
            rejected=data["rejected"]["queues"][0]["name"],
        )

    @property
    def targets(self) -> tuple[str, str, str]:
        return (self.transactional, self.bulk, self.rejected)

    def of_category(self, category: str) -> str:
        return {"transactional": self.transactional, "bulk": self.bulk}.get(category, self.rejected)

    def category_of(self, queue: str) -> str:
        return {self.transactional: "transactional", self.bulk: "bulk"}.get(queue, "rejected")


SEQ = "x-test-seq"


def numbered(bodies: Iterable[bytes], start: int = 0) -> list[Outgoing]:
    """Bodies with an `x-test-seq` header, so a missing or doubled request can be named."""
    return [Outgoing(body, {SEQ: start + i}) for i, body in enumerate(bodies)]


@dataclass
class Accounting:
    """Expected (category, body) multiset against what the queues held."""

    expected: Counter[tuple[str, bytes]]
    actual: Counter[tuple[str, bytes]]
    received: list[Received]

    @classmethod
    def of(
        cls, expected: Iterable[tuple[str, bytes]], received: Iterable[Received], names: QueueNames
    ) -> Accounting:
        got = list(received)
        return cls(
            expected=Counter(expected),
            actual=Counter((names.category_of(r.queue), r.body) for r in got),
            received=got,
        )

    @property
    def missing(self) -> Counter[tuple[str, bytes]]:
        return self.expected - self.actual

    @property
    def extra(self) -> Counter[tuple[str, bytes]]:
        return self.actual - self.expected

    def lost(self) -> Counter[bytes]:
        """Bodies found fewer times, in any queue, than they were published."""
        return _by_body(self.expected) - _by_body(self.actual)

    def duplicates(self) -> int:
        """Copies beyond the published count, of bodies that were published."""
        want = _by_body(self.expected)
        return sum(n for body, n in (_by_body(self.actual) - want).items() if body in want)

    def misrouted(self) -> list[tuple[str, str, bytes]]:
        """(expected category, actual category, body) for bodies in the wrong queue."""
        missing = self.missing
        out = []
        for (got_cat, body), _ in self.extra.items():
            for (want_cat, want_body), _ in missing.items():
                if want_body == body and want_cat != got_cat:
                    out.append((want_cat, got_cat, body))
                    break
        return out

    def describe(self, examples: int = 5) -> str:
        seqs: dict[bytes, list[Any]] = {}
        for r in self.received:
            seqs.setdefault(r.body, []).append(r.headers.get(SEQ))
        lost = self.lost()
        lines = [
            f"published {sum(self.expected.values())}, found {sum(self.actual.values())}; "
            f"lost {sum(lost.values())}, duplicates {self.duplicates()}, "
            f"misrouted {len(self.misrouted())}, "
            f"surplus (cat, body) pairs {sum(self.extra.values())}",
        ]
        for body, n in list(lost.items())[:examples]:
            lines.append(f"  lost x{n}: {body[:100]!r}")
        for want, got, body in self.misrouted()[:examples]:
            lines.append(f"  misrouted {want} -> {got}: {body[:100]!r}")
        for (cat, body), n in list(self.extra.items())[:examples]:
            lines.append(f"  extra x{n} in {cat} (seq {seqs.get(body)}): {body[:100]!r}")
        return "\n".join(lines)

    @property
    def exact(self) -> bool:
        return self.expected == self.actual


def _by_body(counts: Counter[tuple[str, bytes]]) -> Counter[bytes]:
    """(category, body) counts summed over the categories: where a body went does not count."""
    total = Counter[bytes]()
    for (_, body), n in counts.items():
        total[body] += n
    return total


async def drain_all(broker: Broker, names: QueueNames) -> list[Received]:
    """Everything in the three target queues (the daemon must have stopped)."""
    got: list[Received] = []
    for queue in names.targets:
        got.extend(await broker.drain(queue))
    return got


async def routed(broker: Broker, names: QueueNames) -> int:
    """Requests in the target queues (rejected included) so far."""
    return sum((await broker.depths(names.targets)).values())


async def wait_routed(
    broker: Broker, names: QueueNames, at_least: int, *, within: float = 60
) -> int:
    """Wait until at least `at_least` requests are routed (polled every 10 ms, so a fault can
    land mid-stream); how many are."""
    return await wait_for(
        lambda: routed(broker, names),
        lambda n: n >= at_least,
        within=within,
        what=f"{at_least} routed",
        interval=0.01,
    )


async def settle(broker: Broker, names: QueueNames, total: int, *, within: float) -> str | None:
    """Wait until the source is empty and the targets hold at least `total` requests.

    Returns None, or on timeout the reason as text instead of failing at once: the caller
    stops the daemon and counts first, so a failure names what was lost or doubled.
    """
    try:
        await wait_for(
            lambda: broker.depths([*names.sources, *names.targets]),
            lambda d: (
                all(d[q] == 0 for q in names.sources) and sum(d[q] for q in names.targets) >= total
            ),
            within=within,
            what=f"an empty source and {total} requests in the targets",
            interval=0.1,
        )
    except AssertionError as e:
        return str(e)
    return None


class SteadyPublisher:
    """Publishes numbered bodies at a steady pace until stopped; `sent` is what was confirmed.

    The pacing sleep sets the load, it waits for nothing.
    """

    def __init__(
        self,
        broker: Broker,
        queue: str,
        make_body: Callable[[int], bytes],
        *,
        rate: float = 500.0,
        batch: int = 25,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.make_body = make_body
        self.interval = batch / rate
        self.batch = batch
        self.sent: list[bytes] = []
        self._stop = anyio.Event()
        self.stopped = anyio.Event()

    def mark(self) -> int:
        """The seq of the next request to be published."""
        return len(self.sent)

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                start = len(self.sent)
                bodies = [self.make_body(start + i) for i in range(self.batch)]
                await self.broker.publish(self.queue, numbered(bodies, start))
                self.sent.extend(bodies)
                with anyio.move_on_after(self.interval):
                    await self._stop.wait()
        finally:
            self.stopped.set()

    async def stop(self) -> int:
        self._stop.set()
        await self.stopped.wait()
        return len(self.sent)
