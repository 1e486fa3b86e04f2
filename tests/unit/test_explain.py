"""`routerd explain` as functions: the explanation built from the real `decide`, both outputs."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routerd.config.conditions import compile_condition
from routerd.config.loader import load
from routerd.config.model import Location, MatchContext, Problem, RouteTable
from routerd.config.operators import OPERATORS, Operator
from routerd.ops.common import ExitCode, OutputFormat
from routerd.ops.explain import condition_tree, explain_decision, run_explain
from routerd.ops.explain_text import render_text
from routerd.ops.request import UsageError, parse_assignments, parse_properties
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope, RuleTrace
from tests.factories import encode, valid_v1, valid_v2

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "routes.yaml"
SCHEMAS = ROOT / "schemas"
WHERE = Location(Path("routes.yaml"), 1, 1)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load(SHIPPED)


def v1_config(tmp_path: Path, rest: str) -> Path:
    """A config routing the shipped v1 schema: its targets and rules are `rest`."""
    config = tmp_path / "routes.yaml"
    schema = SCHEMAS / "send_request.v1.yaml"
    config.write_text(
        "version: 1\nsource: {queue: email.send}\nschemas:\n"
        f"  - {{name: send-request, version: 1, file: {schema}}}\n{rest}"
    )
    return config


def plain(node: dict[str, Any]) -> dict[str, Any]:
    """A condition node without where it is written and how: what it answered and saw."""
    kept = {k: v for k, v in node.items() if k not in ("file", "line", "column", "when")}
    if "children" in node:
        kept["children"] = [plain(child) for child in node["children"]]
    return kept


def explain(
    table: RouteTable, body: bytes, headers: dict[str, Any] | None = None, **properties: Any
) -> dict[str, Any]:
    envelope = Envelope(body, headers or {}, {"content_type": "application/json", **properties})
    decision = decide(table, envelope, explain=True)
    return explain_decision(table, envelope, decision, source="test")


def run(*args: str, config: Path = SHIPPED, stdin: bytes = b"", **kw: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    headers = kw.pop("headers", [])
    code = run_explain(
        config,
        args[0],
        headers,
        OutputFormat(kw.pop("fmt", "text")),
        out,
        err=err,
        stdin=io.BytesIO(stdin),
        **kw,
    )
    return code, out.getvalue(), err.getvalue()


def test_bulk_v1_names_schema_rules_and_partition(table: RouteTable) -> None:
    request = valid_v1(1, customer_id="cus-42", stream="broadcast", tags=["newsletter"])
    result = explain(table, encode(request))

    assert result["stopped_at"] is None
    assert result["schema"] == {
        "name": "send-request",
        "version": "1",
        "file": "schemas/send_request.v1.yaml",
        "version_from": "field schema_version",
    }
    assert result["validation"] == {"valid": True, "errors": []}
    assert [(r["rule"], r["result"]) for r in result["rules"]] == [
        ("v2-security-codes", "no_match"),
        ("v2-bulk", "no_match"),
        ("security-codes", "no_match"),
        ("bulk", "matched"),
        ("transactional", "not_tried"),
    ]
    bulk = plain(result["rules"][3]["condition"])
    assert bulk == {
        "text": "any",
        "matched": True,
        "kind": "any",
        "children": [
            {
                "text": 'field stream equals "broadcast"',
                "matched": True,
                "kind": "leaf",
                "seen": {"subject": "field stream", "present": True, "value": "broadcast"},
            },
            {
                "text": "count of to + cc + bcc gt 50",
                "matched": False,
                "kind": "leaf",
                "seen": {"subject": "count of to + cc + bcc", "present": True, "value": 1},
            },
        ],
    }
    decision = result["decision"]
    assert decision["rejected"] is False
    assert (decision["target"], decision["exchange"], decision["routing_key"]) == (
        "bulk",
        "email",
        "bulk.6",
    )
    assert decision["partition"] == {
        "by": "customer_id",
        "value": "cus-42",
        "number": 6,
        "count": 8,
    }
    assert decision["headers"]["x-category"] == "bulk"
    assert decision["reasons"] == []


def test_v2_rules_and_header_version(table: RouteTable) -> None:
    request = valid_v2(3, labels=["2fa"])
    result = explain(table, encode(request), {"x-schema-version": "2"})

    assert result["schema"]["version_from"] == "header x-schema-version"
    assert result["rules"][0]["result"] == "matched"
    assert all(r["result"] == "not_tried" for r in result["rules"][1:])
    assert result["decision"]["priority"] == 9
    assert result["decision"]["partition"] is None


def test_validation_errors_are_listed_with_pointer_and_keyword(table: RouteTable) -> None:
    request = valid_v1(2, customer_id=42, to=[])
    result = explain(table, encode(request))

    assert result["stopped_at"] == "validate"
    assert result["validation"]["valid"] is False
    found = {(e["pointer"], e["keyword"]) for e in result["validation"]["errors"]}
    assert found == {("/customer_id", "type"), ("/to", "minItems")}
    assert all(r["result"] == "not_tried" and r["condition"] is None for r in result["rules"])
    assert result["decision"]["target"] == "rejected"


@pytest.mark.parametrize(
    ("body", "properties", "stage", "code"),
    [
        (b"\xff\xfe{}", {}, "decode", "invalid_utf8"),
        (b'{"schema_version": ', {}, "decode", "invalid_json"),
        (b"[1, 2]", {}, "decode", "not_an_object"),
        (b"{}", {"content_type": "text/plain"}, "decode", "unsupported_content_type"),
        (b"{}", {}, "validate", "missing_schema_version"),
        (b'{"schema_version": 9}', {}, "validate", "unknown_schema_version"),
    ],
)
def test_rejected_before_validation_says_where_and_why(
    table: RouteTable, body: bytes, properties: dict[str, Any], stage: str, code: str
) -> None:
    result = explain(table, body, **properties)

    assert result["stopped_at"] == stage
    assert result["schema"] is None
    assert result["validation"] is None
    assert [r["code"] for r in result["decision"]["reasons"]] == [code]
    text = render_text(result)
    assert "schema         none:" in text
    assert f"rejected at {stage}" in text
    assert code in text


def test_text_output_is_aligned_and_plain(table: RouteTable) -> None:
    text = render_text(explain(table, encode(valid_v1(5, stream="broadcast"))))

    assert "\033[" not in text
    assert "   4. bulk               MATCHED    category bulk, target bulk" in text
    assert "   5. transactional      not tried" in text
    assert '          field stream equals "broadcast"  yes' in text
    assert "          count of to + cc + bcc gt 50     no" in text
    assert "decision       ROUTED" in text
    assert "  routing key  bulk." in text


def test_text_output_colors_only_when_asked(table: RouteTable) -> None:
    result = explain(table, encode(valid_v1(5, stream="broadcast")))
    assert "\033[32mMATCHED\033[0m" in render_text(result, color=True)


def test_long_messages_are_cut_in_text_but_not_in_json(table: RouteTable) -> None:
    result = explain(table, b'{"schema_version": 1, "x": "' + b"y" * 2000 + b'"')
    result["decision"]["reasons"][0]["message"] = "z" * 1000
    text = render_text(result)
    assert "... (800 more characters)" in text


def test_a_trace_without_its_tree_shows_flat_answers() -> None:
    trace = RuleTrace("r", True, (("a", True), ("b", True)))
    assert condition_tree(trace) == {
        "text": "all",
        "matched": True,
        "kind": "all",
        "children": [
            {"kind": "leaf", "text": "a", "matched": True},
            {"kind": "leaf", "text": "b", "matched": True},
        ],
    }


def test_not_node_inverts_its_child() -> None:
    problems: list[Problem] = []
    when = compile_condition(
        {"not": {"field": "x", "exists": True}}, ("when",), lambda path: WHERE, problems
    )
    assert when is not None
    tree = condition_tree(RuleTrace.of("r", when.trace(MatchContext({"x": 1}, {}, {}, "1"))))
    assert tree["matched"] is False
    assert tree["children"][0]["matched"] is True


def test_explain_shows_the_count_it_saw(table: RouteTable) -> None:
    # 30 + 20 + 10 recipients: "more than 50 in to + cc + bcc" holds, and says why.
    addresses = [{"email": f"user{i}@example.org"} for i in range(30)]
    request = valid_v1(
        7, stream="transactional", to=addresses, cc=addresses[:20], bcc=addresses[:10]
    )
    result = explain(table, encode(request))

    bulk = result["rules"][3]
    assert (bulk["rule"], bulk["result"]) == ("bulk", "matched")
    count = plain(bulk["condition"]["children"][1])
    assert count == {
        "text": "count of to + cc + bcc gt 50",
        "matched": True,
        "kind": "leaf",
        "seen": {"subject": "count of to + cc + bcc", "present": True, "value": 60},
    }
    text = render_text(result)
    assert "          count of to + cc + bcc gt 50     yes  (saw 60)" in text
    assert '          field stream equals "broadcast"  no   (saw "transactional")' in text


def test_explain_says_when_a_value_is_missing_and_shows_the_schema_version(
    table: RouteTable,
) -> None:
    result = explain(table, encode(valid_v1(8, tags=["receipt"])))
    v2_security = result["rules"][0]["condition"]
    version, labels = v2_security["children"]
    assert version["kind"] == "schema_version"
    assert version["seen"] == {"subject": "schema_version", "present": True, "value": "1"}
    assert labels["seen"] == {"subject": "field labels", "present": False, "value": None}
    text = render_text(result)
    assert '          schema_version in [2]                                no   (saw "1")' in text
    assert '          field labels contains_any ["password-reset", "2fa"]  no   (missing)' in text
    # The catch-all looks at nothing, so its row says nothing more.
    assert "\n        always (no `when`)  yes\n" in text


def test_long_values_are_summarised_in_text_but_whole_in_json(tmp_path: Path) -> None:
    config = v1_config(
        tmp_path,
        """\
