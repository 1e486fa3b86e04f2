"""routerd.allocator against this machine's glibc: large blocks are mapped once it is told.

Each case runs in a fresh interpreter, where glibc's thresholds are still its defaults.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from routerd.allocator import LARGE_BLOCK, THRESHOLD_VARIABLE, map_large_blocks

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's"
)

# Frees a 4 MiB block first: glibc then raises its mmap threshold to that size, and a block
# of 1 MiB comes from the heap, unless the threshold was fixed. Counts mapped blocks
# (mallinfo2's hblks) while the 1 MiB block is held.
PROGRAM = """
import ctypes, json, sys
from routerd.allocator import map_large_blocks

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    ).split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
fixed = map_large_blocks() if sys.argv[1] == "fix" else None
first = bytearray(4 * 2**20)
del first
before = libc.mallinfo2().hblks
held = bytearray(2**20)
print(json.dumps({"fixed": fixed, "mapped": libc.mallinfo2().hblks - before}))
"""


def run(mode: str, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k != THRESHOLD_VARIABLE}
    environ |= {"PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-P", "-c", PROGRAM, mode],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_without_it_a_freed_large_block_sends_the_next_ones_to_the_heap() -> None:
    # What the daemon avoids: glibc's own dynamic threshold.
    assert run("leave") == {"fixed": None, "mapped": 0}


def test_fixed_threshold_maps_every_block_over_it() -> None:
    assert run("fix") == {"fixed": True, "mapped": 1}


def test_an_operators_own_threshold_is_left_alone() -> None:
    # glibc applied the variable at start (here: blocks from 8 MiB mapped), and it stays.
    assert run("fix", **{THRESHOLD_VARIABLE: str(8 * 2**20)}) == {"fixed": False, "mapped": 0}


def test_the_variable_alone_keeps_the_threshold_unset() -> None:
    assert map_large_blocks(LARGE_BLOCK, {THRESHOLD_VARIABLE: "131072"}) is False
