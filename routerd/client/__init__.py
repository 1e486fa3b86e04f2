"""`routerd.client`: the shared contract for services that publish send requests to routerd.

```python
from routerd.client import Publisher, RequestInvalid

async with Publisher("amqp://guest:guest@127.0.0.1:5672/", config="config/routes.yaml") as pub:
    message_id = await pub.send(request)  # returns once the broker confirmed it
```

With the route config, a request routerd would reject raises `RequestInvalid` (with the very
reasons routerd would give) and is not sent. `BlockingPublisher` offers the same for
synchronous code. Every error is a `PublishError`; see docs/client.md.
"""

from __future__ import annotations

from routerd.client._blocking import BlockingPublisher
from routerd.client._publisher import Publisher
from routerd.client.errors import (
    BrokerUnavailable,
    ConfigError,
    NotConfirmed,
    NotConfirmedCause,
    PublishError,
    RequestInvalid,
    Unroutable,
)
from routerd.pipeline.envelope import Reason, ReasonCode

__all__ = [
    "BlockingPublisher",
    "BrokerUnavailable",
    "ConfigError",
    "NotConfirmed",
    "NotConfirmedCause",
    "PublishError",
    "Publisher",
    "Reason",
    "ReasonCode",
    "RequestInvalid",
    "Unroutable",
]
