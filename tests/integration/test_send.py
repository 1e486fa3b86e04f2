"""`routerd send` as ops run it, a subprocess, against the real broker: 2,000 and 100,000
generated requests through a running `routerd serve`, each found once in the queue its label names;
requests from files, stdin and JSON lines; the pre-check; a broker that is not there; input
that cannot be sent. Every JSON output is checked against the ops output schema."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import orjson
import pytest

from routerd.ops.common import output_schema
from routerd.ops.generate import Expected, generate
from tests.factories import invalid_v1, valid_v1
from tests.harness import (
    ROOT,
    Broker,
    QueueNames,
    drain_all,
    free_port,
    routerd_command,
    running_daemon,
    settle,
    wait_for,
)
from tests.harness.config import keep_one_source

pytestmark = [pytest.mark.anyio]

SEED = 20261130


@pytest.fixture
def isolated_config(isolated_config: Path) -> Path:
    """One source: these tests are about publishing, not about which source takes a request
    (tests/integration/test_sources.py is)."""
    return keep_one_source(isolated_config)


async def routerd_send(
    args: Sequence[str], *, stdin: bytes = b"", within: float = 120
) -> subprocess.CompletedProcess[bytes]:
    # Flags only: a developer's ROUTERD_* must not leak into the test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")}
    env["PYTHONPATH"] = str(ROOT)
    with anyio.fail_after(within):
        return await anyio.run_process(
            [*routerd_command(), "send", *args], input=stdin, env=env, cwd=ROOT, check=False
        )


def summary_of(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(output_schema())
    assert [e.message for e in validator.iter_errors(data)] == []
    assert data["exit_code"] == result.returncode
    return data


def message_id(body: bytes) -> str:
    return str(orjson.loads(body)["message_id"])


@pytest.mark.broker
@pytest.mark.parametrize(
    "count",
    [2000, pytest.param(100_000, marks=pytest.mark.timeout(900), id="100k")],
)
async def test_generated_requests_through_routerd_serve_are_all_accounted_for(
    broker: Broker,
    names: QueueNames,
    isolated_config: Path,
    amqp_url: str,
    log_dir: Path,
    count: int,
) -> None:
    expected = {g.request["message_id"]: g.expected for g in generate(count, seed=SEED)}
    # Alone on this machine 100,000 take about a minute; a loaded one is several times slower.
    within = 60 + count / 250
    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        result = await routerd_send(
            [
                *("--generate", str(count), "--seed", str(SEED)),
                *("--config", str(isolated_config), "--amqp-url", amqp_url),
                *("--max-in-flight", "128", "--format", "json"),
            ],
            within=within,
        )
        assert result.returncode == 0, result.stderr.decode()
        timed_out = await settle(broker, names, count, within=within)
        assert await daemon.stop(within=30) == 0

    summary = summary_of(result)
    assert (summary["sent"], summary["confirmed"]) == (count, count)
    assert summary["refused"] == {"requests": 0, "reasons": {}}
    assert summary["failed"]["requests"] == 0
    assert (summary["input"], summary["queue"], summary["check"]) == (
        "generated",
        names.source,
        False,
    )

    received = await drain_all(broker, names)
    found = Counter(message_id(r.body) for r in received)
    assert sum(found.values()) == count, f"{count - sum(found.values())} lost"
    assert set(found) == set(expected) and max(found.values()) == 1, "each exactly once"
    misrouted = [
        (message_id(r.body), expected[message_id(r.body)].value, names.category_of(r.queue))
        for r in received
        if names.category_of(r.queue) != expected[message_id(r.body)].value
    ]
    assert misrouted == []
    assert timed_out is None, timed_out
    # The mix reached routerd whole: its invalid share is in rejected, with reasons.
    rejected = [r for r in received if r.queue == names.rejected]
    assert len(rejected) == sum(1 for e in expected.values() if e is Expected.REJECTED) > 50
    assert all(r.headers.get("x-rejected-reason") == "schema_violation" for r in rejected)


@pytest.mark.broker
async def test_files_stdin_and_json_lines_are_sent_in_order(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, tmp_path: Path
) -> None:
    await broker.declare_queue(names.source)
    one = valid_v1(1, message_id="file-one")
    array = [valid_v1(2, message_id="array-0"), valid_v1(3, message_id="array-1")]
    lines = [valid_v1(4 + i, message_id=f"line-{i}") for i in range(3)]
    invalid = {**invalid_v1(0), "message_id": "invalid-sent-anyway"}
    (tmp_path / "one.json").write_text(json.dumps(one, indent=2))
    (tmp_path / "array.json").write_text(json.dumps(array))
    (tmp_path / "lines.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    stdin = (json.dumps(invalid) + "\n").encode()

    result = await routerd_send(
        [
            *(str(tmp_path / f) for f in ("one.json", "array.json")),
            "-",
            str(tmp_path / "lines.jsonl"),
            *("--config", str(isolated_config), "--amqp-url", amqp_url),
            *("--max-in-flight", "1"),
        ],
        stdin=stdin,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"\r" not in result.stderr, "no progress display when stderr is not a terminal"
    assert result.stdout.decode().startswith(
        f"7 requests sent to {names.source}: 7 confirmed, 0 refused, 0 failed in "
    )
    got = [message_id(r.body) for r in await broker.drain(names.source)]
    # One in flight at a time: the source holds them in the order given.
    assert got == [
        "file-one",
        "array-0",
        "array-1",
        "invalid-sent-anyway",
        "line-0",
        "line-1",
        "line-2",
    ]


@pytest.mark.broker
async def test_the_pre_check_refuses_what_routerd_would_reject_and_says_why(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str
) -> None:
    await broker.declare_queue(names.source)
    body = b"\n".join(
        json.dumps(r).encode()
        for r in (
            valid_v1(1, message_id="good"),
            {**invalid_v1(0), "message_id": "no-recipients"},
            {**invalid_v1(2), "message_id": "long-subject"},
        )
    )
    args = ["-", "--check", "--config", str(isolated_config), "--amqp-url", amqp_url]
    result = await routerd_send(args, stdin=body)
    assert result.returncode == 1
    text = result.stdout.decode()
    assert "3 requests sent" in text and "1 confirmed, 2 refused, 0 failed" in text
    assert "refused by the pre-check: 2 schema_violation" in text
    assert [message_id(r.body) for r in await broker.drain(names.source)] == ["good"]

    summary = summary_of(await routerd_send([*args, "--format", "json"], stdin=body))
    assert summary["refused"] == {"requests": 2, "reasons": {"schema_violation": 2}}
    assert summary["check"] is True


async def test_a_broker_that_is_not_there_fails_every_request_with_a_clear_summary(
    isolated_config: Path,
) -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/"
    args = ["--generate", "25", "--config", str(isolated_config), "--amqp-url", url]
    args += ["--connect-timeout", "0.5"]
    result = await routerd_send(args, within=30)
    assert result.returncode == 1
    text = result.stdout.decode()
    assert "25 requests sent" in text and "0 confirmed, 0 refused, 25 failed" in text
    assert "failed: 25 broker_unavailable, e.g. cannot reach the broker at amqp://" in text
    assert "secret" not in text + result.stderr.decode(), "the password never shows"

    summary = summary_of(await routerd_send([*args, "--format", "json"], within=30))
    assert summary["failed"]["kinds"] == {"broker_unavailable": 25}
    assert summary["ok"] is False


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-"], b'{"schema_version": 1}\n{"broken": \n', "stdin:2: not JSON"),
        (["-"], b"[1, 2]", "stdin:1: item 0 of the array is a number"),
        (["-"], b'"text"', "stdin:1: the document is a string"),
        (["missing.json"], b"", "missing.json: cannot read it"),
        ([], b"", "nothing to send"),
        (["-", "--generate", "3"], b"", "not both"),
        (["--generate", "3", "--invalid", "2"], b"", "invalid share must be between 0 and 1"),
        (["--generate", "3", "--rate", "0"], b"", "--rate must be above 0"),
        (["--generate", "3", "--amqp-url", "http://x"], b"", "invalid AMQP URL"),
    ],
)
async def test_input_and_usage_problems_exit_2_before_anything_is_sent(
    args: list[str], stdin: bytes, message: str, isolated_config: Path
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    result = await routerd_send(
        ["--config", str(isolated_config), "--amqp-url", url, *args], stdin=stdin, within=30
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert result.stdout == b""


@pytest.mark.broker
async def test_rate_paces_the_sends_and_a_terminal_sees_the_progress(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str
) -> None:
    await broker.declare_queue(names.source)
    leader, follower = pty.openpty()
    try:
        start = anyio.current_time()
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [
                    *routerd_command(),
                    "send",
                    *("--generate", "30", "--rate", "20"),
                    *("--config", str(isolated_config), "--amqp-url", amqp_url),
                ],
                stderr=follower,
                env={k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")},
                cwd=ROOT,
                check=False,
            )
        elapsed = anyio.current_time() - start
        os.set_blocking(leader, False)
        shown = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode == 0, result.stdout.decode()
    # 30 requests at 20/s: the last one starts 29/20 s after the first.
    assert elapsed >= 29 / 20
    assert "30 requests sent" in result.stdout.decode()
    assert "\r" not in result.stdout.decode(), "the progress never goes to stdout"
    assert re.search(r"\r\d+/30 done, \d+/s, \d+ confirmed, 0 refused, 0 failed, ETA \d+ s", shown)
    assert len(await broker.drain(names.source)) == 30


# A shell running `make test &` starts it with SIGINT ignored, and an ignored signal stays
# ignored across exec: Python then installs no KeyboardInterrupt handler, and Ctrl-C could
# not be tested. The command runs with SIGINT's default action restored, as in a terminal.
DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
]


@pytest.mark.broker
async def test_ctrl_c_stops_the_run_with_a_summary_of_what_was_sent(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str
) -> None:
    await broker.declare_queue(names.source)
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    seen = bytearray()

    async def progress_shown() -> bytes:
        with contextlib.suppress(BlockingIOError):
            seen.extend(os.read(leader, 65536))
        return bytes(seen)

    try:
        async with await anyio.open_process(
            [
                *DEFAULT_SIGINT,
                *routerd_command(),
                "send",
                *("--generate", "1000", "--rate", "50"),
                *("--config", str(isolated_config), "--amqp-url", amqp_url),
            ],
            stderr=follower,
            env={k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")},
            cwd=ROOT,
        ) as process:
            # Interrupted once it is under way: its progress line shows.
            await wait_for(progress_shown, lambda s: b"done" in s, within=30, what="progress")
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                code = await process.wait()
            assert process.stdout is not None
            stdout = (await process.stdout.receive(65536)).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert code == 1
    match = re.match(r"(\d+) requests sent .*; interrupted, (\d+) without an answer", stdout)
    assert match, stdout
    sent, unanswered = int(match[1]), int(match[2])
    assert 0 < sent < 1000
    # Everything confirmed is in the source; what had no answer yet may be there too.
    assert sent - unanswered <= len(await broker.drain(names.source)) <= sent
