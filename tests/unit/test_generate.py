"""The synthetic request stream of `routerd send --generate` (routerd/ops/generate.py):
repeatable with a seed, skewed towards a few customers, the shares of the mix within
tolerance, varied sizes, and each request decided by the shipped config as labelled."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.ops.generate import (
    BULK_RECIPIENTS,
    SECURITY_TAGS,
    Expected,
    Flaw,
    Generated,
    Mix,
    generate,
    requests,
)
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope, ReasonCode

ROOT = Path(__file__).resolve().parents[2]
COUNT = 6000


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load(ROOT / "config" / "routes.yaml")


@pytest.fixture(scope="module")
def sample() -> list[Generated]:
    return list(generate(COUNT, seed=7))


def share(sample: list[Generated], predicate: Callable[[Generated], bool]) -> float:
    return sum(1 for g in sample if predicate(g)) / len(sample)


def test_the_same_seed_gives_the_same_requests_and_another_seed_others() -> None:
    first = [orjson.dumps(r) for r in requests(300, seed=11)]
    assert first == [orjson.dumps(r) for r in requests(300, seed=11)]
    assert first != [orjson.dumps(r) for r in requests(300, seed=12)]
    # A longer run starts with the shorter one: a count does not change what comes first.
    assert first == [orjson.dumps(r) for r in requests(400, seed=11)][:300]


def test_message_ids_are_unique_in_a_run(sample: list[Generated]) -> None:
    ids = [g.request["message_id"] for g in sample]
    assert len(set(ids)) == len(ids)
    assert [g.index for g in sample] == list(range(COUNT))


def test_a_few_customers_send_most_requests(sample: list[Generated]) -> None:
    by_customer = Counter(g.request["customer_id"] for g in sample)
    counts = sorted(by_customer.values(), reverse=True)
    # Zipf with skew 1.2 over 1000 customers: the top 10 send about 60% of the traffic,
    # the busiest one about 20%, and the long tail still shows up.
    assert sum(counts[:10]) / COUNT > 0.5
    assert 0.12 < counts[0] / COUNT < 0.3
    assert len(by_customer) > 200
    assert by_customer.most_common(1)[0][0] == "cus-00001"


def test_no_skew_spreads_customers_evenly() -> None:
    flat = Counter(
        r["customer_id"] for r in requests(5000, seed=3, mix=Mix(customers=10, skew=0, invalid=0))
    )
    assert len(flat) == 10
    assert max(flat.values()) < 2 * min(flat.values())


def test_the_shares_of_the_mix_hold_within_tolerance(sample: list[Generated]) -> None:
    mix = Mix()
    valid = [g for g in sample if g.flaw is None]
    assert share(sample, lambda g: g.expected is Expected.REJECTED) == pytest.approx(
        mix.invalid, abs=0.015
    )
    # Security requests are never broadcast nor large, so those shares are of the rest.
    not_security = (1 - mix.security) * (1 - mix.invalid)
    broadcast = share(sample, lambda g: g.flaw is None and g.request.get("stream") == "broadcast")
    assert broadcast == pytest.approx(mix.broadcast * not_security, abs=0.02)
    large = share(sample, lambda g: g.flaw is None and g.recipients > BULK_RECIPIENTS)
    assert large == pytest.approx(mix.large * not_security, abs=0.015)
    security = share(
        sample,
        lambda g: g.flaw is None and any(t in SECURITY_TAGS for t in g.request.get("tags", [])),
    )
    assert security == pytest.approx(mix.security * (1 - mix.invalid), abs=0.015)
    bulk = sum(1 for g in valid if g.expected is Expected.BULK) / COUNT
    assert 0.12 < bulk < 0.25
    assert {g.flaw for g in sample if g.flaw} == set(Flaw), "every flaw shows up"


def test_the_invalid_share_is_a_setting() -> None:
    none = list(generate(1000, seed=5, mix=Mix(invalid=0.0)))
    assert all(g.expected is not Expected.REJECTED for g in none)
    half = list(generate(2000, seed=5, mix=Mix(invalid=0.5)))
    assert share(half, lambda g: g.expected is Expected.REJECTED) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="invalid share must be between 0 and 1"):
        Mix(invalid=1.5)


def test_sizes_vary_from_a_short_note_to_tens_of_kilobytes(sample: list[Generated]) -> None:
    sizes = sorted(len(orjson.dumps(g.request)) for g in sample)
    assert sizes[0] < 600
    assert 400 < sizes[len(sizes) // 2] < 2000
    assert sizes[-1] > 40_000
    assert sizes[-1] < 1024 * 1024, "below the shipped max_body_bytes"
    assert share(sample, lambda g: "attachments" in g.request) == pytest.approx(0.03, abs=0.01)
    assert share(sample, lambda g: "template" in g.request) > 0.05
    recipients = [g.recipients for g in sample if g.flaw is None]
    assert min(recipients) == 1
    assert max(recipients) > 300


def test_every_request_is_decided_as_labelled_by_the_shipped_config(
    table: RouteTable, sample: list[Generated]
) -> None:
    wrong = []
    for g in sample:
        decision = decide(
            table, Envelope(orjson.dumps(g.request), {}, {"content_type": "application/json"})
        )
        if g.expected is Expected.REJECTED:
            codes = {r.code for r in decision.reasons}
            if codes != {ReasonCode.SCHEMA_VIOLATION}:
                wrong.append((g.index, g.flaw, codes))
        elif decision.rejected or decision.category != g.expected.value:
            wrong.append((g.index, g.expected, decision.category, decision.reasons[:1]))
    assert wrong == []


def test_a_bad_count_or_mix_is_refused() -> None:
    with pytest.raises(ValueError, match="count must not be negative"):
        list(generate(-1))
    with pytest.raises(ValueError, match="customers must be at least 1"):
        Mix(customers=0)
