"""SparseGPT's column sweep on a CPU as a small C function (``sweep.c``), compiled on first use.

The PyTorch loop spends most of its time in call overhead and in passes over memory: four calls and
five passes over the block's later columns per column. The C loop does the same float32 operations on 32 rows at a
time in a cache-resident buffer (faster than the PyTorch loop on a CPU) and is bit-identical to the PyTorch loop (no
fused multiply-add, no reassociation: ``COMPILE_FLAGS``).

The shared library is built with the system C compiler (:mod:`dlp_lib.ckernel`) into the cache directory,
once per source and compiler. Without a compiler, or if the build fails,
SparseGPT uses the PyTorch loop (same results, slower) and says so once in the log.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import subprocess
from pathlib import Path

import torch

from ..ckernel import COMPILE_FLAGS, build, compiler, library_path, load_library  # noqa: F401
from .sweep_torch import _lowest_in_group

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("sweep.c")
CHUNK = 32  # rows per pass, as in sweep.c


def _library_path(cc: list[str]) -> Path:
    """Where the build of ``sweep.c`` with this compiler lives."""
    return library_path(SOURCE, cc)


def _build(cc: list[str], target: Path) -> None:
    build(cc, SOURCE, target)


@functools.cache
def compiled_sweep():
    """The C sweep (a ctypes function), built if needed; None, with one warning, if it cannot be built."""
    try:
        function = load_library(SOURCE).sweep_columns
    except LookupError as error:
        log.warning("%s: SparseGPT uses its PyTorch column loop, same results, slower", error)
        return None
    except (OSError, subprocess.SubprocessError) as error:
        log.warning(
            "could not build SparseGPT's C column loop (%s): using the PyTorch loop, same results, slower", error
        )
        return None
    pointer, integer = ctypes.c_void_p, ctypes.c_long
    function.argtypes = [pointer, integer, pointer, integer, pointer, integer, pointer, integer, pointer]
    function.argtypes += [integer] * 5 + [pointer]
    function.restype = None
    return function


def sweep_columns(W1, errors, mask1, U1, d1, first: int, last: int) -> None:
    """Sweep columns ``[first, last)`` of one block with the C loop, in place: ``W1`` (rows x width, a view
    of the float32 weight), ``errors`` (rows x width), ``mask1`` (bool, rows x width), ``U1`` (width x
    width) with its rows' elements contiguous, ``d1`` contiguous. The pruned entries of the swept
    columns are zeroed."""
    if W1.dtype != torch.float32 or W1.stride(1) != 1 or mask1.dtype != torch.bool or mask1.stride(1) != 1:
        raise ValueError("the C sweep needs float32 weights and a bool mask, each row's columns contiguous")
    rows, width = W1.shape
    scratch = torch.empty(width * CHUNK, dtype=torch.float32)
    compiled_sweep()(
        W1.data_ptr(), W1.stride(0), errors.data_ptr(), errors.stride(0), mask1.data_ptr(), mask1.stride(0),
        U1.data_ptr(), U1.stride(0), d1.data_ptr(), width, first, last, 0, rows, scratch.data_ptr(),
    )  # fmt: skip


def c_sweep(W1, U1, d1, mask1, nm):
    """The sweep with the compiled C loop, in place on the block as it lies in the weight (``W1``: rows
    x width). For N:M each group's mask is chosen just before the C loop sweeps that group."""
    rows, width = W1.shape
    errors = torch.empty(rows, width, dtype=torch.float32)
    U1, d1 = U1 if U1.stride(1) == 1 else U1.contiguous(), d1.contiguous()
    if nm is None:
        sweep_columns(W1, errors, mask1, U1, d1, 0, width)
        return W1, errors
    n, m = nm
    for i in range(0, width, m):
        mask1.scatter_(1, i + _lowest_in_group(W1[:, i : i + m], d1[i : i + m], n), True)
        sweep_columns(W1, errors, mask1, U1, d1, i, min(i + m, width))
    return W1, errors
