"""`routerd lint` against the broken-config corpus in tests/lint_corpus, and its analyses.

Each corpus folder holds one small config showing one mistake, and `expected.txt`: header
lines `# exit: N` (and `# args: PATH` when the path given is not routes.yaml), then the exact
output, problem lines and summary, run from inside that folder.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from routerd.cli import app
from routerd.config.coverage import Analysis, analyse
from routerd.config.fields import FieldOracle
from routerd.config.loader import build
from routerd.config.paths import parse_path
from routerd.ops.common import OutputFormat
from routerd.ops.lint import lint, run_lint

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "lint_corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.txt").is_file())
LINE = re.compile(
    r"^(?P<file>[^:]+)(:(?P<line>\d+):(?P<col>\d+))?: (error|warning): .* \[[a-z-]+\]$"
)

# Every check of the issue has at least one corpus case; a new check needs one too.
CODES = {
    "source-conflict",
    "source-duplicate-queue",
    "source-catch-all",
    "source-unreachable",
    "yaml-syntax",
    "yaml-ambiguous",
    "routing-key-unbound",
    "schema-ref-outside",
    "condition-value-impossible",
    "yaml-duplicate-key",
    "yaml-recursive",
    "yaml-too-large",
    "yaml-too-deep",
    "yaml-tag",
    "config-schema",
    "condition-invalid",
    "regex-invalid",
    "target-unknown",
    "rule-duplicate-name",
    "no-catch-all",
    "schema-invalid",
    "schema-ref-unresolved",
    "schema-example-invalid",
    "file-not-found",
    "file-unreadable",
    "target-unused",
    "schema-unused",
    "routing-key-field",
    "routing-key-field-optional",
    "routing-key-invalid",
    "rule-shadowed",
    "rule-never-matches",
    "schema-version-unknown",
    "schema-version-unrouted",
    "condition-field-unknown",
    "binding-key-template",
}


@dataclass(frozen=True)
class Case:
    folder: Path
    args: str
    exit_code: int
    lines: list[str]


def load_case(name: str) -> Case:
    folder = CORPUS / name
    args, exit_code, lines = "routes.yaml", -1, []
    for line in (folder / "expected.txt").read_text().splitlines():
        if line.startswith("# args: "):
            args = line.removeprefix("# args: ")
        elif line.startswith("# exit: "):
            exit_code = int(line.removeprefix("# exit: "))
        else:
            lines.append(line)
    assert exit_code in (0, 1, 2), f"{name}: expected.txt needs a `# exit: N` line"
    return Case(folder, args, exit_code, lines)


@pytest.mark.parametrize("name", CASES)
def test_corpus_with_the_function(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = load_case(name)
    monkeypatch.chdir(case.folder)
    out = io.StringIO()
    code = run_lint([Path(case.args)], OutputFormat.TEXT, out)
    assert out.getvalue().splitlines() == case.lines
    assert code == case.exit_code


@pytest.mark.parametrize("name", CASES)
def test_corpus_with_the_cli(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = load_case(name)
    monkeypatch.chdir(case.folder)
    result = CliRunner().invoke(app, ["lint", case.args])
    assert result.stdout.splitlines() == case.lines
    assert result.exit_code == case.exit_code


@pytest.mark.parametrize("name", CASES)
def test_corpus_as_json(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = load_case(name)
    monkeypatch.chdir(case.folder)
    out = io.StringIO()
    code = run_lint([Path(case.args)], OutputFormat.JSON, out)
    report = json.loads(out.getvalue())
    assert code == case.exit_code == report["exit_code"]
    rebuilt = [
        f"{p['file']}:{p['line']}:{p['column']}: {p['severity']}: {p['message']} [{p['code']}]"
        if p["line"]
        else f"{p['file']}: {p['severity']}: {p['message']} [{p['code']}]"
        for p in report["problems"]
    ]
    assert rebuilt == case.lines[:-1]
    assert report["summary"] == case.lines[-1]
    assert report["errors"] == sum(": error: " in line for line in case.lines)
    assert report["warnings"] == sum(": warning: " in line for line in case.lines)
    assert report["ok"] is (code == 0)


@pytest.mark.parametrize("name", CASES)
def test_corpus_lines_are_well_formed(name: str) -> None:
    case = load_case(name)
    *problems, summary = case.lines
    assert all(LINE.match(line) for line in problems), problems
    if case.exit_code == 0 and not problems:
        assert summary.endswith(" targets)")
    # Exit 1 exactly when an error is reported for a readable config.
    if case.exit_code != 2:
        assert (case.exit_code == 1) == any(": error: " in p for p in problems)


def test_the_corpus_covers_every_check() -> None:
    seen = {
        line.rsplit("[", 1)[1].rstrip("]") for name in CASES for line in load_case(name).lines[:-1]
    }
    assert seen >= CODES, f"no corpus case for: {sorted(CODES - seen)}"


@pytest.mark.parametrize(("name", "code"), [("clean", 0), ("yaml-syntax", 1), ("missing-file", 2)])
def test_the_real_command_in_a_subprocess(name: str, code: int) -> None:
    case = load_case(name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", "from routerd.cli import main; main()", "lint", case.args],
        cwd=case.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.splitlines() == case.lines, done.stderr
    assert done.returncode == code


def test_the_shipped_config_lints_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    assert run_lint([Path("config/routes.yaml")], OutputFormat.TEXT, out) == 0
    assert re.fullmatch(
        r"config/routes.yaml: ok \(\d+ rules, \d+ schemas, \d+ targets\)\n", out.getvalue()
    )


def test_an_unknown_format_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["lint", str(CORPUS / "clean" / "routes.yaml"), "-f", "xml"])
    assert result.exit_code == 2
    assert "'xml' is not one of" in " ".join(result.output.split())


def test_several_configs_in_one_run_and_the_worst_exit_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(CORPUS)
    result = CliRunner().invoke(app, ["lint", "clean/routes.yaml", "no-catch-all/routes.yaml"])
    lines = result.stdout.splitlines()
    assert lines[0] == "clean/routes.yaml: ok (1 rule, 1 schema, 2 targets)"
    assert lines[-1] == "1 error in no-catch-all/routes.yaml"
    assert result.exit_code == 1


def test_strict_fails_on_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS / "target-unused")
    assert CliRunner().invoke(app, ["lint", "routes.yaml"]).exit_code == 0
    strict = CliRunner().invoke(app, ["lint", "routes.yaml", "--strict"])
    assert strict.exit_code == 1
    assert strict.stdout.splitlines()[-1].endswith("(--strict: warnings fail)")


def test_lint_takes_the_config_like_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS / "no-catch-all")
    by_flag = CliRunner().invoke(app, ["lint", "--config", "routes.yaml"])
    by_env = CliRunner().invoke(app, ["lint"], env={"ROUTERD_CONFIG": "routes.yaml"})
    assert by_flag.stdout == by_env.stdout
    assert by_flag.stdout.splitlines()[-1] == "1 error in routes.yaml"


def test_a_remote_ref_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    report = lint(CORPUS / "schema-ref-remote" / "routes.yaml")
    assert [p.code for p in report.problems] == ["schema-ref-unresolved"]
    assert "never fetches" in report.problems[0].message
    assert attempts == []


def test_paths_outside_the_working_folder_stay_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = lint(CORPUS / "schema-invalid" / "routes.yaml")
    (problem,) = report.problems
    assert problem.location.file == CORPUS / "schema-invalid" / "schemas" / "v1.yaml"


# The analyses behind the checks, on the shipped schemas.


@pytest.fixture(scope="module")
def shipped() -> Any:
    result = build(ROOT / "config" / "routes.yaml")
    assert result.problems == ()
    return result


@pytest.mark.parametrize(
    ("version", "path", "presence", "types"),
    [
        ("1", "customer_id", "required", {"string"}),
        ("1", "to.0.email", "required", {"string"}),  # minItems 1 in an allOf beside the $ref
        ("1", "cc.0.email", "optional", {"string"}),
        ("1", "text", "optional", {"string"}),  # required only in one anyOf branch
        ("1", "headers.x-anything", "optional", {"string"}),  # additionalProperties
        ("1", "account.id", "forbidden", set()),
        ("1", "subject.length", "forbidden", set()),  # a string has no fields
        ("2", "account.id", "required", {"string"}),
        ("2", "delivery.stream", "optional", {"string"}),
        ("2", "customer_id", "forbidden", set()),
    ],
)
def test_what_a_schema_says_about_a_field(
    shipped: Any, version: str, path: str, presence: str, types: set[str]
) -> None:
    schema = shipped.table.schemas[version]
    facts = FieldOracle(shipped.schemas, schema.file.as_uri()).facts(parse_path(path))
    assert facts.presence == presence
    assert facts.types == frozenset(types)


TWO_VERSIONS = """\
version: 1
source: {queue: email.send}
schemas:
  - {name: send-request, version: 1, file: v1.yaml}
  - {name: send-request, version: 2, file: v2.yaml}
