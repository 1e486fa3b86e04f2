"""`routerd test` as functions: reading test files, checking decisions, reporting failures."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from routerd.config.loader import load
from routerd.config.model import ConfigError, Location
from routerd.ops.common import OutputFormat
from routerd.ops.routetest import read_cases, route_test_files, run_case, run_route_tests
from routerd.ops.routetest_check import CaseResult, Mismatch, check, describe, match_reasons

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "routes.yaml"

V1 = (
    "{schema_version: 1, message_id: m-1, customer_id: cus-42, from: {email: a@shop.example}, "
    "to: [{email: b@example.org}], subject: Hi, text: Hi}"
)


def write(tmp_path: Path, text: str, name: str = "cases.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(files: list[Path], fmt: str = "text", config: Path = SHIPPED) -> tuple[int, str, str]:
    out = io.StringIO()
    code = run_route_tests(config, files, OutputFormat(fmt), out)
    return code, out.getvalue(), ""


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        read_cases(path)
    return [str(p) for p in caught.value.problems]


def test_shipped_route_tests_pass() -> None:
    code, out, err = run([])
    assert (code, err) == (0, "")
    assert out.endswith(" passed, 0 failed\n")
    assert "FAIL" not in out


def test_passing_and_failing_cases_with_a_readable_diff(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        - name: a receipt is transactional
          request: {V1}
          expect: {{target: transactional, category: transactional}}
        - name: a broadcast is wrongly expected to be transactional
          request: {{<<: {V1}, stream: broadcast}}
          expect:
            target: transactional
            routing_key: bulk.3
            headers: {{x-category: transactional, x-schema-version: 1}}
        """,
    )
    code, out, _ = run([path])
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"PASS  {path}:1  a receipt is transactional"
    assert lines[1] == f"FAIL  {path}:4  a broadcast is wrongly expected to be transactional"
    assert lines[2:9] == [
        "      target              expected  transactional",
        "                          actual    bulk",
        "      routing_key         expected  bulk.3",
        "                          actual    bulk.6",
        "      headers.x-category  expected  transactional",
        "                          actual    bulk",
        "      decided             bulk by rule bulk to target bulk, routing key bulk.6",
    ]
    assert lines[-1] == "1 passed, 1 failed"


