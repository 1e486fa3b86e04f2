"""The recorder's parts that need no broker: a rejected delivery as a row, durations and
settings, the store on a SQLite file, the batch writer, `routerd rejections list`."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from routerd.amqp.connection import Backoff
from routerd.cli import app as cli
from routerd.config.model import SchemaVersionSource
from routerd.ops.common import output_schema
from routerd.pipeline.envelope import Envelope, Reason, ReasonCode
from routerd.rejections.listing import ListRequest, UsageError, query_of
from routerd.rejections.record import Rejection, body_json, rejection_json, rejection_of
from routerd.rejections.settings import RecorderSettings, moment_of, parse_duration
from routerd.rejections.store import Query, RejectionStore, StoreError, database_url
from routerd.rejections.writer import BatchWriter
from routerd.settings import SettingsError
from tests.conftest import ROOT

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = json.loads((ROOT / "schemas" / "rejections" / "rejection.json").read_text())
REASONS = [
    Reason(ReasonCode.SCHEMA_VIOLATION, "'to' is a required property", "", "required"),
    Reason(ReasonCode.SCHEMA_VIOLATION, "'x' is not a 'email'", "/from/email", "format"),
]


def rejected(body: bytes, message_id: str | None = "m-1", **headers: object) -> Envelope:
    """A delivery of the rejected queue as serve publishes it (routerd.pipeline.decide)."""
    all_headers = {
        "x-rejected-reason": REASONS[0].code,
        "x-rejected-reasons": [r.as_dict() for r in REASONS],
        **headers,
    }
    properties = {"message_id": message_id} if message_id else {}
    return Envelope(body, all_headers, properties)


def test_a_rejected_delivery_becomes_a_row_with_every_reason_as_the_headers_say() -> None:
    body = b'{"schema_version": 1, "customer_id": "cus-42", "subject": "hi"}'
    row = rejection_of(rejected(body), NOW)
    assert row.key == "id:m-1" and row.message_id == "m-1"
    assert row.customer_id == "cus-42" and row.schema_version == "1"
    assert row.reasons == tuple(r.as_dict() for r in REASONS)
    assert row.reason == "schema_violation" and row.recorded_at == NOW
    assert row.body == body and row.body_size == len(body)
    assert row.body_sha256 == hashlib.sha256(body).hexdigest()
    jsonschema.validate(rejection_json(row, 1), SCHEMA)


def test_without_a_message_id_the_key_is_the_body_hash() -> None:
    a = rejection_of(rejected(b"not json", None), NOW)
    b = rejection_of(rejected(b"not json", None), NOW + timedelta(hours=1))
    c = rejection_of(rejected(b"not json either", None), NOW)
    assert a.key == b.key == "sha256:" + hashlib.sha256(b"not json").hexdigest()
    assert c.key != a.key and a.customer_id is None and a.schema_version is None


def test_v2_names_its_customer_under_account_and_the_header_version_wins() -> None:
    body = b'{"schema_version": 1, "account": {"id": "acc-7"}}'
    row = rejection_of(rejected(body, **{"x-schema-version": b"2"}), NOW)
    assert row.schema_version == "2" and row.customer_id == "acc-7"
    by_field = rejection_of(
        rejected(b'{"v": 2.0, "account": {"id": "acc-8"}}'),
        NOW,
        versions=SchemaVersionSource(None, ("v",)),
    )
    assert by_field.schema_version == "2" and by_field.customer_id == "acc-8"


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xfe", b"[1]", b'{"schema_version": true}', b'{"customer_id": 5}', b"{" * 50],
)
def test_any_body_makes_a_row_without_a_customer_it_cannot_read(body: bytes) -> None:
    row = rejection_of(rejected(body), NOW)
    assert row.customer_id is None
    jsonschema.validate(rejection_json(row, 1), SCHEMA)


def test_headers_in_bytes_with_nul_or_without_reasons_still_make_clean_text() -> None:
    envelope = Envelope(
        b"{}",
        {"x-rejected-reasons": [{"code": b"invalid_json", "message": b"bad \x00 byte"}, 3]},
        {"message_id": b"m\x00"},
    )
    row = rejection_of(envelope, NOW)
    assert row.reasons == ({"code": "invalid_json", "message": "bad \ufffd byte"},)
    assert row.message_id == "m\ufffd"
    bare = rejection_of(Envelope(b"{}", {"x-rejected-reason": "unroutable"}), NOW)
    assert bare.reason == "unroutable" and "x-rejected-reasons" in bare.reasons[0]["message"]
    assert rejection_of(Envelope(b"{}"), NOW).reason == "internal_error"


def test_a_large_body_is_kept_up_to_the_limit_and_described_whole() -> None:
    body = b'{"a": "' + b"x" * 1000 + b'"}'
    row = rejection_of(rejected(body), NOW, body_limit=100)
    assert len(row.body) == 100 and row.body_size == len(body) and row.body_truncated
    shown = body_json(row.body, row.body_size, row.body_sha256)
    assert shown["truncated"] and shown["encoding"] == "utf-8" and shown["size"] == len(body)
    assert body_json(b"\xff", 1, "0" * 64)["encoding"] == "base64"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("30d", 2592000), ("2w", 1209600), ("45", 45)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0h", "-1h", "1y", "h", "yesterday"])
def test_a_bad_duration_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 90s, 15m, 24h"):
        parse_duration(text)


def test_since_is_a_duration_back_or_a_time() -> None:
    assert moment_of("24h", NOW) == NOW - timedelta(hours=24)
    assert moment_of("2026-01-31T12:00:00Z", NOW) == datetime(2026, 1, 31, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration back from now"):
        moment_of("last week", NOW)


def test_list_options_that_cannot_work_name_the_option() -> None:
    with pytest.raises(UsageError, match="--since 'soon'"):
        query_of(ListRequest(db="x", since="soon"), NOW)
    with pytest.raises(UsageError, match="--reason 'Schema Violation'"):
        query_of(ListRequest(db="x", reason="Schema Violation"), NOW)
    with pytest.raises(UsageError, match="--limit 0"):
        query_of(ListRequest(db="x", limit=0), NOW)


def test_recorder_settings_flags_over_variables() -> None:
    env = {"ROUTERD_REJECTIONS_DB": "/var/lib/r.db", "ROUTERD_REJECTIONS_RETENTION": "7d"}
    settings = RecorderSettings.from_sources({"retention": "24h"}, env)
    assert settings.db == "/var/lib/r.db" and settings.retention == timedelta(hours=24)
    assert settings.common.http_port == 9465
    assert RecorderSettings.from_sources({}, {}).db == "sqlite:///rejections.sqlite3"
    with pytest.raises(SettingsError, match=r"retention 'forever'.*environment variable"):
        RecorderSettings.from_sources({}, {"ROUTERD_REJECTIONS_RETENTION": "forever"})
    with pytest.raises(SettingsError, match=r"batch size '0' .*option --batch-size"):
        RecorderSettings.from_sources({"batch_size": "0"}, {})


def test_database_urls() -> None:
    assert database_url("r.db") == "sqlite+aiosqlite:///r.db"
    assert database_url("sqlite:////tmp/r.db") == "sqlite+aiosqlite:////tmp/r.db"
    assert database_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert database_url("postgres://u:p@h/d") == "postgresql+asyncpg://u:p@h/d"
    with pytest.raises(StoreError, match="use a file path, sqlite:///FILE or postgresql://"):
        RejectionStore.open("mysql://u:secret@h/d")
    try:
        RejectionStore.open("mysql://u:secret@h/d")
    except StoreError as exc:
        assert "secret" not in str(exc)


def rows(n: int, customer: str = "cus-1", start: datetime = NOW) -> list[Rejection]:
    return [
        rejection_of(
            rejected(f'{{"schema_version":1,"customer_id":"{customer}","n":{i}}}'.encode(), None),
            start + timedelta(seconds=i),
        )
        for i in range(n)
    ]


@pytest.fixture
async def store(tmp_path: Path) -> RejectionStore:
    store = RejectionStore.open(str(tmp_path / "r.sqlite3"))
    assert await store.version() == 0
    await store.migrate()
    yield store  # type: ignore[misc]
    await store.close()


async def test_the_store_migrates_once_and_keeps_one_row_per_key(store: RejectionStore) -> None:
    assert await store.migrate() == await store.version() == 2
    batch = rows(5)
    assert await store.add(batch) == 5
    assert await store.add([*batch, *rows(2, "cus-2")]) == 2
    assert await store.count() == 7
    found = await store.find(Query(customer_id="cus-1"))
    assert [s.rejection.key for s in found] == [r.key for r in reversed(batch)]
    assert found[0].rejection == batch[-1]


async def test_the_store_filters_by_reason_time_and_pages(store: RejectionStore) -> None:
    await store.add(rows(10))
    other = rejection_of(
        Envelope(b"x", {"x-rejected-reasons": [{"code": "invalid_json", "message": "m"}]}),
        NOW,
    )
    await store.add([other])
    assert [s.rejection for s in await store.find(Query(reason="invalid_json"))] == [other]
    # "_" is a LIKE wildcard: a code must match as written, not as a pattern.
    assert await store.find(Query(reason="invalid_jso_")) == []
    assert len(await store.find(Query(since=NOW + timedelta(seconds=5)))) == 5
    first = await store.find(Query(limit=4))
    second = await store.find(Query(limit=4, before_id=first[-1].id))
    assert len({s.id for s in first + second}) == 8 and first[-1].id > second[0].id


async def test_retention_deletes_only_older_rows(store: RejectionStore) -> None:
    await store.add(rows(10))
    assert await store.prune(NOW + timedelta(seconds=3)) == 3
    assert await store.count() == 7


class FailingFirst:
    """A store whose first `failures` inserts fail, as a database outage does."""

    def __init__(self, store: RejectionStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.batches: list[int] = []
        self.failed = asyncio.Event()

    async def add(self, batch: list[Rejection]) -> int:
        self.batches.append(len(batch))
        if self.failures:
            self.failures -= 1
            self.failed.set()
            raise ConnectionRefusedError("database down")
        return await self.store.add(batch)


async def test_the_writer_answers_only_after_the_commit_and_retries_a_failed_batch(
    store: RejectionStore,
) -> None:
    flaky = FailingFirst(store, failures=2)
    written: list[tuple[int, int]] = []
    writer = BatchWriter(
        flaky,
        batch_size=100,
        backoff=Backoff(0.01, 0.01),
        on_written=lambda n, d: written.append((n, d)),
    )
    batch = rows(30)
    async with asyncio.timeout(10):
        task = asyncio.create_task(writer.run())
        waits = [asyncio.create_task(writer.record(r)) for r in [*batch, batch[0]]]
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*waits)), 5)
        task.cancel()
    assert await store.count() == 30
    assert flaky.batches[:2] == [31, 31] and sum(n for n, _ in written) == 30
    assert sum(d for _, d in written) == 1 and writer.healthy


async def test_a_record_whose_waiter_left_is_dropped_from_a_failing_batch(
    store: RejectionStore,
) -> None:
    flaky = FailingFirst(store, failures=1)
    writer = BatchWriter(flaky, backoff=Backoff(0.05, 0.05))
    task = asyncio.create_task(writer.run())
    gone, kept = rows(2)
    leaving = asyncio.create_task(writer.record(gone))
    staying = asyncio.create_task(writer.record(kept))
    async with asyncio.timeout(5):
        await flaky.failed.wait()
        assert not writer.healthy
        leaving.cancel()  # its channel closed: the broker delivers it again
        await staying
    task.cancel()
    assert await store.keys() == [kept.key]


async def test_list_prints_a_table_or_the_ops_json(tmp_path: Path) -> None:
    db = str(tmp_path / "r.sqlite3")
    store = RejectionStore.open(db)
    await store.migrate()
    await store.add([*rows(3, "cus-1"), *rows(2, "cus-2")])
    await store.close()
    runner = CliRunner()
    text = await asyncio.to_thread(
        runner.invoke, cli, ["rejections", "list", "--db", db, "--customer", "cus-1"]
    )
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].split()[:4] == ["RECORDED", "(UTC)", "CUSTOMER", "MESSAGE"]
    assert len(lines) == 5 and "cus-2" not in text.output
    assert lines[-1] == "3 rejections (customer cus-1)"
    assert "schema_violation" in lines[1] and "(+1 more)" in lines[1]
    out = await asyncio.to_thread(
        runner.invoke, cli, ["rejections", "list", "--db", db, "--format", "json", "--limit", "2"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    jsonschema.validate(data, output_schema())
    assert data["command"] == "rejections" and data["count"] == 2
    assert data["summary"] == "2 rejections, the newest 2 shown (--limit)"
    for row in data["rejections"]:
        jsonschema.validate(row, SCHEMA)
    missing = await asyncio.to_thread(
        runner.invoke, cli, ["rejections", "list", "--db", str(tmp_path / "nope.db")]
    )
    assert missing.exit_code == 2 and "no such file" in missing.output
    assert not (tmp_path / "nope.db").exists()


async def test_two_recorders_migrating_one_sqlite_file_at_once_end_with_one_schema(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "r.sqlite3")
    stores = [RejectionStore.open(path) for _ in range(3)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores), return_exceptions=True)
        # A loser of the race may fail; the recorder retries, and a retry finds it done.
        assert any(r == 2 for r in results), results
        assert [await s.migrate() for s in stores] == [2, 2, 2]
        assert await stores[0].add(rows(2)) == 2
    finally:
        for store in stores:
            await store.close()
