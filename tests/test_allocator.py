"""service/allocator.py: free arena pages go back to the kernel; the environment's precedence."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's"
)

# 200 blocks of 1 MiB written and freed, but for the last one, which pins the top of the heap
# (so glibc's own top-of-heap trimming at free cannot give any of them back).
PROBE = """
import ctypes, json, sys, time
from service import allocator
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
applied = allocator.configure(interval=0.2) if sys.argv[1] == "configure" else {}
libc.free(ctypes.c_void_p(libc.malloc(16 << 20)))  # glibc: freeing a mapping raises the threshold
blocks = [libc.malloc(1 << 20) for _ in range(200)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
held = rss()
for b in blocks[:-1]:
    libc.free(ctypes.c_void_p(b))
freed = rss()
time.sleep(1.0)  # the trimming thread's turn, when started
print(json.dumps({"applied": applied, "held": held, "freed": freed, "later": rss()}))
"""


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_freed_blocks_stay_resident_without_trimming():
    r = probe("default")
    assert r["later"] > r["held"] - 20  # what grew the soak's RSS: free, yet resident


def test_the_trimming_thread_gives_free_pages_back():
    r = probe("configure")
    assert r["applied"] == {"MALLOC_ARENA_MAX": 2, "trim_interval_s": 0.2}
    assert r["freed"] > r["held"] - 20  # free() alone kept them
    assert r["later"] < r["held"] - 150  # the trim returned them


def test_an_arena_limit_in_the_environment_wins():
    assert probe("configure", MALLOC_ARENA_MAX="4")["applied"] == {"trim_interval_s": 0.2}
