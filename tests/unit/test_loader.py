"""The loader: positions of every node, and problems that name file, line, key and value."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Any

import pytest

from routerd.config.loader import build, load
from routerd.config.model import ConfigError, Location, Problem
from routerd.config.source import read_document

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
version: 1
source:
  queue: email.send
schemas:
  - name: send-request
    version: 1
    file: schemas/v1.yaml
targets:
  transactional:
    exchange: email
    routing_key: transactional
rejected:
  exchange: email
  routing_key: rejected
rules:
  - name: everything
    category: transactional
    target: transactional
"""

SCHEMA = """\
$schema: https://json-schema.org/draft/2020-12/schema
type: object
required: [schema_version, customer_id]
properties:
  schema_version: {const: 1}
  customer_id: {type: string}
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder / "routes.yaml"


def problems_of(path: Path) -> list[tuple[int, int, str, str]]:
    """(line, column, code, message) of every problem, for compact assertions."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [(p.location.line, p.location.column, p.code, p.message) for p in caught.value.problems]


def config(tmp_path: Path, text: str = CONFIG, schema: str = SCHEMA, **extra: str) -> Path:
    return write(tmp_path, {"routes.yaml": text, "schemas/v1.yaml": schema, **extra})


# Reading YAML with positions


def test_every_value_and_key_has_its_position(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, {"routes.yaml": CONFIG}))
    assert doc.positions[()] == Location(doc.path, 1, 1)
    assert doc.positions[("source", "queue")] == Location(doc.path, 3, 10)
    assert doc.positions[("schemas", 0)] == Location(doc.path, 5, 5)
    assert doc.positions[("schemas", 0, "file")] == Location(doc.path, 7, 11)
    assert doc.keys[("schemas", 0, "file")] == Location(doc.path, 7, 5)
    assert doc.keys[("targets", "transactional")] == Location(doc.path, 9, 3)
    # A missing key is located at the deepest node that exists.
    assert doc.locate(("targets", "transactional", "queues", 0)) == Location(doc.path, 10, 5)
    assert doc.locate_key(("targets", "nope")) == Location(doc.path, 9, 3)


def test_it_reads_yaml_as_yaml_1_2_and_json_read_it(tmp_path: Path) -> None:
    text = """\
base: &base {exchange: email, routing_key: a}
one:
  <<: *base
  routing_key: b        # overriding a merged key is not a duplicate
two: *base
when: 2024-01-01
flags: [yes, no, ~, 0x10, 1.5, 1e-8, 0777, 0o17, 1_000, 'on', True, .5]
"""
    doc = read_document(write(tmp_path, {"c.yaml": text}).parent / "c.yaml")
    assert doc.data == {
        "base": {"exchange": "email", "routing_key": "a"},
        "one": {"exchange": "email", "routing_key": "b"},
        "two": {"exchange": "email", "routing_key": "a"},
        "when": "2024-01-01",
        "flags": ["yes", "no", None, 16, 1.5, 1e-8, 777, 15, "1_000", "on", True, 0.5],
    }
    assert doc.positions[("one", "routing_key")].line == 4
    # What YAML 1.1 tools read differently is remembered for lint; quoted text is not.
    assert {path: old for path, (_, _, old) in doc.ambiguous.items()} == {
        ("when",): datetime.date(2024, 1, 1),
        ("flags", 0): True,
        ("flags", 1): False,
        ("flags", 5): "1e-8",
        ("flags", 6): 511,
        ("flags", 7): "0o17",
        ("flags", 8): 1000,
    }


