"""SparseGPT's column sweep as one Triton kernel per block of columns (the default on CUDA; ``sparsegpt_sweep``).

The sweep's rows are independent of each other, so each program takes a tile of rows and runs the whole
column loop of the block (128 columns) on it in registers: one launch per block instead of four kernels
per column. The arithmetic is the reference's, operation for operation, so the result is the PyTorch and
C loops' bit for bit:

- a column is pulled out of the tile as a sum with zeros (exact);
- ``err = w / d`` with IEEE division (``div_rn``), where the mask prunes, else 0;
- the later columns minus ``U[i, k] * err``, the product rounded before the subtraction: the kernel is
  launched with ``enable_fp_fusion=False``, so no fused multiply-add;
- N:M: at the start of each group of M columns, the N smallest ``w**2 / d**2`` of each row are pruned
  (the lower column first among exact ties; ``torch.topk`` leaves ties unspecified).

On a CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is first
imported, as tests/conftest.py does): that is how the tests compare it with the PyTorch loop. The tests also
compile it for A100 and H100/H200 (sm_80, sm_90) without a GPU and read the PTX: IEEE divisions only, no
fused multiply-add. On an H200 (2026-12-04) its weights equalled the PyTorch loop's bit for bit on the
LLaMA-2-7B shape and it swept the columns in 38 s against the PyTorch loop's 55 s
(``bench/results/h200-2026-12-04/gpu-7b.json``, from ``bench/gpu.py``);
``sparsegpt.triton_check`` repeats the comparison on a small block on each device before it is used.
"""

from __future__ import annotations

import functools
import os

import torch

BLOCK_ROWS = 16  # rows per program: a 16 x 128 fp32 tile is 16 registers per thread with 4 warps
# no fused multiply-add: the reference rounds the product before the subtraction
LAUNCH_OPTIONS = {"num_warps": 4, "enable_fp_fusion": False}


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreted() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _kernel():
    """The kernel, built on first use: triton is imported only then."""
    import triton
    import triton.language as tl

    @triton.jit
    def sweep(W, stride_w, M, stride_m, U, stride_u, D, Err, rows, width,
              WIDTH: tl.constexpr, BLOCK: tl.constexpr, N: tl.constexpr, GROUP: tl.constexpr):  # fmt: skip
        r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        c = tl.arange(0, WIDTH)  # WIDTH: width rounded up to a power of two; the extra columns stay 0
        inside = (r < rows)[:, None] & (c < width)[None, :]
        w = tl.load(W + r[:, None] * stride_w + c[None, :], mask=inside, other=0.0)
        if N == 0:
            m = tl.load(M + r[:, None] * stride_m + c[None, :], mask=inside, other=0).to(tl.int32)
        else:
            m = tl.zeros([BLOCK, WIDTH], dtype=tl.int32)
        d = tl.load(D + c, mask=c < width, other=1.0)
        err = tl.zeros([BLOCK, WIDTH], dtype=tl.float32)
        for g in range(0, width, GROUP):
            if N > 0:  # N:M: this group's N smallest scores of each row, from the columns as updated so far
                score = tl.math.div_rn(w * w, (d * d)[None, :])
                group = ((c >= g) & (c < g + GROUP) & (c < width))[None, :]
                for t in tl.static_range(GROUP):
                    here = (c == g + t)[None, :]
                    mine = tl.sum(tl.where(here, score, 0.0), axis=1)[:, None]
                    below = group & ((score < mine) | ((score == mine) & (c < g + t)[None, :]))
                    rank = tl.sum(below.to(tl.int32), axis=1)
                    m = tl.where(here & (rank < N)[:, None], 1, m)
            for t in tl.static_range(GROUP):
                i = g + t
                here = (c == i)[None, :]
                w_i = tl.sum(tl.where(here, w, 0.0), axis=1)
                pruned = tl.sum(tl.where(here, m, 0), axis=1) != 0
                e = tl.where(pruned, tl.math.div_rn(w_i, tl.load(D + i, mask=i < width, other=1.0)), 0.0)
                err = tl.where(here, e[:, None], err)
                u = tl.load(U + i * stride_u + c, mask=(c > i) & (c < width), other=0.0)
                product = u[None, :] * e[:, None]
                w = w - product
        w = tl.where(m != 0, 0.0, w)
        tl.store(W + r[:, None] * stride_w + c[None, :], w, mask=inside)
        tl.store(Err + r[:, None] * WIDTH + c[None, :], err, mask=inside)

    return sweep


def triton_sweep(W1: torch.Tensor, U1: torch.Tensor, d1: torch.Tensor, mask1: torch.Tensor, nm):
    """The sweep of one block (``W1``: rows x width fp32, a view whose columns are contiguous), written
    into ``W1`` in place. Returns ``(W1, Err1)`` like ``sparsegpt._sweep``."""
    import triton

    rows, width = W1.shape
    if W1.stride(1) != 1:
        raise ValueError("triton_sweep needs a block whose columns are contiguous (a column slice of W)")
    padded = triton.next_power_of_2(width)
    U1, d1 = U1.contiguous(), d1.contiguous()
    mask = mask1.to(torch.int8).contiguous()
    errors = torch.empty(rows, padded, dtype=W1.dtype, device=W1.device)
    n, group = (0, 1) if nm is None else nm
    _kernel()[(triton.cdiv(rows, BLOCK_ROWS),)](
        W1, W1.stride(0), mask, mask.stride(0), U1, U1.stride(0), d1, errors, rows, width,
        WIDTH=padded, BLOCK=BLOCK_ROWS, N=n, GROUP=group, **LAUNCH_OPTIONS,
    )  # fmt: skip
    return W1, errors[:, :width]
