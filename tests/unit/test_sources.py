"""Several source queues: `sources:` in the config, which source a request is published to,
and what a change of sources means for a reload."""

from __future__ import annotations

import textwrap
from pathlib import Path

import orjson
import pytest

from routerd.config.loader import build, load
from routerd.config.model import ConfigError
from routerd.ops.routetest import read_cases
from routerd.pipeline.decide import decide
from routerd.pipeline.envelope import Envelope
from routerd.pipeline.sources import source_queue
from routerd.reload import restart_needed
from tests.factories import encode, mixed

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "routes.yaml"

SCHEMA = """\
$schema: https://json-schema.org/draft/2020-12/schema
type: object
required: [schema_version, customer_id]
properties:
  schema_version: {const: 1}
  customer_id: {type: string}
  region: {type: string}
"""

TAIL = """\
schemas:
  - {name: send-request, version: 1, file: v1.yaml}
targets:
  t: {exchange: email, routing_key: t}
rejected: {exchange: email, routing_key: rejected}
rules:
  - {name: everything, category: c, target: t}
"""


def config(tmp_path: Path, head: str) -> Path:
    (tmp_path / "v1.yaml").write_text(SCHEMA)
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\n" + textwrap.dedent(head) + TAIL)
    return path


EU_FIRST = """\
sources:
  - queue: in.eu
    prefetch: 16
    max_redeliveries: 2
    accepts: {field: region, equals: eu}
  - queue: in
"""


def queue_for(path: Path, body: dict[str, object]) -> str:
    table = load(path)
    envelope = Envelope(encode(body), {}, {})
    return source_queue(table, envelope, decide(table, envelope))


def test_the_first_source_that_accepts_a_request_gets_it(tmp_path: Path) -> None:
    path = config(tmp_path, EU_FIRST)
    table = load(path)
    assert [(s.queue, s.prefetch, s.max_redeliveries) for s in table.sources] == [
        ("in.eu", 16, 2),
        ("in", 256, 5),
    ]
    assert table.source.queue == "in"  # the catch-all
    assert queue_for(path, {"schema_version": 1, "customer_id": "c", "region": "eu"}) == "in.eu"
    assert queue_for(path, {"schema_version": 1, "customer_id": "c", "region": "us"}) == "in"
    assert queue_for(path, {"schema_version": 1, "customer_id": "c"}) == "in"
    # Rejected by routerd: nothing to test `accepts` on, so the catch-all, where routerd
    # rejects it with its reasons.
    assert queue_for(path, {"schema_version": 1, "region": "eu"}) == "in"
    assert table.source_named("in.eu").max_redeliveries == 2
    assert table.source_named("elsewhere").queue == "in"


def test_source_is_the_one_source_form(tmp_path: Path) -> None:
    table = load(config(tmp_path, "source: {queue: in, prefetch: 8}\n"))
    assert [(s.queue, s.prefetch, s.accepts) for s in table.sources] == [("in", 8, None)]


def test_neither_source_nor_sources_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(config(tmp_path, ""))
    (problem,) = caught.value.problems
    assert problem.code == "config-schema"
    assert "missing required key 'source'" in problem.message
    assert "`sources:`" in problem.message


def test_accepts_is_compiled_like_a_when_with_its_errors(tmp_path: Path) -> None:
    head = """\
    sources:
      - queue: in.eu
        accepts: {field: region, equalz: eu}
      - queue: in
    """
    problems = build(config(tmp_path, head)).problems
    assert [(p.code, p.location.line) for p in problems] == [("condition-invalid", 4)]
    assert "did you mean 'equals'" in problems[0].message


def test_every_shipped_route_case_goes_to_the_source_of_its_category() -> None:
    # The shipped `accepts` restates which requests the rules call transactional; a rule
    # change that forgets it would send transactional requests behind the bulk backlog.
    table = load(SHIPPED)
    transactional, catch_all = (s.queue for s in table.sources)
    cases = [c for f in sorted((ROOT / "config" / "tests").glob("*.yaml")) for c in read_cases(f)]
    bodies = [c.envelope for c in cases]
    bodies += [Envelope(body, {}, {}) for _, body in mixed(3000, seed=9)]
    seen = set()
    for envelope in bodies:
        decision = decide(table, envelope)
        queue = source_queue(table, envelope, decision)
        wanted = transactional if decision.category == "transactional" else catch_all
        assert queue == wanted, (orjson.loads(envelope.body), decision.rule)
        seen.add(queue)
    assert seen == {transactional, catch_all}


