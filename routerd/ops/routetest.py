"""`routerd test`: route tests that live beside the config, run through the real `decide`.

A route test file (`config/tests/*.yaml` by default) is a YAML list of cases:

    - name: a broadcast goes to bulk                # unique within the file
      request: {schema_version: 1, ...}             # the body, written as YAML, sent as JSON
      # or  request_from: ../../schemas/send_request.v1.yaml#/examples/0
      #     (plus `request` to change some top-level fields of it)
      # or  body: '{"not": json'                    # raw text, sent as UTF-8
      # or  body_base64: //4=                       # raw bytes, for bodies that are not UTF-8
      headers: {x-schema-version: "1"}              # optional AMQP headers
      properties: {content_type: text/plain}        # optional; content_type defaults to
                                                    # application/json, null removes it
      expect:                                       # only what is named here is checked
        target: bulk
        category: bulk
        rule: bulk
        routing_key: bulk.6
        priority: 9                                 # null: no priority
        headers: {x-category: bulk}                 # a subset; null: header absent
        queue: email.bulk                           # a queue bound to receive it
        rejected: true
        reasons:                                    # all of them, in any order
          - invalid_json
          - {code: schema_violation, pointer: /to, keyword: minItems}

Every test file is read and checked before any case runs, so a broken file fails the run
with `file:line:col` (exit 2) instead of with a misleading FAIL.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import jsonschema

from routerd.config.hints import did_you_mean
from routerd.config.loader import load
from routerd.config.model import ConfigError, Location, Problem, RouteTable
from routerd.config.paths import FieldPath
from routerd.config.source import Document, read_document
from routerd.ops.common import (
    Command,
    ExitCode,
    OutputFormat,
    display,
    envelope,
    location_json,
    report_broken,
    write_json,
)
from routerd.ops.explain import decision_summary
from routerd.ops.request import DEFAULT_PROPERTIES, PROPERTY_NAMES
from routerd.ops.routetest_check import CaseResult, check, render_case
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope

log = logging.getLogger(__name__)

TEST_SUFFIXES = (".yaml", ".yml")
BODY_KEYS = ("request", "request_from", "body", "body_base64")

_REASON = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "required": ["code"],
            "additionalProperties": False,
            "properties": {
                key: {"type": "string"} for key in ("code", "pointer", "keyword", "message")
            },
        },
    ]
}
TEST_FILE_SCHEMA: Mapping[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["name", "expect"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "request": {},
            "request_from": {"type": "string", "minLength": 1},
            "body": {"type": "string"},
            "body_base64": {"type": "string"},
            "headers": {"type": "object"},
            "properties": {
                "type": "object",
                "propertyNames": {"enum": sorted(PROPERTY_NAMES)},
            },
            "expect": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": {
                    "rejected": {"type": "boolean"},
                    "target": {"type": "string"},
                    "exchange": {"type": "string"},
                    "category": {"type": ["string", "null"]},
                    "rule": {"type": ["string", "null"]},
                    "routing_key": {"type": "string"},
                    "queue": {"type": "string", "minLength": 1},
                    "source": {"type": "string", "minLength": 1},
                    "priority": {"type": ["integer", "null"]},
                    "schema_version": {"type": ["string", "integer", "null"]},
                    "headers": {"type": "object"},
                    "reasons": {"type": "array", "minItems": 1, "items": _REASON},
                },
            },
        },
    },
}
_validator = jsonschema.Draft202012Validator(TEST_FILE_SCHEMA)


@dataclass(frozen=True, slots=True)
class RouteCase:
    """One route test: a send request and what the route table must decide for it."""

    name: str
    location: Location
    envelope: Envelope
    expect: Mapping[str, Any]


class CaseError(Exception):
    def __init__(self, path: FieldPath, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(message)


def run_route_tests(
    config: Path,
    files: Sequence[Path],
    fmt: OutputFormat,
    out: TextIO,
    *,
    coverage: bool = False,
) -> ExitCode:
    """The `test` command: 0 every case passed, 1 some failed, 2 config or test file broken."""
    try:
        table = load(config)
    except ConfigError as exc:
        return report_broken(Command.TEST, exc.problems, fmt, out, display(config))
    paths = route_test_files(config, files)
    if isinstance(paths, Problem):
        return report_broken(Command.TEST, (paths,), fmt, out, "the route tests", config=False)
    cases: list[RouteCase] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            cases.extend(read_cases(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        return report_broken(Command.TEST, problems, fmt, out, "the route tests", config=False)
    results = [run_case(table, case) for case in cases]
    failed = sum(1 for r in results if not r.passed)
    exit_code = ExitCode.FAILED if failed else ExitCode.OK
    unreached = not_reached(table, results) if coverage else None
    log.debug("route tests: %d passed, %d failed", len(results) - failed, failed)
    if fmt is OutputFormat.JSON:
        write_json(out, _json_report(table, results, exit_code, unreached))
        return exit_code
    width = max((len(f"{r.location.file}:{r.location.line}") for r in results), default=0)
    for result in results:
        out.write(render_case(result, width))
    out.write(f"\n{len(results) - failed} passed, {failed} failed\n")
    if unreached is not None:
        for kind, names in unreached.items():
            shown = ", ".join(names) if names else "none, every one is reached"
            out.write(f"{kind.replace('_', ' ')}: {shown}\n")
    return exit_code


def not_reached(table: RouteTable, results: Sequence[CaseResult]) -> dict[str, list[str]]:
    """The rules and targets (rejected included) that no case's decision went through:
    behaviour of the config that no route test pins down."""
    rules = {r.decision["rule"] for r in results}
    targets = {r.decision["target"] for r in results}
    return {
        "rules_not_reached": [rule.name for rule in table.rules if rule.name not in rules],
        "targets_not_reached": [
            name for name in [*table.targets, table.rejected.name] if name not in targets
        ],
    }


def route_test_files(config: Path, files: Sequence[Path]) -> list[Path] | Problem:
    """The files to run: the given ones (folders expanded), else `tests/` beside the config."""
    if not files:
        folder = config.parent / "tests"
        found = _yaml_files(folder) if folder.is_dir() else []
        if not found:
            return Problem(
                Location(folder), "error", "no route tests found (*.yaml)", "file-not-found"
            )
        return found
    paths: list[Path] = []
    for given in files:
        if given.is_dir():
            paths.extend(_yaml_files(given))
        elif given.exists():
            paths.append(given)
        else:
            return Problem(Location(given), "error", "file not found", "file-not-found")
    return paths


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in TEST_SUFFIXES and p.is_file())


def run_case(table: RouteTable, case: RouteCase) -> CaseResult:
    # The hot path, exactly as the daemon runs it: no explain trace.
    decision = decide(table, case.envelope)
    summary = decision_summary(table, case.envelope, decision)
    return CaseResult(case.name, case.location, check(case.expect, summary), summary)


def read_cases(path: Path) -> list[RouteCase]:
    """Parse and check one test file; raise ConfigError with every problem's position."""
    doc = read_document(path)
    problems = [
        Problem(
            doc.locate(tuple(error.absolute_path)),
            "error",
            _schema_message(error),
            "test-invalid",
        )
        for error in sorted(
            _validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))
        )
    ]
    if problems:
        raise ConfigError(tuple(problems))
    cases: list[RouteCase] = []
    names: dict[str, Location] = {}
    sources: dict[Path, Document] = {}
    for i, raw in enumerate(doc.data):
        try:
            if raw["name"] in names:
                raise CaseError(
                    ("name",),
                    f"case name {raw['name']!r} is used twice (first at {names[raw['name']]})",
                )
            names[raw["name"]] = doc.locate((i,))
            cases.append(_case(doc, i, raw, sources))
        except CaseError as exc:
            problems.append(
                Problem(doc.locate((i, *exc.path)), "error", exc.message, "test-invalid")
            )
    if problems:
        raise ConfigError(tuple(problems))
    return cases