def test_reasons_must_match_one_to_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: wrong reasons
          request: {schema_version: 1, message_id: m}
          expect:
            rejected: true
            reasons: [{code: schema_violation, pointer: "", message: '"to"'}, invalid_json]
        """,
    )
    code, out, _ = run([path])
    assert code == 1
    assert "      reasons  missing     invalid_json" in out
    # `required` errors for customer_id, from and subject; the one for "to" was expected.
    assert out.count("unexpected  schema_violation at (root) (required)") == 3
    assert "decided  rejected: schema_violation at (root) x5" in out


def test_match_reasons_prefers_the_most_specific_expectation() -> None:
    actual = [
        {"code": "schema_violation", "pointer": "/to", "keyword": "minItems", "message": "m"},
        {"code": "schema_violation", "pointer": "/from", "keyword": "type", "message": "m"},
    ]
    missing, unexpected = match_reasons(
        ["schema_violation", {"code": "schema_violation", "pointer": "/to"}], actual
    )
    assert (missing, unexpected) == ([], [])
    missing, unexpected = match_reasons([{"code": "x", "message": "nothing"}], actual)
    assert missing == [{"code": "x", "message": "nothing"}]
    assert unexpected == actual


def test_check_compares_text_as_text_and_null_as_absent() -> None:
    decision = {
        "rejected": False,
        "target": "bulk",
        "priority": None,
        "schema_version": "1",
        "headers": {"x-schema-version": "1", "x-count": 3},
        "reasons": [],
    }
    assert check({"schema_version": 1, "priority": None}, decision) == ()
    assert check({"headers": {"x-schema-version": 1, "x-count": "3"}}, decision) == ()
    assert check({"headers": {"x-missing": None}}, decision) == ()
    assert check({"headers": {"x-count": None}, "rejected": True}, decision) == (
        Mismatch("rejected", True, False),
        Mismatch("headers.x-count", None, 3),
    )


def test_describe_a_decision() -> None:
    routed = {
        "rejected": False,
        "category": "transactional",
        "rule": "security-codes",
        "target": "transactional",
        "routing_key": "transactional",
        "priority": 9,
    }
    assert describe(routed) == (
        "transactional by rule security-codes to target transactional, "
        "routing key transactional, priority 9"
    )


def test_request_from_body_and_body_base64(tmp_path: Path) -> None:
    example = ROOT / "schemas" / "send_request.v2.yaml"
    path = write(
        tmp_path,
        f"""\
        - name: the v2 example
          request_from: {example}#/examples/0
          expect: {{rule: v2-security-codes}}
        - name: the v2 example without the 2fa label
          request_from: {example}#/examples/0
          request: {{labels: [receipt]}}
          expect: {{rule: transactional}}
        - name: raw text
          body: '{{"schema_version": 1'
          expect: {{reasons: [invalid_json]}}
        - name: raw bytes
          body_base64: /w==
          expect: {{reasons: [invalid_utf8]}}
        - name: no content type at all is still JSON
          request: {V1}
          properties: {{content_type: null}}
          expect: {{target: transactional}}
        """,
    )
    code, out, _ = run([path])
    assert code == 0, out


def test_a_failure_of_an_unexpected_rejection_shows_the_reasons(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - name: not json
          body: nope
          expect: {target: bulk}
        """,
    )
    code, out, _ = run([path])
    assert code == 1
    assert "      decided  rejected: invalid_json" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- name: x\n  request: {}\n  expect: {tagret: bulk}\n",
            [
                "{f}:3:11: error: expect: unknown key 'tagret'; expected one of: category, "
                "exchange, headers, priority, queue, reasons, rejected, routing_key, rule, "
                "schema_version, source, target; did you mean 'target'? [test-invalid]"
            ],
        ),
        (
            "- name: x\n  request: {}\n  expect: {}\n",
            [
                "{f}:3:11: error: expect: name at least one thing to check "
                "(target, category, rejected, ...) [test-invalid]"
            ],
        ),
        (
            "- name: x\n  expect: {rejected: true}\n",
            [
                "{f}:1:3: error: a case needs exactly one of request, request_from, body, "
                "body_base64 (request may be combined with request_from to change some of its "
                "fields) [test-invalid]"
            ],
        ),
        (
            "- name: x\n  body: a\n  request: {}\n  expect: {rejected: true}\n",
            [
                "{f}:1:3: error: a case needs exactly one of request, request_from, body, "
                "body_base64 (request may be combined with request_from to change some of its "
                "fields); found request, body [test-invalid]"
            ],
        ),
        (
            "- name: x\n  body: a\n  expect: {rejected: true}\n"
            "- name: x\n  body: b\n  expect: {rejected: true}\n",
            ["{f}:4:9: error: case name 'x' is used twice (first at {f}:1:3) [test-invalid]"],
        ),
        (
            "- name: x\n  request: {send_at: !!timestamp 2024-01-01}\n  expect: {rejected: true}\n",
            [
                "{f}:2:22: error: 2024-01-01 is a YAML timestamp, not JSON; quote it to send it "
                "as text [test-invalid]"
            ],
        ),
        (
            "- name: x\n  body: a\n  properties: {colour: red}\n  expect: {rejected: true}\n",
            ["{f}:3:15: error: properties: unknown AMQP property 'colour' [test-invalid]"],
        ),
        (
            "- name: x\n  body: a\n  properties: {priorty: 1}\n  expect: {rejected: true}\n",
            [
                "{f}:3:15: error: properties: unknown AMQP property 'priorty'; did you mean "
                "'priority'? [test-invalid]"
            ],
        ),
        (
            "- name: x\n  body: a\n  expect: {reasons: [{pointer: /to}]}\n",
            [
                "{f}:3:22: error: expect.reasons.0: a reason is a code, or a mapping of code and "
                "optionally pointer, keyword, message [test-invalid]"
            ],
        ),
        (
            "- name: x\n  body: a\n  expect: {rejected: false, reasons: [x]}\n",
            ["{f}:3:38: error: `reasons` cannot be expected when `rejected: false` [test-invalid]"],
        ),
        (
            "- name: x\n  body_base64: '%%%'\n  expect: {rejected: true}\n",
            [
                "{f}:2:16: error: body_base64 is not base64: Only base64 data is allowed "
                "[test-invalid]"
            ],
        ),
        (
            "- name: x\n  request_from: nowhere.yaml\n  expect: {rejected: true}\n",
            [
                "{f}:2:17: error: request_from 'nowhere.yaml': {d}/nowhere.yaml: error: "
                "file not found [file-not-found] [test-invalid]"
            ],
        ),
        (
            "name: x\n",
            [
                "{f}:1:1: error: a route test file is a YAML list of cases "
                "(- name: ..., request: ..., expect: ...) [test-invalid]"
            ],
        ),
        ("[]\n", ["{f}:1:1: error: the file has no cases [test-invalid]"]),
        (
            "- name: x\n  request_from: cases.yaml#examples\n  expect: {rejected: true}\n",
            [
                "{f}:2:17: error: request_from 'cases.yaml#examples': after # comes a JSON "
                "pointer such as /examples/0 [test-invalid]"
            ],
        ),
        (
            "- name: x\n  request_from: cases.yaml#/0/nothing\n  expect: {rejected: true}\n",
            [
                "{f}:2:17: error: request_from 'cases.yaml#/0/nothing': nothing at 'nothing' "
                "[test-invalid]"
            ],
        ),
    ],
)
def test_broken_test_files_name_file_line_and_column(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    wanted = [e.format(f=path, d=tmp_path) for e in expected]
    assert problems_of(path) == wanted


def test_yaml_syntax_errors_name_their_position(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: [\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:2:1: error: YAML syntax: ")
    assert problem.endswith("[yaml-syntax]")


def test_a_broken_test_file_fails_the_run_before_any_case(tmp_path: Path) -> None:
    good = write(tmp_path, f"- name: ok\n  request: {V1}\n  expect: {{target: transactional}}\n")
    bad = write(tmp_path, "- name: x\n  expect: {tagret: bulk}\n", "bad.yaml")
    code, out, _ = run([good, bad])
    assert code == 2
    assert f"{bad}:2:11: error: expect: unknown key 'tagret'" in out
    assert out.splitlines()[-1] == "1 error in the route tests; fix them first"
    assert "PASS" not in out

    code, out, _ = run([good, bad], fmt="json")
    assert code == 2
    assert json.loads(out)["problems"][0]["line"] == 2


def test_json_report(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        - name: passes
          request: {V1}
          expect: {{target: transactional}}
        - name: fails
          request: {V1}
          expect: {{target: bulk}}
        """,
    )
    code, out, _ = run([path], fmt="json")
    assert code == 1
    report = json.loads(out)
    assert (report["format_version"], report["passed"], report["failed"]) == (1, 1, 1)
    assert (report["command"], report["exit_code"], report["ok"]) == ("test", 1, False)
    passed, failed = report["cases"]
    assert (passed["name"], passed["line"], passed["passed"]) == ("passes", 1, True)
    assert failed["mismatches"] == [
        {"field": "target", "expected": "bulk", "actual": "transactional"}
    ]
    assert failed["decision"]["routing_key"] == "transactional"
    assert failed["file"] == str(path)


def test_default_files_are_the_tests_folder_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    problem = route_test_files(config, [])
    assert not isinstance(problem, list)
    assert (
        str(problem)
        == f"{tmp_path / 'tests'}: error: no route tests found (*.yaml) [file-not-found]"
    )

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "b.yml").write_text("")
    (tmp_path / "tests" / "a.yaml").write_text("")
    (tmp_path / "tests" / "notes.txt").write_text("")
    assert route_test_files(config, []) == [
        tmp_path / "tests" / "a.yaml",
        tmp_path / "tests" / "b.yml",
    ]
    assert route_test_files(config, [tmp_path / "tests"]) == route_test_files(config, [])
    missing = route_test_files(config, [tmp_path / "nope.yaml"])
    assert str(missing) == f"{tmp_path / 'nope.yaml'}: error: file not found [file-not-found]"


def test_broken_config_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("version: 2\n")
    code, out, _ = run([], config=config)
    assert code == 2
    assert f"{config}:" in out and "[config-schema]" in out


def test_run_case_uses_the_pipeline_without_a_trace() -> None:
    table = load(SHIPPED)
    path = ROOT / "config" / "tests" / "v1.yaml"
    case = read_cases(path)[0]
    result = run_case(table, case)
    assert isinstance(result, CaseResult) and result.passed
    assert result.location == Location(path, 9, 3)
