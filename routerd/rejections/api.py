"""The account UI's read of rejections: `GET /v1/rejections` of the reference public API.

Only the authenticated customer's rows, newest first, a page at a time; each row as
schemas/rejections/rejection.json describes it, the page as schemas/rejections/page.json. The
customer comes from the API key, never from the query.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from routerd.rejections.record import rejection_json
from routerd.rejections.settings import moment_of
from routerd.rejections.store import Query, RejectionStore

DEFAULT_PAGE = 50
MAX_PAGE = 200


class RejectionsPageError(ValueError):
    """A query parameter the endpoint cannot use (answered 400, naming it)."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(message)


def page_query(customer: str, params: Mapping[str, str], now: datetime) -> Query:
    """The store query for one page of `customer`'s rejections."""
    since = None
    if params.get("since"):
        try:
            since = moment_of(params["since"], now)
        except ValueError as exc:
            raise RejectionsPageError("since", f"since {exc}") from None
    limit = DEFAULT_PAGE
    if params.get("limit"):
        text = params["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
            raise RejectionsPageError("limit", f"limit {text!r}: use 1..{MAX_PAGE}")
        limit = int(text)
    before = None
    if params.get("cursor"):
        text = params["cursor"]
        if not text.isdigit() or len(text) > 19:
            raise RejectionsPageError(
                "cursor", f"cursor {text!r}: pass back the next_cursor of the previous page"
            )
        before = int(text)
    return Query(customer_id=customer, since=since, before_id=before, limit=limit)


async def rejections_page(
    store: RejectionStore, customer: str, params: Mapping[str, str]
) -> dict[str, Any]:
    query = page_query(customer, params, datetime.now(UTC))
    found = await store.find(query)
    full = len(found) == query.limit
    return {
        "rejections": [rejection_json(s.rejection, s.id) for s in found],
        # A full page may have more behind it; the last row's id is where the next starts.
        "next_cursor": str(found[-1].id) if full else None,
    }
