"""glibc's allocator, told to give large blocks back to the system as soon as they are freed.

A request body near the size limit (1 MiB in the shipped config) goes through several
blocks of about its size: the body joined from its frames, orjson's parse buffer (about 12
times the body, mostly untouched), the parsed text, the frame handed to the writer. glibc
serves blocks over its mmap threshold (128 KiB at start) from fresh mappings, but each
time such a block is freed it raises the threshold to that block's size, up to 32 MiB: from
the first parse of a big body on, every one of those blocks comes from the heap. Freed in
another order than they were taken, they leave holes the heap keeps resident.

Measured with 600 bodies of 1 MiB at a window of 128 (`scripts/bench_big_bodies.py`): at
its peak the daemon had 34-66 MiB of blocks in use and 19-75 MiB free but resident. Over
5 interleaved rounds, peak RSS was 139-171 MiB as glibc leaves it and 96-110 MiB with the
threshold fixed at 512 KiB: blocks that big are mapped for their lifetime and unmapped
when freed, so the peak follows what is in use. The price is the fresh pages of each
mapping: bodies that big route about a third slower (98-129 against 137-192 requests/s of
1 MiB). Requests of a few KB never come near the threshold and route as fast as before
(`scripts/bench_serve.py --baseline`, 6 interleaved rounds: 5,518 against 5,560 requests/s,
medians), with as many page faults (9,900 against 9,790 per 20,000 requests).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt's parameter number for the mmap threshold (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
# Above the broker's frame size (128 KiB): the blocks each frame takes stay in the heap,
# where they are reused at once; below the bodies that make the heap grow holes.
LARGE_BLOCK = 512 * 1024
# glibc reads this at process start; an operator who set it keeps their own threshold.
THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"


def map_large_blocks(threshold: int = LARGE_BLOCK, environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; whether it was set.

    False, changing nothing, when `MALLOC_MMAP_THRESHOLD_` is set (glibc already applied
    it) or the C library has no `mallopt` that takes it (not glibc: musl ignores it, macOS
    has none).
    """
    if THRESHOLD_VARIABLE in environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if done:
        log.debug("blocks of %d bytes and more are mapped and unmapped, not kept", threshold)
    return done
