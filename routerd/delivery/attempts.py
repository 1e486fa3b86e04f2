"""Failed deliveries per send request, so that a failing publish is not retried forever."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from routerd.delivery.outcome import Delivery
from routerd.pipeline.envelope import Envelope


class AttemptCounter:
    """Failed deliveries per request for queues that do not count them (classic queues).

    Memory is bounded: the oldest entries go first once `capacity` is reached. Counts are
    per process, so with many replicas a request may be tried up to (replicas x bound)
    times; quorum queues count exactly and are what the shipped config uses.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._failures: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def key(envelope: Envelope) -> str:
        message_id = envelope.properties.get("message_id")
        if isinstance(message_id, str) and message_id:
            return "id:" + message_id
        return "body:" + hashlib.blake2b(envelope.body, digest_size=16).hexdigest()

    def prior(self, delivery: Delivery) -> int:
        if delivery.delivery_count is not None:
            return delivery.delivery_count
        if not delivery.redelivered or not self._failures:
            return 0
        return self._failures.get(self.key(delivery.envelope), 0)

    def failed(self, delivery: Delivery) -> None:
        if delivery.delivery_count is not None:
            return
        key = self.key(delivery.envelope)
        self._failures[key] = self._failures.pop(key, 0) + 1
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def forget(self, delivery: Delivery) -> None:
        if delivery.redelivered and self._failures:
            self._failures.pop(self.key(delivery.envelope), None)

    def __len__(self) -> int:
        return len(self._failures)