def test_json_files_are_read_as_json(tmp_path: Path) -> None:
    folder = write(tmp_path, {"s.json": '{"multipleOf": 1e-8,\n "enum": ["yes", 7.77e2]}'})
    doc = read_document(folder.parent / "s.json")
    assert doc.data == {"multipleOf": 1e-8, "enum": ["yes", 777.0]}
    assert doc.positions[("enum", 1)] == Location(doc.path, 2, 18)
    assert doc.ambiguous == {}


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            '{"a": 1,\n "a": 2}',
            "yaml-duplicate-key",
            "duplicate key 'a': JSON tools disagree on which one counts; remove or rename one",
        ),
        (
            '{"a": NaN}',
            "yaml-syntax",
            "NaN is not JSON (no JSON tool reads it); write a number or text",
        ),
        ('{"a": 1,\n "b": }', "yaml-syntax", "JSON syntax: Expecting value"),
        ("# a comment\n{}", "yaml-syntax", "JSON syntax: Expecting value"),
    ],
)
def test_json_files_that_are_not_json(tmp_path: Path, text: str, code: str, message: str) -> None:
    folder = write(tmp_path, {"s.json": text})
    with pytest.raises(ConfigError) as caught:
        read_document(folder.parent / "s.json")
    ((found),) = caught.value.problems
    assert (found.code, found.message) == (code, message)


def test_an_empty_file_is_none(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, {"c.yaml": "# nothing\n"}).parent / "c.yaml")
    assert doc.data is None


@pytest.mark.parametrize(
    ("text", "where", "code", "message"),
    [
        (
            "a: [1, 2\nb: 3\n",
            (2, 2),
            "yaml-syntax",
            "YAML syntax: expected ',' or ']', but got ':' (while parsing a flow sequence "
            "started at line 1)",
        ),
        (
            "a:\n  b: 1\n  b: 2\n",
            (3, 3),
            "yaml-duplicate-key",
            "duplicate key 'b' (first at line 2): YAML would silently keep only the last one; "
            "remove or rename one",
        ),
        (
            "a: &x [*x]\n",
            (1, 4),
            "yaml-recursive",
            "an alias refers to a value that contains it; a config cannot be recursive",
        ),
        ("? [a]\n: 1\n", (1, 3), "yaml-key-invalid", "a mapping key must be text, found a list"),
        (
            "a: 1\n\tb: 2\n",
            (2, 1),
            "yaml-syntax",
            "YAML syntax: found character '\\t' that cannot start any token (while scanning "
            "for the next token)",
        ),
    ],
)
def test_yaml_problems_name_line_and_column(
    tmp_path: Path, text: str, where: tuple[int, int], code: str, message: str
) -> None:
    path = write(tmp_path, {"c.yaml": text}).parent / "c.yaml"
    with pytest.raises(ConfigError) as caught:
        read_document(path)
    (found,) = caught.value.problems
    assert (found.location.line, found.location.column) == where
    assert (found.code, found.message) == (code, message)
    assert str(found) == f"{path}:{where[0]}:{where[1]}: error: {message} [{code}]"


def test_alias_bombs_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = write(tmp_path, {"c.yaml": "\n".join(lines) + "\n"}).parent / "c.yaml"
    with pytest.raises(ConfigError) as caught:
        read_document(path)
    assert caught.value.problems[0].code == "yaml-too-large"


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(ConfigError) as caught:
        read_document(path)
    assert caught.value.problems[0].message == "not UTF-8 text (byte 3); save the file as UTF-8"