targets:
  out: {exchange: email, type: topic, routing_key: out}
rejected: {exchange: email, type: topic, routing_key: rejected}
rules:
  - name: many
    when: {any: [{field: to, length: {gt: 50}}, {field: subject, regex: "^x$"}]}
    category: bulk
    target: out
  - name: rest
    category: transactional
    target: out
""",
    )
    request = valid_v1(9, recipients=80, subject="s" * 300)
    code, out, _ = run("-", config=config, stdin=encode(request))
    assert code == ExitCode.OK
    assert 'field to length {"gt": 50}  yes  (saw a list of 80 items)' in out
    assert '(saw "' + "s" * 40 + '..." (300 characters))' in out
    code, out, _ = run("-", config=config, stdin=encode(request), fmt="json")
    seen = json.loads(out)["rules"][0]["condition"]["children"][0]["seen"]
    assert seen["value"] == request["to"]


def test_a_new_operator_is_one_registry_entry(table: RouteTable) -> None:
    # A toy operator in a copy of the registry: compiled, matched, traced and explained
    # with no other change anywhere.
    starts_with = Operator(
        "starts_with",
        lambda prefix, path: lambda value: isinstance(value, str) and value.startswith(prefix),
        implies=lambda prefix: frozenset({"string"}),
    )
    operators = {**OPERATORS, "starts_with": starts_with}
    problems: list[Problem] = []
    when = compile_condition(
        {"field": "subject", "starts_with": "Your order"},
        ("rules", 0, "when"),
        lambda path: WHERE,
        problems,
        operators=operators,
    )
    assert problems == [] and when is not None
    first = replace(table.rules[-1], name="orders", when=when, category="orders")
    with_toy = replace(table, rules=(first, *table.rules))
    result = explain(with_toy, encode(valid_v1(1)))
    assert result["decision"]["rule"] == "orders"
    assert plain(result["rules"][0]["condition"]) == {
        "text": 'field subject starts_with "Your order"',
        "matched": True,
        "kind": "leaf",
        "seen": {"subject": "field subject", "present": True, "value": "Your order #1 has shipped"},
    }
    text = render_text(result)
    assert 'field subject starts_with "Your order"  yes  (saw "Your order #1 has shipped")' in text


def test_assignments_give_text_or_typed_json() -> None:
    assert parse_assignments(["a=1", "b:=1", "c:=[1]", "d=x=y", "e="], "header") == {
        "a": "1",
        "b": 1,
        "c": [1],
        "d": "x=y",
        "e": "",
    }
    for bad in ["novalue", "=x", ":=1", "b:={"]:
        with pytest.raises(UsageError):
            parse_assignments([bad], "header")


def test_properties_default_to_json_and_can_be_removed_or_typed() -> None:
    assert parse_properties([]) == {"content_type": "application/json"}
    assert parse_properties(["content_type=", "priority=5", "app_id=api"]) == {
        "priority": 5,
        "app_id": "api",
    }
    with pytest.raises(UsageError, match="unknown AMQP property 'colour'"):
        parse_properties(["colour=red"])
    with pytest.raises(UsageError, match="whole number"):
        parse_properties(["priority=high"])


def test_run_explain_exit_codes_and_stdin() -> None:
    code, out, err = run("-", stdin=encode(valid_v1(1)))
    assert (code, err) == (ExitCode.OK, "")
    assert "send request   stdin (" in out

    code, out, _ = run("-", stdin=b"\x00\xff garbage")
    assert code == ExitCode.FAILED
    assert "invalid_utf8" in out or "invalid_json" in out

    code, out, err = run("-", headers=["broken"])
    assert (code, out) == (ExitCode.BROKEN, "")
    assert "NAME=VALUE" in err


def test_run_explain_missing_file_is_exit_2(tmp_path: Path) -> None:
    code, out, err = run(str(tmp_path / "nope.json"))
    assert (code, out) == (ExitCode.BROKEN, "")
    assert "cannot read" in err and "nope.json" in err


def test_run_explain_broken_config_prints_problems_in_lint_format(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("version: 1\nsource: {queue: q}\nbogus: 1\n")
    code, out, err = run("-", config=config, stdin=b"{}")
    # Problems go where every command writes them: standard output, in lint's format.
    assert (code, err) == (ExitCode.BROKEN, "")
    lines = out.splitlines()
    assert all(": error: " in line and line.endswith("[config-schema]") for line in lines[:-1])
    assert "missing required key 'schemas'" in out and "unknown key 'bogus'" in out
    assert lines[-1].endswith("fix them first (routerd lint checks a config)")

    code, out, err = run("-", config=config, stdin=b"{}", fmt="json")
    assert code == ExitCode.BROKEN
    problems = json.loads(out)["problems"]
    assert problems and {"file", "line", "column", "message", "code"} <= set(problems[0])


def test_unmatched_request_is_explained(tmp_path: Path) -> None:
    config = v1_config(
        tmp_path,
        """\
