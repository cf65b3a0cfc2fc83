"""service/allocator.py: the malloc settings serve applies, and the environment's precedence."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt parameters are glibc's"
)

PROBE = """
import ctypes, json, sys
from service import allocator
applied = allocator.configure() if sys.argv[1] == "configure" else {}
# A 4 MiB block: below glibc's dynamic threshold once it has risen, above the fixed 1 MiB.
libc = ctypes.CDLL("libc.so.6")
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena","ordblks","smblks","hblks","hblkhd","usmblks","fsmblks","uordblks",
                 "fordblks","keepcost")]
libc.mallinfo2.restype = MI
libc.malloc.restype = ctypes.c_void_p
libc.free(ctypes.c_void_p(libc.malloc(16 << 20)))  # glibc: freeing a mapping raises the threshold
before = libc.mallinfo2().hblks
block = libc.malloc(4 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(ctypes.c_void_p(block))
print(json.dumps({"applied": applied, "mapped": mapped}))
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


def test_serve_settings_keep_big_blocks_in_their_own_mappings():
    result = probe("configure")
    assert result["applied"] == {"MALLOC_MMAP_THRESHOLD_": 1 << 20, "MALLOC_ARENA_MAX": 2}
    assert result["mapped"] == 1  # the 4 MiB block is a mapping, returned to the OS on free


def test_glibc_alone_raises_its_threshold_and_keeps_the_block_in_the_heap():
    assert probe("default")["mapped"] == 0  # what grew the soak's arenas


def test_a_setting_in_the_environment_wins():
    result = probe("configure", MALLOC_MMAP_THRESHOLD_=str(32 << 20))
    assert result["applied"] == {"MALLOC_ARENA_MAX": 2}
    assert result["mapped"] == 0