# The config's own schema


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  queue: email.send\n",
            "  queue: email.send\n  prefech: 10\n",
            [
                (
                    4,
                    3,
                    "/source: unknown key 'prefech'; expected one of: arguments, dead_letter, "
                    "declare, durable, max_in_flight_bytes, max_redeliveries, prefetch, queue, "
                    "type; did you mean 'prefetch'?",
                )
            ],
        ),
        (
            "    routing_key: transactional\n",
            "",
            [(9, 3, "/targets/transactional: missing required key 'routing_key'")],
        ),
        (
            "  queue: email.send\n",
            "  queue: email.send\n  type: quorom\n  prefetch: 0\n",
            [
                (
                    4,
                    9,
                    "/source/type: text 'quorom' is not one of: classic, quorum; did you "
                    "mean 'quorum'?",
                ),
                (5, 13, "/source/prefetch: 0 is less than the minimum of 1"),
            ],
        ),
        ("version: 1\n", "version: 2\n", [(1, 10, "/version: must be 1, got 2")]),
        (
            "  transactional:\n",
            "  trans actional:\n",
            [
                (
                    9,
                    3,
                    "/targets: 'trans actional' is not a valid name: use letters, digits, '_', "
                    "'.' and '-', starting with a letter or digit",
                )
            ],
        ),
        (
            "rules:\n",
            "rules: []\nold_rules:\n",
            [
                (
                    16,
                    1,
                    "/: unknown key 'old_rules'; expected one of: limits, rejected, rules, "
                    "schema_version, schemas, source, sources, targets, unmatched, version; did "
                    "you mean 'rules'?",
                ),
                (15, 1, "/rules: must not be empty"),
            ],
        ),
    ],
)
def test_config_schema_problems_name_the_key_and_the_value(
    tmp_path: Path, old: str, new: str, expected: list[tuple[int, int, str]]
) -> None:
    assert old in CONFIG
    path = config(tmp_path, CONFIG.replace(old, new, 1))
    found = problems_of(path)
    assert sorted((line, col, msg) for line, col, _, msg in found) == sorted(expected)
    assert {code for _, _, code, _ in found} == {"config-schema"}


# Compiling targets and rules


def test_every_problem_of_a_config_is_reported_at_once(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "rules:\n",
        """\
rules:
  - name: bad-regex
    when: {field: customer_id, regex: "(cus"}
    category: transactional
    target: transactional
  - name: everything
    category: transactional
    target: transactionl
""",
    )
    found = problems_of(config(tmp_path, text, SCHEMA.replace("type: string", "type: strin")))
    assert [(code, line, col) for line, col, code, _ in found] == [
        ("schema-invalid", 6, 23),
        ("regex-invalid", 17, 39),
        ("target-unknown", 22, 13),
        ("rule-duplicate-name", 23, 11),  # the shipped catch-all is named `everything` too
    ]


def test_build_keeps_what_compiled_beside_the_problems(tmp_path: Path) -> None:
    text = CONFIG.replace("    target: transactional\n", "    target: nowhere\n")
    text += "  - name: last\n    category: transactional\n    target: transactional\n"
    result = build(config(tmp_path, text))
    assert [p.code for p in result.problems] == ["target-unknown"]
    assert result.table is not None
    assert [r.name for r in result.table.rules] == ["last"]


@pytest.mark.parametrize(
    ("routing_key", "message"),
    [
        (
            "tx.{}",
            "routing key 'tx.{}' has an empty {}; write a field path inside, like {customer_id}",
        ),
        ("tx.{a", "routing key 'tx.{a' has an unbalanced brace; fields are written {name}"),
        ("a}.{b}", "routing key 'a}.{b}' has an unbalanced brace; fields are written {name}"),
        (
            "bulk.{partition}",
            "target 'transactional': routing key 'bulk.{partition}' uses {partition} but the "
            "target has no `partition`",
        ),
    ],
)
def test_routing_key_templates(tmp_path: Path, routing_key: str, message: str) -> None:
    text = CONFIG.replace("routing_key: transactional", f'routing_key: "{routing_key}"')
    # `{b}` also names a field the schema does not declare: lint's check, run by load too.
    assert (11, 18, "routing-key-invalid", message) in problems_of(config(tmp_path, text))


def test_the_rejected_routing_key_must_be_plain(tmp_path: Path) -> None:
    text = CONFIG.replace("routing_key: rejected", 'routing_key: "rejected.{customer_id}"')
    ((line, _, code, message),) = problems_of(config(tmp_path, text))
    assert (line, code) == (14, "routing-key-invalid")
    assert message.startswith("the rejected routing key must be plain text")


def test_a_catch_all_or_unmatched_is_required(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "    category: transactional\n",
        "    when: {field: a, exists: true}\n    category: transactional\n",
    )
    ((line, col, code, message),) = problems_of(config(tmp_path, text))
    assert (line, col, code) == (15, 1, "no-catch-all")
    assert "add a last rule without `when`" in message
    assert load(config(tmp_path, text.replace("rules:\n", "unmatched: rejected\nrules:\n")))


