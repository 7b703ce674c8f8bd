"""SparseGPT's OBS solver as a pure function: (weight, Hessian, target) -> (new weight, loss).

Follows methods-spec §2.3: dead-input handling, damping, Cholesky of the inverse Hessian, a column
sweep with lazy block updates, an adaptive per-block mask (or N:M chosen inside the sweep), and OBS
compensation of the not-yet-pruned columns. Everything runs in fp32, with TF32 off on CUDA.

The per-column sweep inside each block has interchangeable implementations, all with the same arithmetic:
a C loop compiled on first use (CPU; a NumPy loop where no C compiler is found), a PyTorch loop (other
devices; the default on CUDA) and, opt-in on CUDA through ``DLP_SPARSEGPT_SWEEP`` (see ``SWEEPS``), the
PyTorch loop captured as CUDA graphs or one Triton kernel.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import numpy as np
import torch

from .config import ConfigError
from .masks import kth_smallest
from .sparsegpt_c import compiled_sweep, sweep_columns
from .sparsegpt_triton import interpreted, triton_available, triton_sweep
from .stats import no_tf32

log = logging.getLogger(__name__)


def inverse_hessian_cholesky(
    H: torch.Tensor, percdamp: float = 0.01, retries: int = 6, overwrite: bool = False
) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + damp*I)^-1``, so ``U_ii**2 = [(H_{i:,i:})^-1]_00``.

    If the factorisation fails (H not positive definite in floating point), retry with ten times
    more damping and log it. ``overwrite=True`` adds the damping to ``H``'s diagonal in place instead
    of to a copy (same numbers): at most three d x d matrices are alive, which for a 70B model's
    28672-wide down projection saves two 3.3 GB copies.
    """
    mean_diag = torch.mean(torch.diag(H))
    damp = percdamp * mean_diag if percdamp > 0 else 1e-8 * mean_diag
    H = H if overwrite else H.clone()
    diagonal = H.diagonal()
    undamped = diagonal.clone()
    for attempt in range(retries + 1):
        diagonal.copy_(undamped + damp)  # H + damp * I, bit for bit, without an identity matrix
        L, info = torch.linalg.cholesky_ex(H)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            del L
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                return U
        if attempt < retries:
            log.warning("Cholesky failed with damping %.3g; retrying with 10x more", float(damp))
            damp = damp * 10
    raise RuntimeError("SparseGPT: the Hessian is not positive definite even with strong damping")


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    row_groups: list[int] | None = None,
) -> tuple[torch.Tensor, float]:
    """Prune ``weight`` (rows x cols) to ``sparsity`` (or N:M) and update the kept weights to
    compensate, given the layer's input Hessian ``H`` (cols x cols).

    ``row_groups``: the row counts of several linears that read the same input (q/k/v; gate/up),
    stacked in ``weight`` and sharing ``H``. They are swept together, one column loop instead of one
    per linear, while each keeps its own adaptive mask threshold and its own lazy block update, so the
    result equals solving each linear alone, bit for bit.

    Returns the new weight (fp32; pruned entries exactly 0) and the OBS loss sum((w-q)^2 / U_ii^2) / 2.
    """
    rows = weight.shape[0]
    groups = [rows] if row_groups is None else list(row_groups)
    if sum(groups) != rows or min(groups) <= 0:
        raise ValueError(f"row_groups {groups} must be positive and add up to the weight's {rows} rows")
    sweep = sweep_backend(weight.device)
    with no_tf32():
        return _solve(weight, H, sparsity, nm, blocksize, percdamp, groups, sweep)


# --- which column loop sweeps a block -------------------------------------------------------------------
SWEEP_ENV = "DLP_SPARSEGPT_SWEEP"
SWEEPS = {
    "plain": "C loop on a CPU (NumPy where no C compiler is found), PyTorch loop elsewhere (the default)",
    "numpy": "on a CPU, the NumPy loop (the C loop's results, without compiling it); PyTorch loop elsewhere",
    "cuda-graph": "on CUDA, the PyTorch loop captured once per block shape as a CUDA graph and replayed",
    "triton": "on CUDA (or in Triton's CPU interpreter, TRITON_INTERPRET=1), one Triton kernel per block",
}


