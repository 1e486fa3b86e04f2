"""Whether some rendering of a routing key template matches a queue's binding."""

from __future__ import annotations

import pytest

from routerd.config.bindings import can_reach
from routerd.config.model import RoutingKeyTemplate

PARTITION = ("$partition",)


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
