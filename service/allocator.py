"""glibc malloc for a long-running server: two arenas, and free pages given back while it runs.

Issue 20's soak: RSS went from 445 MB to 2 GB and stayed there when idle. mallinfo2 during a
shortened soak here showed no leak: bytes in use stayed at 180-210 MB while free bytes held
inside the arenas grew from 134 to 525 MB (RSS 610 -> 1,008 MB, idle 984 MB). glibc raises its
mmap threshold each time a large block is freed (up to 32 MiB), so after warm-up the request
buffers and activation tensors are carved from per-thread arenas (13 of them here), where a
freed block stays resident and fragments the heap.

Two remedies were measured (BENCHMARKS.md, "Memory soak"): a fixed 1 MiB mmap threshold kept
RSS flat but cost ~60% more CPU per forward pass (every tensor a fresh mapping, its pages
faulted in again); what `serve` does instead is cap the arenas at two and return the free
pages of every arena to the kernel (malloc_trim) every TRIM_INTERVAL_S from a daemon thread,
which costs a few milliseconds each time and nothing per allocation.

A MALLOC_ARENA_MAX set in the environment wins (glibc reads it at start-up). On a libc without
mallopt/malloc_trim (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
ARENA_MAX = 2
TRIM_INTERVAL_S = 5.0


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def configure(interval: float = TRIM_INTERVAL_S) -> dict[str, object]:
    """Cap the arenas and start the trimming thread (call before the server's threads start);
    returns what was set."""
    libc = _libc()
    if libc is None:
        return {}
    applied: dict[str, object] = {}
    if "MALLOC_ARENA_MAX" not in os.environ and libc.mallopt(M_ARENA_MAX, ARENA_MAX) == 1:
        applied["MALLOC_ARENA_MAX"] = ARENA_MAX
    thread = threading.Thread(
        target=_trim_every, args=(libc, interval), name="malloc-trim", daemon=True
    )
    thread.start()
    applied["trim_interval_s"] = interval
    log.debug("malloc settings: %s", applied)
    return applied


def _trim_every(libc: Any, interval: float) -> None:
    while True:
        time.sleep(interval)
        libc.malloc_trim(0)
