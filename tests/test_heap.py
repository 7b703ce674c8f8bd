"""keep_freed_memory: glibc serves a large block from the heap and keeps it there after free."""

import json
import os
import subprocess
import sys

import pytest

from dlp_lib import heap

GLIBC = heap.on_glibc()

# Allocates and frees 64 MiB through libc and reports glibc's own accounting (mallinfo2, glibc >= 2.33).
PROBE = r"""
import ctypes, json, sys
from dlp_lib.heap import keep_freed_memory

applied = keep_freed_memory() if sys.argv[1] == "apply" else None
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print(json.dumps({"mallinfo2": False}))
    sys.exit(0)
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
before = libc.mallinfo2()
block = libc.malloc(64 << 20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({
    "mallinfo2": True,
    "applied": applied,
    "mmapped_during": during.hblkhd - before.hblkhd,
    "heap_grown_after_free": after.arena - before.arena,
}))
"""


def _probe(mode):
    env = {k: v for k, v in os.environ.items() if k not in heap.ENV_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    if not result["mallinfo2"]:
        pytest.skip("this glibc has no mallinfo2 (older than 2.33)")
    return result


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_default_glibc_maps_a_large_block_and_returns_it():
    result = _probe("default")
    assert result["mmapped_during"] >= 64 << 20
    assert result["heap_grown_after_free"] < 64 << 20


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_serves_a_large_block_from_the_heap_and_keeps_it():
    result = _probe("apply")
    assert result["applied"] is True
    assert result["mmapped_during"] == 0
    assert result["heap_grown_after_free"] >= 64 << 20


@pytest.mark.parametrize("name", heap.ENV_VARIABLES)
def test_an_explicit_environment_setting_wins(monkeypatch, name):
    monkeypatch.setenv(name, "0")
    assert heap.keep_freed_memory() is False
