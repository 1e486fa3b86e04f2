"""Which source queue a publisher puts a send request on: the first source of the route
table whose `accepts` holds for it, the last (catch-all) source otherwise.

Publishers (`routerd.client`, hence `routerd send` and the API) and `routerd explain` ask
here, after `decide`: `accepts` is tested on the decoded body of a valid request, like a
rule's `when`.
"""

from __future__ import annotations

import orjson

from routerd.config.model import MatchContext, RouteTable
from routerd.pipeline.envelope import Decision, Envelope


def source_queue(table: RouteTable, envelope: Envelope, decision: Decision) -> str:
    """The queue to publish `envelope` to; the catch-all for a request routerd rejects (it
    has no valid body to test), where routerd gives its reasons."""
    if len(table.sources) == 1 or decision.rejected or decision.schema_version is None:
        return table.source.queue
    body = orjson.loads(envelope.body)
    ctx = MatchContext(body, envelope.headers, envelope.properties, decision.schema_version)
    return table.source_for(ctx).queue
