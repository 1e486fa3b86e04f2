"""The named corpus (tests/fuzz/corpus/) through `decide` in process: each case where it must
go, with its reason; and every decision small enough to be published."""

from __future__ import annotations

from pathlib import Path

import pytest

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.pipeline.decide import REASON_HEADER, REASONS_HEADER, decide
from routerd.pipeline.decode import header_bytes
from routerd.pipeline.envelope import Envelope
from tests.fuzz.corpus import Case, load_corpus

ROOT = Path(__file__).resolve().parents[2]
CASES = load_corpus()
# RabbitMQ's frame_max is 131,072 bytes; a message's properties travel in one frame.
FRAME_BUDGET = 120 * 1024


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load(ROOT / "config" / "routes.yaml")


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 15
    assert all(c.why for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, table: RouteTable) -> None:
    request = case.request
    decision = decide(table, Envelope(request.body, request.headers, request.properties))
    assert decision.body == request.body, "the body travels unchanged"
    assert header_bytes(decision.headers) <= FRAME_BUDGET, "the decision's headers fit a frame"
    if case.category is not None:
        assert decision.category == case.category, decision.reasons
        assert decision.headers["x-category"] == case.category
        assert REASON_HEADER not in decision.headers
    else:
        assert decision.category is None, f"routed to {decision.category}"
        assert decision.headers[REASON_HEADER] == case.reason, decision.headers[REASONS_HEADER]
        reasons = decision.headers[REASONS_HEADER]
        assert reasons and all(r["message"] for r in reasons)
        assert "internal_error" not in {r["code"] for r in reasons}
