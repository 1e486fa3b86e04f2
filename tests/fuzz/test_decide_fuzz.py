"""Property: no send request, however hostile, makes `decide` fail, change the body, reject
without a reason, or build headers the broker could not take in one frame."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.pipeline.decide import REASON_HEADER, REASONS_HEADER, decide
from routerd.pipeline.decode import header_bytes
from routerd.pipeline.envelope import Envelope
from tests.fuzz.hostile import Hostile, hostile_requests

ROOT = Path(__file__).resolve().parents[2]
TABLE: RouteTable = load(ROOT / "config" / "routes.yaml")
FRAME_BUDGET = 120 * 1024


@pytest.mark.timeout(600)
@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile_requests())
def test_decide_survives_hostile_requests(request: Hostile) -> None:
    decision = decide(TABLE, Envelope(request.body, request.headers, request.properties))
    assert decision.body == request.body
    assert header_bytes(decision.headers) <= FRAME_BUDGET
    if decision.category is None:
        reasons = decision.headers[REASONS_HEADER]
        assert decision.headers[REASON_HEADER] == reasons[0]["code"]
        assert all(r["code"] and r["message"] for r in reasons)
        assert "internal_error" not in {r["code"] for r in reasons}, reasons
    else:
        assert REASON_HEADER not in decision.headers
