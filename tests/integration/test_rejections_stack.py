"""The rejections recorder in the local stack (`make up`, process runner): a request that
serve rejects reaches the account UI's endpoint, `GET /v1/rejections`, with its reasons."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from tests.factories import encode, invalid_v1
from tests.harness import Broker, Outgoing, QueueNames, free_port, wait_for
from tests.integration.test_stack import stack

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_a_rejected_request_is_recorded_and_served_to_its_customer(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames, tmp_path: Path
) -> None:
    state = tmp_path / "stack"
    api_port = free_port()
    options = [
        *("--state-dir", str(state), "--config", str(isolated_config), "--amqp-url", amqp_url),
        *("--api-port", str(api_port), "--recorder-port", str(free_port())),
        *("--metrics-ports", f"{free_port()},{free_port()}", "--runner", "processes"),
        *("--timeout", "40"),
    ]
    with anyio.fail_after(90):
        try:
            code, printed = await stack("up", *options)
            assert code == 0, printed
            key = (state / "demo-key").read_text().strip()
            # The API refuses what serve would reject, so the test publishes to the source
            # as a client that skips the check would.
            bad = invalid_v1(0) | {"customer_id": "cus-demo"}
            other = invalid_v1(1) | {"customer_id": "cus-other"}
            await broker.publish(
                names.source,
                [
                    Outgoing(encode(bad), properties={"message_id": "stack-bad"}),
                    Outgoing(encode(other), properties={"message_id": "stack-other"}),
                ],
            )
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}",
                headers={"Authorization": f"Bearer {key}"},
            ) as http:

                async def page() -> dict[str, object]:
                    answer = await http.get("/v1/rejections")
                    return dict(answer.json())

                found = await wait_for(
                    page, lambda p: bool(p.get("rejections")), within=30, what="a rejection"
                )
        finally:
            down_code, down_printed = await stack("down", *options)
    assert f"{api_port}/v1/rejections" in printed and "routerd rejections list" in printed
    rows = found["rejections"]
    assert isinstance(rows, list) and [r["message_id"] for r in rows] == ["stack-bad"]
    assert rows[0]["customer_id"] == "cus-demo" and rows[0]["reason"] == "schema_violation"
    assert json.loads(rows[0]["body"]["content"]) == bad
    assert down_code == 0, down_printed
