"""Keep freed memory in the process heap (glibc on Linux).

glibc hands every freed block over its mmap threshold (32 MB at most) back to the operating system, so a
forward pass that allocates and frees 200 MB of logits pays its page faults again on every call: on a
2-core VM that was up to half of a LoRA step in system time. The Makefile sets ``MALLOC_MMAP_MAX_`` and
``MALLOC_TRIM_THRESHOLD_`` for every process it starts; the command-line tools, and the notebooks'
runs (``experiments.before_computing``), call :func:`keep_freed_memory` so that a user who runs them
directly, or opens a notebook in Jupyter, gets the same behaviour. The numbers do
not change (torch aligns every tensor to 64 bytes either way); only where freed memory waits does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: the largest trim threshold it accepts (2 GiB of free memory at the heap's top).
MAX_TRIM_THRESHOLD = 2**31 - 1

ENV_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def on_glibc() -> bool:
    """Whether this process runs on Linux with glibc, the only C library whose mallopt this module knows."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep up to 2 GiB of freed memory there, via glibc's mallopt.

    Returns True when the settings were applied. Does nothing (returns False) outside glibc, or when the
    environment already sets ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_`` (the user's choice, which
    glibc read at start-up). Call it once, at the start of a program that owns its process. Peak resident
    memory may grow a little (a Wanda run with 4 LoRA steps: 4.1-4.5 GiB either way, run to run).
    """
    if any(name in os.environ for name in ENV_VARIABLES):
        return False
    if not on_glibc():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, MAX_TRIM_THRESHOLD) == 1
    if not applied:
        log.debug("mallopt refused the heap settings; freed memory goes back to the OS as usual")
    return applied