targets:
  tx: {exchange: email, routing_key: tx}
  bulk: {exchange: email, routing_key: "bulk.{customer_id}"}
  bulk-v2: {exchange: email, routing_key: "bulk.{account.id}"}
rejected: {exchange: email, routing_key: rejected}
rules:
  - name: v2-bulk
    when: {all: [{schema_version: 2}, {field: labels, contains: bulk}]}
    category: bulk
    target: bulk-v2
  - name: bulk
    when: {any: [{field: stream, equals: broadcast}, {count: [to, cc], gt: 50}]}
    category: bulk
    target: bulk
  - name: v2-rest
    when: {schema_version: 2}
    category: transactional
    target: tx
  - name: transactional
    category: transactional
    target: tx
"""
V1 = """\
type: object
additionalProperties: false
required: [customer_id]
properties:
  customer_id: {type: string}
  stream: {enum: [transactional, broadcast]}
  to: {type: array}
  cc: {type: array}
"""
V2 = """\
type: object
additionalProperties: false
required: [account]
properties:
  account: {type: object, required: [id], properties: {id: {type: string}}}
  labels: {type: array, items: {type: string}}
"""


def test_which_versions_each_rule_sees(tmp_path: Path) -> None:
    for name, text in {"routes.yaml": TWO_VERSIONS, "v1.yaml": V1, "v2.yaml": V2}.items():
        (tmp_path / name).write_text(text)
    result = build(tmp_path / "routes.yaml")
    assert result.problems == ()
    assert result.table is not None and result.schemas is not None
    assert result.document is not None
    oracles = {
        v: FieldOracle(result.schemas, s.file.as_uri()) for v, s in result.table.schemas.items()
    }
    coverage = analyse(
        result.table.rules,
        result.table.raw["rules"],
        result.document,
        Analysis(("1", "2"), oracles),
    )
    assert {r.rule.name: r.sees for r in coverage.reaches} == {
        "v2-bulk": ("2",),
        # v2 forbids `stream`, `to` and `cc`: whatever the request, this rule is false for it.
        "bulk": ("1",),
        "v2-rest": ("2",),
        # v2-rest took every v2 request that got that far.
        "transactional": ("1",),
    }
    assert coverage.problems == []
    assert coverage.fall_through == ()
    # And so lint finds nothing wrong: bulk's {customer_id} is only ever rendered for v1.
    assert lint(tmp_path / "routes.yaml").problems == ()


def test_allowed_values_follow_refs_and_branches(tmp_path: Path) -> None:
    from routerd.config.schemas import load_schema_set

    schema = tmp_path / "s.json"
    schema.write_text(
        json.dumps(
            {
                "$defs": {"stream": {"enum": ["a", "b"]}},
                "properties": {
                    "stream": {"$ref": "#/$defs/stream"},
                    "kind": {"anyOf": [{"const": "x"}, {"enum": ["y", 1]}]},
                    "open": {"anyOf": [{"const": "x"}, {"type": "string"}]},
                    "both": {"allOf": [{"enum": ["a", "b", "c"]}, {"enum": ["b", "c", "d"]}]},
                },
            }
        )
    )
    oracle = FieldOracle(load_schema_set([schema], []), schema.as_uri())
    assert oracle.allowed_values(("stream",)) == ["a", "b"]
    assert oracle.allowed_values(("kind",)) == ["x", "y", 1]
    assert oracle.allowed_values(("open",)) is None
    assert oracle.allowed_values(("both",)) == ["b", "c"]
    assert oracle.allowed_values(("nothing",)) is None
