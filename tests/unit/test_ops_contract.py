"""The ops tools' one contract: the JSON output of lint, explain and test against its
schema (routerd/ops/output.schema.json), in every situation, broken config included; the
same config option and variable for every command; problems on standard output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from routerd.cli import app
from routerd.ops.common import output_schema
from tests.factories import encode, valid_v1
from tests.harness.daemon import free_port

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "lint_corpus"
runner = CliRunner()
BROKEN_CONFIG = "version: 1\nsource: {queue: q}\n"
ROUTED = encode(valid_v1(1, recipients=1, stream="transactional", tags=[]))
REJECTED = b"\xff not json"
# A port nothing listens on (bound, then closed), for `send` without a broker.
NO_BROKER = [
    "--amqp-url",
    f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    "--connect-timeout",
    "0.2",
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = output_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def json_of(args: list[str], stdin: bytes = b"", **env: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--format", "json"], input=stdin, env=env)
    return result.exit_code, json.loads(result.stdout)


def broken_config(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_CONFIG)
    return path


def cases(tmp_path: Path, expect: str) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(f"- name: one\n  body: '{ROUTED.decode()}'\n  expect: {expect}\n")
    return path


def situations(tmp_path: Path) -> dict[str, tuple[list[str], bytes, int]]:
    """Every situation worth a shape: (arguments, stdin, expected exit code)."""
    broken = str(broken_config(tmp_path))
    return {
        "lint clean": (["lint", "config/routes.yaml"], b"", 0),
        "lint errors": (["lint", str(CORPUS / "all-at-once" / "routes.yaml")], b"", 1),
        "lint several": (
            ["lint", "config/routes.yaml", str(CORPUS / "no-catch-all" / "routes.yaml")],
            b"",
            1,
        ),
        "lint unreadable": (["lint", str(tmp_path / "missing.yaml")], b"", 2),
        "lint strict": (
            ["lint", str(CORPUS / "target-unused" / "routes.yaml"), "--strict"],
            b"",
            1,
        ),
        "explain routed": (["explain", "-"], ROUTED, 0),
        "explain rejected": (["explain", "-"], REJECTED, 1),
        "explain broken config": (["explain", "-", "--config", broken], ROUTED, 2),
        "test passed": (["test", "config/tests/v1.yaml"], b"", 0),
        "test failed": (["test", str(cases(tmp_path, "{target: bulk}"))], b"", 1),
        "test coverage": (["test", "--coverage"], b"", 0),
        "test broken file": (["test", str(tmp_path / "nope.yaml")], b"", 2),
        "test broken config": (["test", "--config", broken], b"", 2),
        # send's other answers need a broker: tests/integration/test_send.py checks them
        # against this schema too.
        "send broker down": (["send", "--generate", "3", *NO_BROKER], b"", 1),
        "send nothing": (["send", "-", *NO_BROKER], b"\n", 0),
        "send broken config": (["send", "--generate", "1", "--config", broken], b"", 2),
    }


def test_every_output_follows_the_schema(
    tmp_path: Path, validator: jsonschema.protocols.Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    for name, (args, stdin, code) in situations(tmp_path).items():
        exit_code, data = json_of(args, stdin)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
        assert errors == [], name
        assert (exit_code, data["exit_code"], data["ok"]) == (code, code, code == 0), name
        assert data["command"] == args[0]


def test_the_schema_refuses_what_breaks_the_contract(
    validator: jsonschema.protocols.Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    _, good = json_of(["explain", "-"], ROUTED)
    assert validator.is_valid(good)
    for broken in (
        {**good, "ok": False},
        {**good, "format_version": 2},
        {**good, "rules": [{**good["rules"][0], "result": "no match"}]},
        {**good, "surprise": 1},
        {k: v for k, v in good.items() if k != "problems"},
    ):
        assert not validator.is_valid(broken)


def test_a_broken_config_has_the_same_shape_for_every_command(tmp_path: Path) -> None:
    broken = str(broken_config(tmp_path))
    shapes = {
        command: set(json_of([command, *args, "--config", broken], ROUTED)[1])
        for command, args in (("lint", []), ("explain", ["-"]), ("test", []))
    }
    assert (
        shapes["explain"]
        == shapes["test"]
        == {
            "format_version",
            "command",
            "exit_code",
            "ok",
            "problems",
            "summary",
        }
    )
    assert shapes["explain"] < shapes["lint"]


def test_every_command_takes_the_config_by_option_or_variable(tmp_path: Path) -> None:
    broken = str(broken_config(tmp_path))
    # lint's answer about a broken config is "errors" (1); the others cannot answer (2).
    for args, code in ((["lint"], 1), (["explain", "-"], 2), (["test"], 2)):
        by_flag = runner.invoke(app, [*args, "--config", broken], input=ROUTED)
        by_env = runner.invoke(app, args, input=ROUTED, env={"ROUTERD_CONFIG": broken})
        assert by_flag.exit_code == by_env.exit_code == code, args
        assert by_flag.stdout == by_env.stdout
        # Problems go to standard output, in lint's format, for every command.
        assert f"{broken}:1:1: error: /: missing required key 'schemas' [config-schema]" in (
            by_flag.stdout
        )


def test_version_and_serve_help_list_every_variable() -> None:
    from importlib.metadata import version

    from routerd.settings import ENV_VARS

    assert runner.invoke(app, ["--version"]).stdout == f"routerd {version('routerd')}\n"
    shown = " ".join(runner.invoke(app, ["serve", "--help"], terminal_width=200).stdout.split())
    for variable in ENV_VARS.values():
        assert variable in shown


def test_expect_queue_and_coverage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    good = runner.invoke(app, ["test", str(cases(tmp_path, "{queue: email.transactional}"))])
    assert good.exit_code == 0, good.stdout
    bad = runner.invoke(app, ["test", str(cases(tmp_path, "{queue: email.bulk}"))])
    assert bad.exit_code == 1
    assert "queue" in bad.stdout and "email.transactional" in bad.stdout
    _, report = json_of(["test", str(cases(tmp_path, "{rejected: false}")), "--coverage"])
    assert report["coverage"]["rules_not_reached"] == [
        "v2-security-codes",
        "v2-bulk",
        "security-codes",
        "bulk",
    ]
    assert "bulk" in report["coverage"]["targets_not_reached"]
    assert "transactional" not in report["coverage"]["targets_not_reached"]


def test_a_bad_serve_setting_does_not_stop_the_ops_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["lint"], env={"ROUTERD_HTTP_ADDR": "bogus"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("config/routes.yaml: ok")