def _case(
    doc: Document, index: int, raw: Mapping[str, Any], sources: dict[Path, Document]
) -> RouteCase:
    given = [key for key in BODY_KEYS if key in raw]
    if not given or (len(given) > 1 and set(given) != {"request", "request_from"}):
        raise CaseError(
            (),
            "a case needs exactly one of request, request_from, body, body_base64 "
            "(request may be combined with request_from to change some of its fields)"
            + (f"; found {', '.join(given)}" if given else ""),
        )
    expect = raw["expect"]
    if expect.get("rejected") is False and "reasons" in expect:
        raise CaseError(
            ("expect", "reasons"), "`reasons` cannot be expected when `rejected: false`"
        )
    properties = dict(DEFAULT_PROPERTIES)
    for name, value in raw.get("properties", {}).items():
        if value is None:
            properties.pop(name, None)
        else:
            properties[name] = value
    body = _body(doc, raw, sources)
    return RouteCase(
        raw["name"],
        doc.locate((index,)),
        Envelope(body, raw.get("headers", {}), properties),
        expect,
    )


def _body(doc: Document, raw: Mapping[str, Any], sources: dict[Path, Document]) -> bytes:
    if "body" in raw:
        return str(raw["body"]).encode("utf-8")
    if "body_base64" in raw:
        try:
            return base64.b64decode(raw["body_base64"], validate=True)
        except binascii.Error as exc:
            raise CaseError(("body_base64",), f"body_base64 is not base64: {exc}") from None
    request: Any
    if "request_from" in raw:
        request = _request_from(doc.path.parent, raw["request_from"], sources)
        if "request" in raw:
            if not isinstance(request, dict) or not isinstance(raw["request"], dict):
                raise CaseError(
                    ("request",), "request can only change fields when both are mappings"
                )
            request = {**request, **raw["request"]}
    else:
        request = raw["request"]
    _reject_yaml_only_values(request, ("request",))
    try:
        return json.dumps(request, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        # YAML tags such as !!binary or !!set make values JSON cannot carry.
        raise CaseError(("request",), f"request cannot be sent as JSON: {exc}") from None


def _request_from(base: Path, reference: str, sources: dict[Path, Document]) -> Any:
    """`file#/json/pointer`, the file relative to the test file (its whole content without #)."""
    file_part, _, fragment = reference.partition("#")
    path = (base / file_part).resolve()
    if path not in sources:
        try:
            sources[path] = read_document(path)
        except ConfigError as exc:
            raise CaseError(("request_from",), f"request_from {reference!r}: {exc}") from None
    if fragment and not fragment.startswith("/"):
        raise CaseError(
            ("request_from",),
            f"request_from {reference!r}: after # comes a JSON pointer such as /examples/0",
        )
    node = sources[path].data
    for token in fragment.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise CaseError(("request_from",), f"request_from {reference!r}: nothing at {token!r}")
    return node


def _reject_yaml_only_values(value: Any, path: FieldPath) -> None:
    # YAML turns unquoted dates into date objects, which JSON has no form for; guessing a
    # text form would test a different request than the one written.
    if isinstance(value, datetime.date):
        raise CaseError(path, f"{value} is a YAML timestamp, not JSON; quote it to send it as text")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_yaml_only_values(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _reject_yaml_only_values(item, (*path, i))


def _schema_message(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    # The position already says which case; name the key inside it, as the file spells it.
    where = ".".join(map(str, path[1:]))
    prefix = f"{where}: " if where else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = (
            sorted(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
        )
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        if extra:
            return (
                f"{prefix}unknown key {extra[0]!r}; expected one of: {', '.join(allowed)}"
                + did_you_mean(extra[0], allowed)
            )
    if "propertyNames" in error.schema_path:
        known = error.schema.get("enum", []) if isinstance(error.schema, dict) else []
        return f"{prefix}unknown AMQP property {error.instance!r}" + did_you_mean(
            str(error.instance), [str(k) for k in known]
        )
    if error.validator == "minProperties" and path[-1:] == ["expect"]:
        return "expect: name at least one thing to check (target, category, rejected, ...)"
    if error.validator == "oneOf" and "reasons" in path:
        return (
            f"{prefix}a reason is a code, or a mapping of code and optionally "
            "pointer, keyword, message"
        )
    if error.validator == "minItems" and not path:
        return "the file has no cases"
    if error.validator == "type" and not path:
        return "a route test file is a YAML list of cases (- name: ..., request: ..., expect: ...)"
    if error.validator == "type" and len(path) == 1:
        return "a case is a mapping with name, request (or body) and expect"
    return prefix + error.message


def _json_report(
    table: RouteTable,
    results: Sequence[CaseResult],
    exit_code: ExitCode,
    unreached: dict[str, list[str]] | None,
) -> dict[str, Any]:
    failed = sum(1 for r in results if not r.passed)
    report = envelope(
        Command.TEST,
        exit_code,
        (),
        config={"file": display(table.path), "hash": table.content_hash},
        passed=len(results) - failed,
        failed=failed,
        cases=[
            {
                "name": r.name,
                **location_json(r.location),
                "passed": r.passed,
                "mismatches": [
                    {"field": m.field, "expected": m.expected, "actual": m.actual}
                    for m in r.mismatches
                ],
                "decision": r.decision,
            }
            for r in results
        ],
    )
    if unreached is not None:
        report["coverage"] = unreached
    return report
