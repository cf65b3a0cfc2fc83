"""glibc malloc settings for a long-running server, set in-process before its threads start.

Issue 20's soak: RSS went from 445 MB to 2 GB and stayed there when idle. mallinfo2 during a
shortened soak here showed no leak: bytes in use stayed at 180-210 MB while free bytes held
inside the arenas grew from 134 to 525 MB (RSS 610 -> 1,008 MB, idle 984 MB). glibc raises its
mmap threshold each time a large block is freed (up to 32 MiB), so after warm-up the request
buffers and activation tensors (1-30 MB) are carved from per-thread arenas, where a freed
block stays part of the RSS and fragments them. A fixed threshold keeps blocks of 1 MiB and
more in their own mappings, returned to the kernel when freed; two arenas bound the per-thread
heaps. BENCHMARKS.md ("Memory soak") has the before/after.

A MALLOC_MMAP_THRESHOLD_ or MALLOC_ARENA_MAX set in the environment wins (glibc reads those at
start-up). On a libc without mallopt (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20  # bytes: audio arrays and activation tensors are larger
ARENA_MAX = 2
ENV = {M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", M_ARENA_MAX: "MALLOC_ARENA_MAX"}


def configure(settings: dict[int, int] | None = None) -> dict[str, int]:
    """Apply the server's mallopt settings; returns what was set, by environment name."""
    wanted = settings or {M_MMAP_THRESHOLD: MMAP_THRESHOLD, M_ARENA_MAX: ARENA_MAX}
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = {}
    for param, value in wanted.items():
        if ENV[param] in os.environ:
            continue
        if mallopt(param, value) == 1:
            applied[ENV[param]] = value
    log.debug("malloc settings: %s", applied)
    return applied
