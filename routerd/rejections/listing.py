"""`routerd rejections list`: what ops read to answer "why was my mail not sent?".

Follows the ops tools' contract (routerd/ops/common.py, docs/ops-output.md): a text table
and a summary line, or with `--format json` the envelope (`command` `rejections`) plus
`summary`, `query`, `count` and `rejections`, each as schemas/rejections/rejection.json describes.
Exit 0 once the query ran (also when it found nothing), 2 when an option or the database
must be fixed first, with one line on standard error saying what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from routerd.ops.common import Command, ExitCode, OutputFormat, envelope, plural, write_json
from routerd.rejections.record import rejection_json
from routerd.rejections.settings import moment_of
from routerd.rejections.store import Query, RejectionStore, StoredRejection, StoreError

MAX_LIMIT = 10_000
_CODE = re.compile(r"[a-z][a-z0-9_]*")
# Text table columns are cut to this many characters; --format json has everything.
DETAIL_WIDTH = 70


class UsageError(ValueError):
    """An option `rejections list` cannot use; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class ListRequest:
    db: str
    customer: str | None = None
    since: str | None = None
    reason: str | None = None
    limit: int = 50


def query_of(asked: ListRequest, now: datetime) -> Query:
    """The store query for the options, or UsageError naming the option and the fix."""
    since: datetime | None = None
    if asked.since is not None:
        since = since_of(asked.since, now)
    if asked.reason is not None and not _CODE.fullmatch(asked.reason):
        raise UsageError(
            f"--reason {asked.reason!r}: give a reason code such as schema_violation "
            "(docs/rejections.md lists them)"
        )
    if not 1 <= asked.limit <= MAX_LIMIT:
        raise UsageError(f"--limit {asked.limit}: use 1..{MAX_LIMIT}")
    return Query(
        customer_id=asked.customer or None, since=since, reason=asked.reason, limit=asked.limit
    )


def since_of(text: str, now: datetime) -> datetime:
    """`--since` as a time; UsageError naming the option and the fix."""
    try:
        return moment_of(text, now)
    except ValueError as exc:
        raise UsageError(f"--since {exc}") from None


async def list_rejections(
    asked: ListRequest, fmt: OutputFormat, out: TextIO, err: TextIO
) -> ExitCode:
    try:
        query = query_of(asked, datetime.now(UTC))
        store = RejectionStore.open(asked.db, create=False)
    except (UsageError, StoreError) as exc:
        print(f"routerd rejections list: {exc}", file=err)
        return ExitCode.BROKEN
    try:
        if await store.version() == 0:
            raise StoreError(
                store.url,
                "it holds no rejections yet; `routerd rejections record` creates them "
                "(is --db or ROUTERD_REJECTIONS_DB the recorder's?)",
            )
        found = await store.find(query)
    except StoreError as exc:
        print(f"routerd rejections list: {exc}", file=err)
        return ExitCode.BROKEN
    except Exception as exc:
        first = str(exc).split("\n", 1)[0]
        print(
            f"routerd rejections list: cannot read {store.shown_url}: {first}; is the "
            "database running and the URL right?",
            file=err,
        )
        return ExitCode.BROKEN
    finally:
        await store.close()
    summary = _summary(found, asked)
    if fmt is OutputFormat.JSON:
        write_json(
            out,
            envelope(
                Command.REJECTIONS,
                ExitCode.OK,
                [],
                summary=summary,
                query=_query_json(asked, query),
                count=len(found),
                rejections=[rejection_json(s.rejection, s.id) for s in found],
            ),
        )
    else:
        write_table(out, found)
        out.write(summary + "\n")
    return ExitCode.OK


def write_table(out: TextIO, found: list[StoredRejection]) -> None:
    if not found:
        return
    rows = [("RECORDED (UTC)", "CUSTOMER", "MESSAGE ID", "REASON", "DETAIL")]
    for stored in found:
        r = stored.rejection
        first = r.reasons[0]
        detail = " ".join(x for x in (first.get("pointer"), first.get("message")) if x)
        more = len(r.reasons) - 1
        if more:
            detail = f"{detail} (+{more} more)"
        rows.append(
            (
                r.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.customer_id or "-",
                r.message_id or "-",
                r.reason,
                _cut(detail, DETAIL_WIDTH),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[4]]).rstrip() + "\n")


def _summary(found: list[StoredRejection], asked: ListRequest) -> str:
    parts = []
    if asked.customer:
        parts.append(f"customer {asked.customer}")
    if asked.reason:
        parts.append(f"reason {asked.reason}")
    if asked.since:
        parts.append(f"since {asked.since}")
    scope = f" ({', '.join(parts)})" if parts else ""
    capped = f", the newest {asked.limit} shown (--limit)" if len(found) >= asked.limit else ""
    return f"{plural(len(found), 'rejection')}{scope}{capped}"


def _query_json(asked: ListRequest, query: Query) -> dict[str, Any]:
    return {
        "customer": asked.customer,
        "since": query.since.isoformat().replace("+00:00", "Z") if query.since else None,
        "reason": asked.reason,
        "limit": asked.limit,
    }


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