# Schemas


def test_a_missing_schema_file_is_reported_where_it_is_configured(tmp_path: Path) -> None:
    path = write(tmp_path, {"routes.yaml": CONFIG, "schemas/v1.yml": SCHEMA})
    assert problems_of(path) == [
        (
            7,
            11,
            "file-not-found",
            "schema file 'schemas/v1.yaml' not found (schema files are found relative to the "
            "config's folder); did you mean 'v1.yml'?",
        )
    ]


def test_refs_to_files_outside_the_schema_folders_are_refused(tmp_path: Path) -> None:
    # The docs promise it: what is deployed with the config (a ConfigMap of schemas) must be
    # all routerd reads. The file there is not even read.
    schema = SCHEMA.replace(
        "customer_id: {type: string}", 'customer_id: {$ref: "../shared/id.yaml"}'
    )
    path = config(tmp_path, schema=schema, **{"shared/id.yaml": "type: [broken\n"})
    ((line, column, code, message),) = problems_of(path)
    assert (line, column, code) == (6, 23, "schema-ref-outside")
    assert message.startswith("$ref '../shared/id.yaml' leads outside the schema folders")


def test_refs_to_files_below_the_schema_folders_are_followed(tmp_path: Path) -> None:
    schema = SCHEMA.replace("customer_id: {type: string}", 'customer_id: {$ref: "defs/id.yaml"}')
    path = config(
        tmp_path, schema=schema, **{"schemas/defs/id.yaml": "type: string\nminLength: 1\n"}
    )
    table = load(path)
    assert (tmp_path / "schemas" / "defs" / "id.yaml").resolve() in table.files
    assert table.schemas["1"].is_valid({"schema_version": 1, "customer_id": "c"})
    assert not table.schemas["1"].is_valid({"schema_version": 1, "customer_id": ""})


def test_a_broken_referenced_file_is_reported(tmp_path: Path) -> None:
    schema = SCHEMA.replace("customer_id: {type: string}", 'customer_id: {$ref: "id.yaml"}')
    path = config(tmp_path, schema=schema, **{"schemas/id.yaml": "type: [string\n"})
    ((line, _, code, _),) = problems_of(path)
    assert (line, code) == (2, "yaml-syntax")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            SCHEMA.replace("{type: string}", "{type: strin}"),
            (
                6,
                23,
                "schema-invalid",
                "not a valid JSON Schema (Draft202012) at "
                "/properties/customer_id/type: 'strin' is not one of array, boolean, integer, "
                "null, number, object, string; did you mean 'string'?",
            ),
        ),
        (
            SCHEMA.replace("{type: string}", '{$ref: "#/$defs/id"}'),
            (
                6,
                23,
                "schema-ref-unresolved",
                "$ref '#/$defs/id' does not resolve: v1.yaml has nothing at '/$defs/id'",
            ),
        ),
        (
            SCHEMA.replace("{type: string}", '{$ref: "http://schemas.invalid/id.json"}'),
            (
                6,
                23,
                "schema-ref-unresolved",
                "$ref 'http://schemas.invalid/id.json' is remote, "
                "and routerd never fetches schemas from the network: save that schema as a file "
                "beside this one and refer to it by its file name",
            ),
        ),
        (
            SCHEMA.replace("{type: string}", '{type: string, pattern: "[a-"}'),
            (
                6,
                40,
                "regex-invalid",
                "regex '[a-' at /properties/customer_id/pattern is not a valid ECMA-262 "
                "regular expression (the dialect JSON Schema specifies): unterminated "
                "character set at position 0",
            ),
        ),
        (
            SCHEMA.replace("2020-12", "2099-01"),
            (
                1,
                10,
                "schema-invalid",
                "unknown $schema 'https://json-schema.org/draft/2099-01/"
                "schema': routerd validates with one of http://json-schema.org/draft-04/schema, "
                "http://json-schema.org/draft-06/schema, http://json-schema.org/draft-07/schema, "
                "https://json-schema.org/draft/2019-09/schema, "
                "https://json-schema.org/draft/2020-12/schema",
            ),
        ),
        (
            SCHEMA.replace("{type: string}", "{type: string, const: !!timestamp 2024-01-01}"),
            (
                6,
                38,
                "schema-invalid",
                "/properties/customer_id/const: 2024-01-01 is a YAML "
                "date, which JSON cannot hold; quote it to make it text",
            ),
        ),
        (
            SCHEMA.replace("{type: string}", "{type: number, maximum: .inf}"),
            (
                6,
                40,
                "schema-invalid",
                "/properties/customer_id/maximum: inf is a YAML float, which JSON cannot "
                "hold; quote it to make it text",
            ),
        ),
        (
            "- type: object\n",
            (1, 1, "schema-invalid", "a schema must be a mapping (or true/false)"),
        ),
    ],
)
def test_schema_problems_are_located_in_the_schema_file(
    tmp_path: Path, schema: str, expected: tuple[int, int, str, str]
) -> None:
    path = config(tmp_path, schema=schema)
    with pytest.raises(ConfigError) as caught:
        load(path)
    (found,) = caught.value.problems
    assert found.location.file == (tmp_path / "schemas" / "v1.yaml").resolve()
    assert (found.location.line, found.location.column, found.code, found.message) == expected


