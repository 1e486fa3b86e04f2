"""`routerd explain` and `routerd test` through the command line, as ops run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routerd.cli import app
from tests.factories import encode, valid_v1, valid_v2

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "routes.yaml"

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands default to config/routes.yaml, relative like ops type it.
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("ROUTERD_CONFIG", raising=False)


def test_explain_a_bulk_request_from_a_file(tmp_path: Path) -> None:
    request = tmp_path / "bulk.json"
    request.write_bytes(encode(valid_v1(7, customer_id="cus-42", stream="broadcast")))
    result = runner.invoke(app, ["explain", str(request)])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"send request   {request} (")
    assert "schema         send-request v1 (schemas/send_request.v1.yaml)" in result.stdout
    assert "   4. bulk               MATCHED" in result.stdout
    assert '  routing key  bulk.6  (partition 6 of 8, by customer_id = "cus-42")' in result.stdout
    assert "\033[" not in result.stdout


def test_explain_reads_stdin_and_takes_headers_and_properties() -> None:
    result = runner.invoke(
        app,
        ["explain", "-", "-H", "x-schema-version=2", "-H", "x-attempt:=3", "-P", "app_id=api"],
        input=encode(valid_v2(1, labels=["password-reset"])),
    )

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "version from header x-schema-version" in out
    assert "  headers      x-schema-version=2" in out
    assert "               x-attempt=3" in out
    assert "  properties   content_type=application/json" in out
    assert "               app_id=api" in out
    assert "   1. v2-security-codes  MATCHED" in out
    assert "  priority     9" in out


def test_explain_a_rejected_request_exits_1() -> None:
    result = runner.invoke(app, ["explain", "-"], input=b"\xff\xfe not json")

    assert result.exit_code == 1
    assert "schema         none: the body could not be decoded (invalid_utf8)" in result.stdout
    assert "decision       REJECTED" in result.stdout
    assert "reasons      invalid_utf8: body is not UTF-8" in result.stdout


def test_explain_wrong_content_type_is_rejected() -> None:
    result = runner.invoke(
        app, ["explain", "-", "-P", "content_type=text/plain"], input=encode(valid_v1(1))
    )
    assert result.exit_code == 1
    assert "unsupported_content_type" in result.stdout


def test_explain_json_output_shape() -> None:
    result = runner.invoke(
        app, ["explain", "-", "--format", "json"], input=encode(valid_v1(1, to=[]))
    )

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert set(data) == {
        "format_version",
        "command",
        "exit_code",
        "ok",
        "problems",
        "config",
        "request",
        "stopped_at",
        "schema",
        "validation",
        "rules",
        "decision",
    }
    assert (data["format_version"], data["command"], data["exit_code"]) == (1, "explain", 1)
    assert (data["ok"], data["problems"]) == (False, [])
    assert data["config"]["file"] == "config/routes.yaml"
    assert data["stopped_at"] == "validate"
    assert data["validation"]["errors"] == [
        {
            "code": "schema_violation",
            "message": "array has less than 1 item",
            "pointer": "/to",
            "keyword": "minItems",
        }
    ]
    assert set(data["rules"][0]) == {
        "rule",
        "file",
        "line",
        "column",
        "category",
        "target",
        "result",
        "condition",
    }
    assert set(data["decision"]) == {
        "source",
        "rejected",
        "target",
        "exchange",
        "exchange_type",
        "routing_key",
        "queues",
        "partition",
        "category",
        "rule",
        "schema_version",
        "priority",
        "headers",
        "properties",
        "reasons",
    }
    assert data["decision"]["queues"] == ["email.rejected"]
    # Rejected: publishers put it on the catch-all source, where routerd rejects it.
    assert data["decision"]["source"] == "email.send"
    assert data["decision"]["headers"]["x-rejected-reason"] == "schema_violation"


def test_explain_usage_and_config_problems_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["explain", "-", "-H", "oops"], input=b"{}")
    assert result.exit_code == 2
    assert "header 'oops' must be written NAME=VALUE or NAME:=JSON" in result.stderr

    result = runner.invoke(app, ["explain", str(tmp_path / "missing.json")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr

    config = tmp_path / "routes.yaml"
    config.write_text("version: 1\nsource: {queue: q}\n")
    result = runner.invoke(app, ["explain", "--config", str(config), "-"], input=b"{}")
    assert result.exit_code == 2
    assert result.stderr == ""
    assert result.stdout.startswith(f"{config}:1:1: error: ")


def test_route_tests_of_the_shipped_config_pass() -> None:
    result = runner.invoke(app, ["test"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.startswith("PASS  config/tests/") for line in lines[:-2])
    assert lines[-1].endswith(" passed, 0 failed")
    assert int(lines[-1].split()[0]) >= 40


def test_route_test_failure_shows_a_diff_and_exits_1(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    request = json.dumps(valid_v1(1, tags=["password-reset"]))
    cases.write_text(
        f"- name: a password reset is bulk?\n  request: {request}\n  expect: {{target: bulk}}\n"
    )
    result = runner.invoke(app, ["test", str(cases)])

    assert result.exit_code == 1
    assert f"FAIL  {cases}:1  a password reset is bulk?" in result.stdout
    assert "      target   expected  bulk" in result.stdout
    assert "               actual    transactional" in result.stdout
    assert "      decided  transactional by rule security-codes" in result.stdout
    assert result.stdout.endswith("0 passed, 1 failed\n")


def test_route_test_broken_file_exits_2(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("- name: x\n  body: '{}'\n  expect: {rejected: maybe}\n")
    result = runner.invoke(app, ["test", str(cases)])

    assert result.exit_code == 2
    assert f"{cases}:3:22: error: expect.rejected: 'maybe' is not of type 'boolean'" in (
        result.stdout
    )


def test_route_test_json_output() -> None:
    result = runner.invoke(app, ["test", "--format", "json", "config/tests/v2.yaml"])

    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["failed"] == 0
    assert report["passed"] == len(report["cases"]) > 5


def test_the_installed_command_pipes_raw_bytes(tmp_path: Path) -> None:
    """A real process: stdin bytes that are not UTF-8, output to a pipe (no colors)."""
    command = [sys.executable, "-c", "from routerd.cli import main; main()"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    done = subprocess.run(
        [*command, "explain", "-"],
        input=b"\x80\x81\x82",
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert b"invalid_utf8" in done.stdout
    assert b"\033[" not in done.stdout
    done = subprocess.run(
        [*command, "test", "--config", str(SHIPPED)],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert b" passed, 0 failed" in done.stdout
