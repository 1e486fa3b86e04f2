"""Fixtures for tests that run `routerd serve` as a subprocess against the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import Broker, QueueNames


@pytest.fixture
async def broker(amqp_url: str, isolated_config: Path, anyio_backend: str) -> AsyncIterator[Broker]:
    """The test's own connection; deletes the isolated config's queues and exchanges after."""
    async with Broker(amqp_url) as b:
        b.track_config(isolated_config)
        yield b


@pytest.fixture
def names(isolated_config: Path) -> QueueNames:
    return QueueNames.of(isolated_config)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"
