"""Where rejections are kept: one SQLAlchemy Core code path for SQLite and PostgreSQL.

The only module of routerd that imports SQLAlchemy. The schema is created and migrated by
`RejectionStore.migrate()`: `MIGRATIONS` is an ordered list, the version reached is kept
in `routerd_rejections_version`, and each step runs once, in its own transaction. A
redelivered rejection is the same row: `key` is unique and inserts do nothing on conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from routerd.observe.logs import redact_url
from routerd.rejections.record import Rejection

log = logging.getLogger(__name__)

DEFAULT_DB = "sqlite:///rejections.sqlite3"
# Any constant shared by every recorder: the key of the advisory lock migrations take.
MIGRATION_LOCK = 0x726A6374


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out: SQLite keeps no zone, PostgreSQL keeps timestamptz."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        # SQLite compares the stored text: one zone-less form for every row keeps it ordered.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

rejections = sa.Table(
    "routerd_rejections",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("key", sa.Text, nullable=False, unique=True),
    sa.Column("message_id", sa.Text),
    sa.Column("customer_id", sa.Text),
    sa.Column("schema_version", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    # Every reason code between commas (",schema_violation,too_many_errors,"), so that
    # `--reason` finds any of them with one LIKE on both databases.
    sa.Column("codes", sa.Text, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("rule", sa.Text),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("published_at", UTCDateTime),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("body_size", sa.Integer, nullable=False),
    sa.Column("body_sha256", sa.Text, nullable=False),
)
version_table = sa.Table(
    "routerd_rejections_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

Migration = Callable[[sa.Connection], None]


# The account UI's query (one customer, newest first) and retention's (oldest first).
by_customer = sa.Index("ix_routerd_rejections_customer", rejections.c.customer_id, rejections.c.id)
by_time = sa.Index("ix_routerd_rejections_recorded_at", rejections.c.recorded_at)


def _v1_table(connection: sa.Connection) -> None:
    # CreateTable, not Table.create(): the latter would also create indexes of later steps.
    connection.execute(sa.schema.CreateTable(rejections))


def _v2_indexes(connection: sa.Connection) -> None:
    for index in (by_customer, by_time):
        connection.execute(sa.schema.CreateIndex(index))


# Append only: a released step never changes, a new one goes at the end.
MIGRATIONS: tuple[Migration, ...] = (_v1_table, _v2_indexes)


class StoreError(Exception):
    """The database cannot be used: names the (password-free) URL and what to do."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = redact_url(url)
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"rejections database {self.url}: {self.problem}"


def database_url(text: str) -> str:
    """The SQLAlchemy async URL for `--db`: a file path or sqlite:///, postgresql://..."""
    if "://" not in text:
        return f"sqlite+aiosqlite:///{Path(text)}"
    scheme, _, rest = text.partition("://")
    drivers = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
    }
    return f"{drivers.get(scheme, scheme)}://{rest}"


@dataclass(frozen=True, slots=True)
class StoredRejection:
    """A rejection as read back: its row id orders it (newest is highest)."""

    id: int
    rejection: Rejection


@dataclass(frozen=True, slots=True)
class Query:
    """What `rejections list` and the API ask for; None means "any"."""

    customer_id: str | None = None
    since: datetime | None = None
    reason: str | None = None
    # Only rows older than this id: the API's next page.
    before_id: int | None = None
    limit: int = 50


