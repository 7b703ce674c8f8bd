"""LSA's layer-wise statistic (BeiYazi0/LSA, ICLR 2026): how much a block's output suffers when half of
each linear's inputs are removed.

For every linear of a block, with ``H = (2/N) sum x x^T`` over the dense model's calibration inputs (the
SparseGPT Hessian, :class:`dlp_lib.stats.Hessian`), the authors' ``BlockWanda.blk_s`` removes, in every
row, ``int(group * fraction)`` weights from each group of ``group`` input columns, one at a time, each
time the one that adds the least to the row's reconstruction error ``e^T H e`` (``e`` the removed
weights, nothing compensated), and sums the errors over rows. A block's statistic is the magnitude of
the mean of its linears' sums (layersp/blk.py, ``blk_score``); the blocks come from a dense pass (no
pruning between blocks). The sparsities follow DLP's affine template with direction -1 and width
``beta`` (as the code has it, a larger error gives a sparser block; the errors grow with depth, with
the activations): ``s_l = s + 2 beta
(x_l - mean x) / (max x - min x)``. ``beta`` defaults to the authors' table by target sparsity
(``LSA_BETAS``). Quirks and what we do: docs/methods.md#lsa.

The greedy removal runs for all rows of a linear at once: adding weight ``j`` to the removed set ``S``
adds ``w_j^2 H_jj + 2 w_j sum_{i in S} H_ji w_i``; removing one weight updates that cost for every
other column of the row with one column of ``H``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import subprocess
from pathlib import Path

import torch

from .ckernel import load_library
from .errors import ConfigError
from .stats import one_cpu_thread

log = logging.getLogger(__name__)

LSA_GROUP = 128  # --block: input columns per group
LSA_FRACTION = 0.5  # --resp: fraction of each group removed
# layersp/blk.py BLK.alpha, indexed by int(10 * sparsity); index 0 (below 10%) is --Lamda (0.08 by default)
LSA_BETAS = {0: 0.08, 1: 0.06, 2: 0.02, 3: 0.04, 4: 0.02, 5: 0.04, 6: 0.10, 7: 0.15, 8: 0.12}


def lsa_default_beta(sparsity: float) -> float:
    """The authors' width for ``sparsity`` (their table has no entry at 90% or above)."""
    index = int(float(sparsity) * 10)
    if index not in LSA_BETAS:
        raise ConfigError(
            f"LSA's authors give no beta at sparsity {sparsity:g} (their table stops at 0.8x); pass --lsa_beta"
        )
    return LSA_BETAS[index]


def check_lsa_settings(group: int, fraction: float) -> None:
    """A whole group size and a fraction that removes at least one and at most every column of a group."""
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ConfigError(f"LSA: lsa_group must be a positive whole number of columns; got {group!r}")
    if not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) <= 1.0 or int(group * fraction) < 1:
        raise ConfigError(
            f"LSA: lsa_fraction must be in (0, 1] and remove at least one of {group} columns; got {fraction!r}"
        )


@torch.no_grad()
def lsa_error(
    weight: torch.Tensor, hessian: torch.Tensor, group: int = LSA_GROUP, fraction: float = LSA_FRACTION, loop="auto"
):
    """The summed reconstruction error of removing ``int(group * fraction)`` weights per row from every
    group of ``group`` input columns, greedily, in float32 (the authors' ``blk_s``).

    As in the reference, the removal cost of a column includes its cross terms with the weights removed
    from earlier groups of the same row, and a last, narrower group still loses ``int(group * fraction)``
    columns per row (SmolLM2's 576 = 4 x 128 + 64 columns: the last group loses all 64). A last group
    narrower than that has nothing left to remove (the reference then adds infinities): refused.

    ``loop``: "auto" runs each group's steps in a C loop on a CPU (:func:`compiled_greedy`), "torch" the
    PyTorch loop; both give the same bits.
    """
    check_lsa_settings(group, fraction)
    if loop not in ("auto", "torch"):
        raise ConfigError(f"LSA: loop must be 'auto' or 'torch'; got {loop!r}")
    with one_cpu_thread() if weight.device.type == "cpu" else contextlib.nullcontext():
        return _greedy_error(weight.detach().float(), hessian, group, fraction, loop)


SOURCE = Path(__file__).with_name("lsa_greedy.c")


@functools.cache
def compiled_greedy():
    """The C loop of one group (``lsa_greedy.c``, a ctypes function), built on first use; None, with one
    warning, without a compiler or when the build fails (the PyTorch loop then runs: same bits, slower)."""
    try:
        function = load_library(SOURCE).lsa_group
    except (LookupError, OSError, subprocess.SubprocessError) as error:
        log.warning("LSA's C loop is unavailable (%s): using the PyTorch loop, same results, slower", error)
        return None
    pointer, integer = ctypes.c_void_p, ctypes.c_long
    # cost, its row stride, w, its row stride, H[start, start], its row stride, rows, width, steps, chosen, removed
    function.argtypes = [pointer, integer] * 3 + [integer] * 3 + [pointer, pointer]
    function.restype = None
    return function


def _greedy_error(w: torch.Tensor, hessian: torch.Tensor, group: int, fraction: float, loop: str = "auto") -> float:
    h = hessian.to(device=w.device, dtype=torch.float32).contiguous()
    w = w.contiguous()
    rows, columns = w.shape
    per_group = int(group * fraction)
    kernel = compiled_greedy() if loop == "auto" and w.device.type == "cpu" else None
    cost = w.square() * torch.diagonal(h)  # adding column j alone: w_j^2 H_jj
    total = torch.zeros((), dtype=torch.float32, device=w.device)
    row_index = torch.arange(rows, device=w.device)
    for start in range(0, columns, group):
        stop = min(start + group, columns)
        if stop - start < per_group:
            raise ConfigError(
                f"LSA: the last group of a {columns}-column weight has {stop - start} columns, fewer than the "
                f"{per_group} to remove; choose lsa_group dividing {columns}"
            )
        local = cost[:, start:stop]  # a view: updates reach ``cost``
        removed = torch.zeros(rows, stop - start, device=w.device)
        if kernel is not None:
            chosen = torch.empty(per_group, rows)
            kernel(
                local.data_ptr(), cost.stride(0), w[:, start:].data_ptr(), w.stride(0), h[start, start:].data_ptr(),
                h.stride(0), rows, stop - start, per_group, chosen.data_ptr(), removed.data_ptr(),
            )  # fmt: skip
            for step in chosen:  # each step's costs summed as the PyTorch loop sums them
                total += step.sum()
        else:
            for _ in range(per_group):
                pick = torch.argmin(local, dim=1)
                total += local[row_index, pick].sum()
                picked = w[row_index, start + pick]
                local += 2.0 * w[:, start:stop] * picked[:, None] * h[start + pick, start:stop]
                local[row_index, pick] = torch.inf
                removed[row_index, pick] = picked
        if stop < columns:  # cross terms of this group's removals with the columns still to come
            cost[:, stop:] += 2.0 * w[:, stop:] * (removed @ h[start:stop, stop:])
    return float(total)


def lsa_block_statistic(errors: dict[str, float]) -> float:
    """|mean| of a block's per-linear errors (the authors take it over a float32 tensor)."""
    values = torch.tensor(list(errors.values()), dtype=torch.float32)
    return abs(float(values.mean()))
