"""The local stack without a container engine, end to end: `scripts/stack.py up` starts two
`routerd serve` replicas and `routerd api` under honcho on free ports with an isolated
config and its own state folder; a request over HTTP reaches the target queue through the
API, the broker and a replica; an invalid one is refused with 400 and never published;
`down` stops every process `up` started.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
import yaml

from tests.factories import valid_v1
from tests.harness import (
    ROOT,
    VENV_BIN,
    Broker,
    QueueNames,
    free_port,
    http_get,
    metric_sum,
    wait_for,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(not (VENV_BIN / "honcho").exists(), reason="honcho is in the dev extra"),
]

STACK = ROOT / "scripts" / "stack.py"


async def stack(command: str, *options: str) -> tuple[int, str]:
    """Run `scripts/stack.py COMMAND` as `make` does; its exit code and all it printed."""
    # A developer's own settings must not reach the test's stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTERD_", "STACK_"))}
    done = await anyio.run_process(
        [str(VENV_BIN / "python"), str(STACK), command, *options],
        check=False,
        env=env,
        cwd=ROOT,
        stderr=-2,  # subprocess.STDOUT: one transcript, in order
    )
    return done.returncode, done.stdout.decode(errors="replace")


def gone(pid: int) -> bool:
    """No such process, or only its zombie left for its parent to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def request(seed: int, **overrides: object) -> dict[str, object]:
    body = valid_v1(seed, **overrides)
    del body["customer_id"]  # the API puts the key's customer in
    return body


async def test_up_routes_an_api_request_through_a_replica_and_down_stops_every_process(
    amqp_url: str, isolated_config: Path, broker: Broker, names: QueueNames, tmp_path: Path
) -> None:
    state = tmp_path / "stack"
    api_port, first, second = free_port(), free_port(), free_port()
    options = [
        *("--state-dir", str(state), "--config", str(isolated_config)),
        *("--amqp-url", amqp_url, "--api-port", str(api_port)),
        *("--recorder-port", str(free_port())),
        *("--metrics-ports", f"{first},{second}", "--runner", "processes", "--timeout", "40"),
    ]
    pids: dict[str, int] = {}
    with anyio.fail_after(90):
        try:
            code, printed = await stack("up", *options)
            if (state / "pids.json").exists():
                pids = json.loads((state / "pids.json").read_text())
            assert code == 0, printed
            key = (state / "demo-key").read_text().strip()

            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}",
                headers={"Authorization": f"Bearer {key}"},
            ) as http:
                refused = await http.post("/v1/send", json=request(2, to=[]))
                accepted = await http.post(
                    "/v1/send", json=request(5, message_id="stack-1", tags=["password-reset"])
                )
            assert accepted.status_code == 202, accepted.text

            async def depth() -> int | None:
                return await broker.depth(names.transactional)

            await wait_for(depth, lambda d: d == 1, within=20, what="the request routed")
            (routed,) = await broker.drain(names.transactional, 1)
            metrics = [await http_get(port, "/metrics") for port in (first, second)]
        finally:
            down_code, down_printed = await stack("down", *options)

    assert "runner: processes" in printed
    assert key in printed and f"curl -s -X POST http://127.0.0.1:{api_port}/v1/send" in printed
    assert f"http://127.0.0.1:{first}/metrics" in printed
    assert f"http://127.0.0.1:{second}/metrics" in printed

    assert accepted.json() == {"message_id": "stack-1"}
    body = orjson.loads(routed.body)
    assert (body["message_id"], body["customer_id"]) == ("stack-1", "cus-demo")
    assert routed.properties["message_id"] == "stack-1"

    assert refused.status_code == 400
    assert refused.json()["reasons"], refused.text
    # Nothing of the invalid request was published: the replicas consumed one request in
    # all, and rejected holds nothing.
    consumed = 0.0
    for answer in metrics:
        assert answer is not None and answer[0] == 200
        consumed += metric_sum(answer[1].decode(), "routerd_requests_consumed_total")
    assert consumed == 1
    assert await broker.depth(names.rejected) == 0
    assert await broker.depth(names.source) == 0

    assert down_code == 0, down_printed
    assert set(pids) == {"honcho", "routerd-1", "routerd-2", "api", "rejections"}, pids
    assert [name for name, pid in pids.items() if not gone(pid)] == []
    assert not (state / "pids.json").exists()
    # Each service stopped on its own SIGTERM (rc=0), not killed after honcho's grace.
    log = (state / "stack.log").read_text()
    for name in ("routerd-1", "routerd-2", "api", "rejections"):
        assert f"{name}.1 stopped (rc=0)" in log, log[-3000:]


async def test_a_service_that_cannot_start_fails_up_and_leaves_nothing_running(
    amqp_url: str, isolated_config: Path, broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "stack"
    options = [
        *("--state-dir", str(state), "--config", str(isolated_config), "--amqp-url", amqp_url),
        *("--metrics-ports", f"{free_port()},{free_port()}", "--runner", "processes"),
        *("--recorder-port", str(free_port())),
    ]
    with socket.socket() as taken, anyio.fail_after(90):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = str(taken.getsockname()[1])
        code, printed = await stack("up", *options, "--api-port", api_port, "--timeout", "40")
        log = (state / "stack.log").read_text()
        pids = service_pids(log)
        down_code, _ = await stack("down", *options)
    assert code == 1, printed
    assert "the stack stopped while starting" in printed
    assert "address already in use" in printed  # the API's own words, from the log's tail
    assert set(pids) == {"routerd-1", "routerd-2", "api", "rejections"}, log
    assert [name for name, pid in pids.items() if not gone(pid)] == []
    assert down_code == 0


def service_pids(log: str) -> dict[str, int]:
    """Each service's pid from honcho's `system | api.1 started (pid=123)` lines."""
    found = re.findall(r"system\s+\| ([\w-]+)\.1 started \(pid=(\d+)\)", log)
    return {name: int(pid) for name, pid in found}


def test_compose_runs_the_same_services_on_the_same_ports_as_the_procfile() -> None:
    # The compose runner cannot run on a machine without a container engine: at least it
    # must describe the stack the tested process runner runs.
    procfile = dict(
        line.split(": ", 1)
        for line in (ROOT / "scripts" / "stack.Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    )
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert set(services) == {"rabbitmq", *procfile}
    for name, command in procfile.items():
        (port_variable,) = re.findall(r"\$(STACK_\w+_PORT\w*)", command)
        (published,) = services[name]["ports"]
        assert published.startswith(f"127.0.0.1:${{{port_variable}:-")
    assert services["api"]["entrypoint"][-1] == "api"
    assert services["api"]["environment"]["ROUTERD_API_ADDR"] == "0.0.0.0:8080"
