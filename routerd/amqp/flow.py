"""Whether the broker blocks a connection's publishes (`connection.blocked`), as events.

A broker short of memory or disk sends `connection.blocked` to every connection that
publishes, then stops reading from them until `connection.unblocked`: no confirm can come
meanwhile. aiormq 7 handles both frames but keeps the state in a private `asyncio.Event`
of its Connection (set while unblocked) and tells nobody. `BlockWatch` replaces that event
with one that also reports each change, so the link can tell the operator and the
publisher can stop its confirm clock while the broker is the one holding things up.
`tests/faults/test_alarm.py` fails if aiormq ever renames the attribute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiormq.abc import AbstractConnection

log = logging.getLogger(__name__)

# aiormq.connection.Connection.__connection_unblocked, name-mangled.
_UNBLOCKED_ATTRIBUTE = "_Connection__connection_unblocked"


class _ReportingEvent(asyncio.Event):
    """aiormq's unblocked event: set while the broker reads the connection; calls back on change."""

    def __init__(self, on_change: Callable[[bool], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def set(self) -> None:
        changed = not self.is_set()
        super().set()
        if changed:
            self._on_change(False)

    def clear(self) -> None:
        changed = self.is_set()
        super().clear()
        if changed:
            self._on_change(True)


class BlockWatch:
    """The blocked state of one connection; `on_change(blocked)` runs on every change."""

    def __init__(self, on_change: Callable[[bool], None] | None = None) -> None:
        self._on_change = on_change
        # The confirm deadlines of publishes awaiting their confirm, with their timeout:
        # none while blocked, a whole timeout again from the moment of the unblock.
        self.deadlines: dict[asyncio.Timeout, float] = {}
        # Told of every change too: the publisher's confirm windows, which time their
        # confirms with one watchdog each rather than a deadline per publish.
        self._listeners: list[Callable[[bool], None]] = []
        self._event = _ReportingEvent(self._changed)
        self._event.set()

    @classmethod
    def of(
        cls, connection: AbstractConnection, on_change: Callable[[bool], None] | None = None
    ) -> BlockWatch:
        """Watch `connection`; without aiormq's event to replace, it never reports a block."""
        watch = cls(on_change)
        current = getattr(connection, _UNBLOCKED_ATTRIBUTE, None)
        if not isinstance(current, asyncio.Event):
            log.warning("cannot watch connection.blocked with this aiormq; alarms go unreported")
            return watch
        if not current.is_set():
            watch._event.clear()
        setattr(connection, _UNBLOCKED_ATTRIBUTE, watch._event)
        return watch

    @property
    def blocked(self) -> bool:
        return not self._event.is_set()

    async def unblocked(self) -> None:
        await self._event.wait()

    def listen(self, on_change: Callable[[bool], None]) -> Callable[[], None]:
        """Call `on_change(blocked)` on every change, until the returned function is called."""
        self._listeners.append(on_change)

        def stop() -> None:
            if on_change in self._listeners:
                self._listeners.remove(on_change)

        return stop

    def _changed(self, blocked: bool) -> None:
        if self.deadlines:
            now = asyncio.get_running_loop().time()
            for deadline, timeout in self.deadlines.items():
                deadline.reschedule(None if blocked else now + timeout)
        for listener in list(self._listeners):
            listener(blocked)
        if self._on_change is not None:
            self._on_change(blocked)
