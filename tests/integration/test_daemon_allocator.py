"""`routerd serve` fixes glibc's mmap threshold at start (routerd/allocator.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from routerd.allocator import LARGE_BLOCK
from tests.harness.daemon import running_daemon

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.broker,
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's"),
]


async def test_the_daemon_maps_large_blocks(
    isolated_config: Path, amqp_url: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon inherits this environment: without the operator's own threshold.
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    async with running_daemon(
        isolated_config, amqp_url, log_dir, extra_args=["--log-level", "debug"]
    ) as daemon:
        await daemon.wait_for_log(
            rf"blocks of {LARGE_BLOCK} bytes and more are mapped and unmapped", within=10
        )
        assert await daemon.stop(within=30) == 0