def sweep_backend(device) -> str:
    """The column loop that sweeps blocks on ``device``: "c", "numpy", "torch", "cuda-graph" or "triton",
    from ``DLP_SPARSEGPT_SWEEP`` (checked here, before any work; on a CPU the C loop is built here too).
    The CUDA loops apply on CUDA only (Triton's also in its interpreter); a CPU otherwise takes the C loop,
    or the NumPy loop if it is asked for or no C compiler is found."""
    mode = os.environ.get(SWEEP_ENV, "plain")
    if mode not in SWEEPS:
        raise ConfigError(f"{SWEEP_ENV}={mode!r} is not one of {', '.join(SWEEPS)}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if mode == "triton" and (cuda or interpreted()):
        if not triton_available():
            raise ConfigError(
                f"{SWEEP_ENV}=triton needs the triton package (CUDA builds of torch ship it): pip install triton"
            )
        return "triton"
    if mode == "cuda-graph" and cuda:
        return "cuda-graph"
    if device.type != "cpu":
        return "torch"
    return "numpy" if mode == "numpy" or compiled_sweep() is None else "c"


def _solve(weight, H, sparsity, nm, blocksize, percdamp, groups, sweep):
    bounds = [0]
    for count in groups:
        bounds.append(bounds[-1] + count)
    segments = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    W = weight.detach().clone().to(torch.float32)
    H = H.detach().clone().to(device=W.device, dtype=torch.float32)
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    U = inverse_hessian_cholesky(H, percdamp, overwrite=True)  # H is our copy
    del H
    loss = torch.zeros(rows, dtype=torch.float32, device=W.device)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        U1 = U[i1:i2, i1:i2]
        d1 = torch.diag(U1)
        mask1 = torch.zeros((rows, i2 - i1), dtype=torch.bool, device=W.device)
        if nm is None and sparsity > 0:
            score = W[:, i1:i2] ** 2 / d1.unsqueeze(0) ** 2
            for part_rows in segments:  # each linear's threshold over its own rows, as when solved alone
                part = score[part_rows]
                k = min(int(part.numel() * sparsity), part.numel() - 1)
                mask1[part_rows] = part <= kth_smallest(part.flatten(), k + 1)
        W[:, i1:i2], Err1 = _sweep(W[:, i1:i2], U1, d1, mask1, nm, sweep)
        loss += (Err1**2).sum(dim=1) / 2  # (w - q)^2 / U_ii^2 / 2 per pruned entry
        for part_rows in segments:  # per linear: the same matrix product as solving it alone
            W[part_rows, i2:] -= Err1[part_rows] @ U[i1:i2, i2:]
    return W, float(loss.sum())


def _sweep(W1, U1, d1, mask1, nm, sweep):
    """One block's column sweep: prune column i (its mask entries to 0) and push the error onto the
    block's later columns, one column at a time. Returns the pruned block and its errors (rows x width).

    It works on the block transposed, so that each column is a contiguous row (2x faster on a CPU), and
    writes every result in place: the error straight into its row, the rank-1 update's products into
    one buffer. The arithmetic is the reference's, element by element, so the result is bit-identical
    to it: ``err = (w - q) / d`` is ``w / d`` where pruned and 0 elsewhere, column i needs no update of
    its own, and the pruned entries are zeroed once at the end (no later step reads them: column j's
    update uses only the errors, and an N:M group is scored from the columns not yet swept).

    On a CPU the loop runs on NumPy views of the same memory: its calls cost a fraction of PyTorch's
    dispatch, which dominates on narrow layers, and its float32 multiply, subtract and divide round
    exactly as PyTorch's do (no fused multiply-add); the C loop (``sparsegpt_c``, the CPU's default)
    does the same operations compiled. Elsewhere it stays in PyTorch, without a host synchronisation per
    column. ``sweep`` (from :func:`sweep_backend`) may hand the block to a CUDA graph or a Triton kernel
    instead.
    """
    if sweep == "cuda-graph":
        return _graphed_sweep(W1, U1, d1, mask1, nm)
    if sweep == "triton":
        return triton_sweep(W1, U1, d1, mask1, nm)
    if sweep == "c":
        return _c_sweep(W1, U1, d1, mask1, nm)
    W1 = W1.t().contiguous()
    Err1 = torch.empty_like(W1)
    product = torch.empty_like(W1)  # the rank-1 update's terms, written in place (no allocation per column)
    mask_t = mask1.t().contiguous()
    # "numpy" only on a CPU (sweep_backend), and _solve works in float32
    _sweep_columns(W1, Err1, product, mask_t, U1, d1, nm, _numpy_columns if sweep == "numpy" else _torch_columns)
    return W1.t(), Err1.t().contiguous()


def _sweep_columns(W1, Err1, product, mask_t, U1, d1, nm, make_step):
    """The sweep on the transposed block (``W1``: width x rows), in place; ``make_step`` builds the
    per-column step (NumPy or PyTorch)."""
    step = make_step(W1, Err1, product, mask_t, U1, d1)
    for i in range(W1.shape[0]):
        if nm is not None and i % nm[1] == 0:  # N:M: the group's N smallest scores, chosen now
            lowest = _lowest_in_group(W1[i : i + nm[1]].t(), d1[i : i + nm[1]], nm[0])
            mask_t.scatter_(0, (i + lowest).t(), True)
        step(i)
    W1.masked_fill_(mask_t, 0)


def _lowest_in_group(group, d, n):
    """N:M inside the sweep: for each row of ``group`` (rows x M, the group's columns as they are now),
    the indices within the group of its ``n`` smallest ``w**2 / d**2``. The scores are made contiguous
    before ``torch.topk``, so every column loop hands it the same tensor and gets the same choice."""
    scores = (group**2 / d.unsqueeze(0) ** 2).contiguous()
    return torch.topk(scores, n, dim=1, largest=False).indices


def _c_sweep(W1, U1, d1, mask1, nm):
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


def _torch_columns(W1, Err1, product, mask_t, U1, d1):
    """Column i's step in PyTorch: the error row, then the later columns minus its rank-1 products."""
    zero = torch.zeros((), dtype=W1.dtype, device=W1.device)
    columns, errors, masks, diagonal = W1.unbind(0), Err1.unbind(0), mask_t.unbind(0), d1.unbind(0)
    U1_columns = U1.unsqueeze(2)  # U1_columns[i, i + 1 :] is U1[i, i + 1 :] as a column

    def step(i):
        err = errors[i]
        torch.where(masks[i], columns[i], zero, out=err)
        err.div_(diagonal[i])
        later = product[i + 1 :]
        torch.mul(U1_columns[i, i + 1 :], err, out=later)  # the same products, rounded the same way
        W1[i + 1 :].sub_(later)

    return step


def _numpy_columns(W1, Err1, product, mask_t, U1, d1):
    """Column i's step on NumPy views of the same tensors (CPU, float32), the same operations."""
    W, E, P, M = W1.numpy(), Err1.numpy(), product.numpy(), mask_t.numpy()
    U_columns, d = U1.numpy()[:, :, None], d1.numpy()

    def step(i):
        err = E[i]
        np.multiply(W[i], M[i], out=err)  # w where pruned, 0 elsewhere (the mask read live: N:M sets it)
        np.divide(err, d[i], out=err)
        later = P[i + 1 :]
        np.multiply(U_columns[i, i + 1 :], err, out=later)
        np.subtract(W[i + 1 :], later, out=W[i + 1 :])

    return step


# --- the sweep as a CUDA graph (opt-in) ----------------------------------------------------------------
# On a GPU the sweep is four small kernels per column, so its cost is kernel launches: a 7B model has
# about 750,000 columns to sweep. Captured once per block shape as a CUDA graph, one replay launches a
# whole 128-column block. The graph runs the very same PyTorch kernels on static buffers, so its
# results are those of the PyTorch loop; it stays opt-in (DLP_SPARSEGPT_SWEEP=cuda-graph) until a GPU run
# has measured it (bench/gpu.py reports both, with the weights compared).
MAX_GRAPHS = 6  # one per block shape in use (q/k/v, o, gate/up, down, a last partial block)
_graphs: OrderedDict = OrderedDict()


def _capture(run):
    """A CUDA graph of ``run()``: one warm-up on a side stream (capture needs one), then the capture."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph


class _SweepGraph:
    """One block shape's sweep (width x rows, float32, N:M or not) on static buffers, captured once and
    replayed for every block of that shape: copy the block in, replay, read the results out."""

    def __init__(self, width: int, rows: int, nm, device):
        self.W = torch.zeros(width, rows, device=device)
        self.Err = torch.zeros_like(self.W)
        self.product = torch.zeros_like(self.W)
        self.mask = torch.zeros(width, rows, dtype=torch.bool, device=device)
        self.U = torch.eye(width, device=device)
        self.d = torch.ones(width, device=device)
        self.nm = nm
        self.graph = _capture(self._run)

    def _run(self):
        _sweep_columns(self.W, self.Err, self.product, self.mask, self.U, self.d, self.nm, _torch_columns)

    def __call__(self, W1, U1, d1, mask1):
        self.W.copy_(W1.t())
        self.mask.copy_(mask1.t())
        self.U.copy_(U1)
        self.d.copy_(d1)
        self.graph.replay()
        return self.W.t(), self.Err.t().contiguous()  # read before the next replay overwrites them


def _graphed_sweep(W1, U1, d1, mask1, nm):
    key = (W1.shape[1], W1.shape[0], nm, W1.device)
    sweep = _graphs.pop(key, None) or _SweepGraph(*key)
    _graphs[key] = sweep
    while len(_graphs) > MAX_GRAPHS:
        _graphs.popitem(last=False)  # the least recently used
    return sweep(W1, U1, d1, mask1)


def clear_sweep_graphs() -> None:
    """Free the captured sweeps and their buffers (prune_model calls it when done)."""
    _graphs.clear()