def test_a_change_of_sources_needs_a_restart(tmp_path: Path) -> None:
    running = load(config(tmp_path, EU_FIRST))
    # The same sources, written on other lines: no change.
    (tmp_path / "moved").mkdir()
    assert restart_needed(running, load(config(tmp_path / "moved", "\n\n" + EU_FIRST))) == ()

    changed_accepts = EU_FIRST.replace("equals: eu", "equals: fr")
    (tmp_path / "a").mkdir()
    (problem,) = restart_needed(running, load(config(tmp_path / "a", changed_accepts)))
    assert problem.code == "restart-required"
    assert problem.message.startswith("sources[0].accepts changed from {'field': 'region'")
    assert "restart routerd" in problem.message

    (tmp_path / "b").mkdir()
    (problem,) = restart_needed(running, load(config(tmp_path / "b", "source: {queue: in}\n")))
    assert problem.message.startswith("the sources changed from [in.eu, in] to [in]")


def test_a_misspelt_key_of_a_source_names_the_source(tmp_path: Path) -> None:
    head = """\
    sources:
      - {queue: in.eu, prefech: 3, accepts: {field: region, equals: eu}}
      - queue: in
    """
    (problem,) = build(config(tmp_path, head)).problems
    assert problem.message.startswith("/sources/0 (source 'in.eu'): unknown key 'prefech'")
    assert "did you mean 'prefetch'?" in problem.message


def test_lint_warns_of_a_field_in_accepts_no_schema_declares(tmp_path: Path) -> None:
    head = """\
    sources:
      - queue: in.eu
        accepts: {field: regoin, equals: eu}
      - queue: in
    """
    problems = build(config(tmp_path, head)).problems
    assert [(p.severity, p.code, p.location.line) for p in problems] == [
        ("warning", "condition-field-unknown", 4)
    ]
    assert problems[0].message.startswith("source 'in.eu': field regoin is not declared by")
    assert "did you mean 'region'?" in problems[0].message


def test_the_window_keeps_bodies_at_the_size_limit_within_the_byte_budget(tmp_path: Path) -> None:
    head = """\
    limits: {max_body_bytes: 1048576}
    sources:
      - {queue: small, max_in_flight_bytes: 8388608, accepts: {field: region, equals: eu}}
      - {queue: tiny, max_in_flight_bytes: 1000, accepts: {field: region, equals: fr}}
      - {queue: few, prefetch: 4, accepts: {field: region, equals: de}}
      - queue: default
    """
    table = load(config(tmp_path, head))
    windows = {source.queue: source.window(table.limits) for source in table.sources}
    # 8 MiB / 1 MiB; under one body still one delivery; a prefetch already under the
    # budget stays; the default budget (128 MiB) lowers 256 to 128.
    assert windows == {"small": 8, "tiny": 1, "few": 4, "default": 128}


def test_the_shipped_sources_hold_at_most_their_budget_of_bodies() -> None:
    table = load(SHIPPED)
    for source in table.sources:
        held = source.window(table.limits) * table.limits.max_body_bytes
        assert held <= source.max_in_flight_bytes, source.queue


def test_a_body_limit_that_lowers_a_window_needs_a_restart_one_that_raises_it_does_not(
    tmp_path: Path,
) -> None:
    def with_limit(folder: str, limit: int) -> Path:
        (tmp_path / folder).mkdir()
        return config(tmp_path / folder, f"limits: {{max_body_bytes: {limit}}}\n" + EU_FIRST)

    running = load(with_limit("running", 4 * 1024 * 1024))  # windows 16 and 32
    # in.eu keeps 16 (its prefetch), in falls from 32 to 16.
    (problem,) = restart_needed(running, load(with_limit("bigger", 8 * 1024 * 1024)))
    assert (problem.code, problem.location.line) == ("restart-required", 2)
    assert problem.message.startswith(
        "limits.max_body_bytes 8388608 lowers sources[1] ('in') from 32 to 16 deliveries"
    )
    assert "restart routerd" in problem.message
    # Smaller bodies let the catch-all's window grow (32 to 128): safe, applied at the next start.
    assert restart_needed(running, load(with_limit("smaller", 1024 * 1024))) == ()
