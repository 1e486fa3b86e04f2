"""Whether some rendering of a routing key template matches a queue's binding."""

from __future__ import annotations

from pathlib import Path

import pytest

from routerd.config.bindings import can_reach, receiving_queues
from routerd.config.model import Location, RoutingKeyTemplate

PARTITION = ("$partition",)
WHERE = Location(Path("routes.yaml"), 1, 1)


def template(*parts: str | tuple[str, ...]) -> RoutingKeyTemplate:
    source = "".join(p if isinstance(p, str) else "{" + p[0].lstrip("$") + "}" for p in parts)
    return RoutingKeyTemplate(source, tuple(parts))


@pytest.mark.parametrize(
    ("key", "binding", "exchange", "reaches"),
    [
        (template("eu"), "eu.*", "topic", False),  # * is exactly one word
        (template("eu.x"), "eu.*", "topic", True),
        (template("eu"), "eu.#", "topic", True),  # # may be zero words
        (template("eu"), "#", "topic", True),
        (template("a.b"), "a.#.b", "topic", True),
        (template("a"), "a.#.b", "topic", False),
        (template("a..b"), "a.*.b", "topic", True),  # an empty word is a word
        (template("bulk.", PARTITION), "bulk.*", "topic", True),
        (template("bulk.", PARTITION), "bulk", "topic", False),
        (template("tx.", ("customer",)), "tx.a.b.c", "topic", True),  # a field may hold dots
        (template("tx.", ("customer",)), "rx.#", "topic", False),
        (template(("customer",)), "any.thing", "topic", True),
        (template("x", ("customer",), ".y"), "*.*.y", "topic", True),
        (template("x", ("customer",), ".y"), "*.z", "topic", False),
        (template("tx.", ("customer",)), "tx.", "direct", True),
        (template("tx.", ("customer",)), "rx.1", "direct", False),
        (template("bulk.", PARTITION), "bulk.x", "direct", False),
        (template("bulk.", PARTITION), "bulk.3", "direct", True),
        (template("eu"), "eu", "direct", True),
        (template("eu"), "eu.*", "direct", False),  # a direct binding has no wildcards
    ],
)
def test_can_reach(key: RoutingKeyTemplate, binding: str, exchange: str, reaches: bool) -> None:
    assert can_reach(key, binding, exchange) is reaches


def test_receiving_queues_follow_each_binding() -> None:
    from routerd.config.model import QueueSpec, Target

    def target(kind: str, *queues: QueueSpec, exchange: str = "email") -> Target:
        key = template("bulk.", PARTITION)
        return Target("t", exchange, kind, True, key, None, queues, WHERE)  # type: ignore[arg-type]

    bulk = QueueSpec("email.bulk", binding_key="bulk.*")
    audit = QueueSpec("email.audit", binding_key="#")
    eu = QueueSpec("email.eu", binding_key="eu.*")
    assert receiving_queues(target("topic", bulk, audit, eu), "bulk.3") == [
        "email.bulk",
        "email.audit",
    ]
    assert receiving_queues(target("fanout", bulk, eu), "x") == ["email.bulk", "email.eu"]
    assert receiving_queues(target("direct", QueueSpec("q")), "q") == ["q"]
    assert receiving_queues(target("direct", exchange=""), "email.x") == ["email.x"]
