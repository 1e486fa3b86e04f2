"""Fixtures shared by every test layer: the broker URL, unique names, isolated configs; and
for the tests that run routerd against the real broker, the test's own connection, the
isolated config's queue names and a folder for the daemon's log.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Broker, QueueNames
from tests.harness.config import source_entries

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "config" / "routes.yaml"
SHIPPED_SCHEMAS = ROOT / "schemas"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def amqp_url() -> str:
    return os.environ.get("ROUTERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps one test's queues and exchanges apart from every other's."""
    return uuid.uuid4().hex[:10]


def isolate_config(data: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Rename every queue and exchange of a parsed routes.yaml so tests never share them."""
    for source in source_entries(data):
        source["queue"] = f"{source['queue']}.{suffix}"
    for target in [*data.get("targets", {}).values(), data["rejected"]]:
        if target.get("exchange"):
            target["exchange"] = f"{target['exchange']}.{suffix}"
        elif target.get("exchange") == "":
            # The default exchange routes by queue name, so the key is the queue name.
            target["routing_key"] = f"{target['routing_key']}.{suffix}"
        for queue in target.get("queues", []):
            queue["name"] = f"{queue['name']}.{suffix}"
    return data


@pytest.fixture
def isolated_config(tmp_path: Path, unique: str) -> Iterator[Path]:
    """A copy of the shipped config and schemas whose queue and exchange names are unique.

    Layout mirrors the repository (config/routes.yaml beside schemas/) so relative schema
    paths resolve the same way.
    """
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    shutil.copytree(SHIPPED_SCHEMAS, tmp_path / "schemas")
    data = yaml.safe_load(SHIPPED_CONFIG.read_text())
    path = config_dir / "routes.yaml"
    path.write_text(yaml.safe_dump(isolate_config(data, unique), sort_keys=False))
    yield path


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