targets:
  bulk: {exchange: email, type: topic, routing_key: bulk}
rejected: {exchange: email, type: topic, routing_key: rejected}
unmatched: rejected
rules:
  - name: not-broadcast
    when:
      not: {field: stream, equals: transactional}
    category: bulk
    target: bulk
""",
    )
    code, out, _ = run("-", config=config, stdin=encode(valid_v1(1, stream="transactional")))
    assert code == ExitCode.FAILED
    assert "no rule matched: the request goes to rejected" in out
    assert "unmatched: no rule matched this request" in out
    code, out, _ = run(
        "-", config=config, stdin=encode(valid_v1(1, stream="broadcast")), fmt="json"
    )
    rule = json.loads(out)["rules"][0]
    assert rule["result"] == "matched"
    assert rule["condition"]["text"] == "not"
    assert rule["condition"]["children"][0]["matched"] is False


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda request: json.dumps(request).encode(),
            st.dictionaries(st.sampled_from(["schema_version", "to", "stream", "tags"]), JSON),
        ),
    ),
    header=JSON,
)
def test_any_input_is_explained_never_raised(table: RouteTable, body: bytes, header: Any) -> None:
    result = explain(table, body, {"x-schema-version": header, "x-other": header})
    json.dumps(result, default=str)
    text = render_text(result)
    assert text.startswith("send request   test (")
    assert ("decision       REJECTED" in text) is result["decision"]["rejected"]


@pytest.mark.parametrize(
    ("request_", "source"),
    [
        (valid_v1(31, tags=["password-reset"], stream="broadcast"), "email.send.transactional"),
        (valid_v1(32, stream="broadcast", tags=["newsletter"]), "email.send"),
        (valid_v2(33, labels=["2fa"]), "email.send.transactional"),
    ],
)
def test_explain_says_which_source_a_request_is_published_to(
    request_: dict[str, Any], source: str
) -> None:
    code, out, _ = run("-", stdin=encode(request_), fmt="json")
    assert code == 0
    assert json.loads(out)["decision"]["source"] == source
    code, out, _ = run("-", stdin=encode(request_))
    assert f"published to   source queue {source}\n" in out