class RejectionStore:
    """The rejections database; `open()` it, `migrate()` it once, `close()` it at the end."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = (
            insert(rejections)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(rejections.c.id)
        )

    @classmethod
    def open(cls, text: str = DEFAULT_DB, *, create: bool = True) -> RejectionStore:
        """The store at `text` (see `database_url`); a SQLite file is made when missing,
        unless not `create` (a reader must not leave an empty file behind)."""
        url = database_url(text)
        try:
            # pool_pre_ping: a connection that died with the database is replaced before
            # use, so the recorder recovers without a restart once the server is back.
            engine = create_async_engine(url, pool_pre_ping=True)
        except (ArgumentError, ImportError, ValueError) as exc:
            raise StoreError(
                url,
                f"{exc}; use a file path, sqlite:///FILE or postgresql://USER@HOST:PORT/DB",
            ) from None
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise StoreError(url, "only SQLite and PostgreSQL are supported")
        if engine.dialect.name == "sqlite":
            path = engine.url.database
            if not create and path and path != ":memory:" and not Path(path).exists():
                raise StoreError(
                    url, "no such file; give the recorder's --db (or ROUTERD_REJECTIONS_DB)"
                )
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine, url)

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    async def close(self) -> None:
        await self.engine.dispose()

    async def migrate(self) -> int:
        """Bring the schema to the last version; returns the version it is at.

        Recorders starting together may migrate at once: on PostgreSQL a transaction-level
        advisory lock makes them take turns. On SQLite the one that loses the race fails its
        step (the table exists) and rolls back; the recorder retries `migrate()`, which then
        finds the schema done.
        """
        while True:
            async with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                await conn.run_sync(lambda c: version_table.create(c, checkfirst=True))
                current = await self._version(conn)
                if current >= len(MIGRATIONS):
                    return current
                await conn.run_sync(MIGRATIONS[current])
                if current == 0:
                    await conn.execute(version_table.insert().values(version=1))
                else:
                    await conn.execute(version_table.update().values(version=current + 1))
                log.info("rejections database migrated", extra={"version": current + 1})

    async def version(self) -> int:
        """The schema version of the database; 0 before the first `migrate()`."""
        async with self.engine.connect() as conn:
            exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(version_table.name))
            return await self._version(conn) if exists else 0

    async def _version(self, conn: AsyncConnection) -> int:
        value = await conn.scalar(sa.select(sa.func.max(version_table.c.version)))
        return int(value or 0)

    async def add(self, batch: Sequence[Rejection]) -> int:
        """Insert in one transaction, skipping keys already recorded; returns how many were new."""
        if not batch:
            return 0
        async with self.engine.begin() as conn:
            # Many parameter sets for one cached statement: SQLAlchemy's "insertmanyvalues"
            # sends them as a few multi-row INSERTs, RETURNING only the rows inserted.
            result = await conn.execute(self._insert, [_row(r) for r in batch])
            return len(result.all())

    async def find(self, query: Query) -> list[StoredRejection]:
        """Rows matching `query`, newest first."""
        statement = sa.select(rejections).order_by(rejections.c.id.desc()).limit(query.limit)
        if query.customer_id is not None:
            statement = statement.where(rejections.c.customer_id == query.customer_id)
        if query.since is not None:
            statement = statement.where(rejections.c.recorded_at >= query.since)
        if query.reason is not None:
            code = f",{query.reason},"
            statement = statement.where(rejections.c.codes.contains(code, autoescape=True))
        if query.before_id is not None:
            statement = statement.where(rejections.c.id < query.before_id)
        async with self.engine.connect() as conn:
            result = await conn.execute(statement)
            return [_stored(row._mapping) for row in result]

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(rejections)) or 0)

    async def keys(self) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.scalars(sa.select(rejections.c.key))).all())

    async def prune(self, before: datetime) -> int:
        """Delete rows recorded before `before`; returns how many went."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                rejections.delete().where(rejections.c.recorded_at < before)
            )
            return int(result.rowcount)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `rejections list` and the API read while the recorder writes; the busy
    # timeout makes a writer wait for another rather than fail at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _row(r: Rejection) -> dict[str, Any]:
    return {
        "key": r.key,
        "message_id": r.message_id,
        "customer_id": r.customer_id,
        "schema_version": r.schema_version,
        "reason": r.reason,
        "codes": "," + ",".join(r.codes) + ",",
        "reasons": [dict(reason) for reason in r.reasons],
        "rule": r.rule,
        "recorded_at": r.recorded_at,
        "published_at": r.published_at,
        "body": r.body,
        "body_size": r.body_size,
        "body_sha256": r.body_sha256,
    }


def _stored(row: Any) -> StoredRejection:
    reasons: Iterable[dict[str, str]] = row["reasons"]
    return StoredRejection(
        id=int(row["id"]),
        rejection=Rejection(
            key=row["key"],
            message_id=row["message_id"],
            customer_id=row["customer_id"],
            schema_version=row["schema_version"],
            reasons=tuple(reasons),
            rule=row["rule"],
            recorded_at=row["recorded_at"],
            published_at=row["published_at"],
            body=bytes(row["body"]),
            body_size=int(row["body_size"]),
            body_sha256=row["body_sha256"],
        ),
    )