def test_loading_never_touches_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    remote = '{$ref: "https://schemas.invalid/id.json"}'
    # In a file reached only through another one's $ref, too.
    schema = SCHEMA.replace("{type: string}", '{$ref: "common.yaml#/$defs/id"}')
    path = config(tmp_path, schema=schema, **{"schemas/common.yaml": f"$defs:\n  id: {remote}\n"})
    ((_, _, code, _),) = problems_of(path)
    assert code == "schema-ref-unresolved"
    assert attempts == []


def test_duplicate_schema_versions(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "targets:\n",
        "  - name: again\n    version: 1\n    file: schemas/v1.yaml\ntargets:\n",
    )
    ((line, col, code, message),) = problems_of(config(tmp_path, text))
    assert (line, col, code) == (9, 14, "schema-duplicate-version")
    assert message.startswith("schema version 1 is declared twice (first by send-request at ")


def test_the_shipped_config_loads() -> None:
    table = load(ROOT / "config" / "routes.yaml")
    assert set(table.schemas) == {"1", "2"}
    assert table.rules[-1].is_catch_all
    assert (ROOT / "schemas" / "common.yaml").resolve() in table.files


def test_problems_print_as_file_line_column() -> None:
    problem = Problem(Location(Path("config/routes.yaml"), 3, 7), "error", "bad", "x")
    assert str(problem) == "config/routes.yaml:3:7: error: bad [x]"
    assert str(ConfigError((problem, problem))) == f"{problem}\n{problem}"
    assert problem.as_dict() == {
        "file": "config/routes.yaml",
        "line": 3,
        "column": 7,
        "severity": "error",
        "message": "bad",
        "code": "x",
    }


def test_libyaml_and_python_read_every_shipped_and_corpus_file_alike() -> None:
    # libyaml parses large configs faster; what it builds must be what the Python parser
    # builds, positions and YAML 1.1 ambiguities included.
    from routerd.config import source

    if source._FastLoader is None:
        pytest.skip("PyYAML was built without libyaml")
    files = [
        *ROOT.glob("config/**/*.yaml"),
        *ROOT.glob("schemas/*.yaml"),
        *ROOT.glob("tests/lint_corpus/**/*.yaml"),
    ]
    compared = 0
    for file in files:
        text = file.read_bytes()
        try:
            slow = source._read_yaml_with(source.Yaml12Loader, file, text, text.decode())
        except ConfigError:
            continue
        fast = source._read_yaml_with(source._FastLoader, file, text, text.decode())
        assert (fast.data, fast.positions, fast.keys, fast.ambiguous) == (
            slow.data,
            slow.positions,
            slow.keys,
            slow.ambiguous,
        ), file
        compared += 1
    assert compared > 50
