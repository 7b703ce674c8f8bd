"""SparseGPT's OBS solver as a pure function: (weight, Hessian, target) -> (new weight, loss).

Follows docs/methods.md#sparsegpt: dead-input handling, damping, Cholesky of the inverse Hessian, a column
sweep with lazy block updates, an adaptive per-block mask (or N:M chosen inside the sweep), and OBS
compensation of the not-yet-pruned columns. Everything runs in fp32, with TF32 off on CUDA.

The per-column sweep inside each block has three implementations with the same arithmetic, so the same
weights bit for bit (``PruneConfig.sparsegpt_sweep``, chosen by :func:`sweep_backend`): the PyTorch loop
(any device), a C loop compiled on first use (CPU) and one Triton kernel per block (CUDA).
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from ..config import SPARSEGPT_SWEEPS, ConfigError
from ..masks import kth_smallest
from ..stats import no_tf32
from .sweep_c import c_sweep, compiled_sweep
from .sweep_torch import torch_sweep
from .sweep_triton import interpreted, triton_available, triton_sweep

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
    sweep: str = "auto",
) -> tuple[torch.Tensor, float]:
    """Prune ``weight`` (rows x cols) to ``sparsity`` (or N:M) and update the kept weights to
    compensate, given the layer's input Hessian ``H`` (cols x cols).

    ``row_groups``: the row counts of several linears that read the same input (q/k/v; gate/up),
    stacked in ``weight`` and sharing ``H``. They are swept together, one column loop instead of one
    per linear, while each keeps its own adaptive mask threshold and its own lazy block update, so the
    result equals solving each linear alone, bit for bit.

    ``sweep``: the column loop, one of ``config.SPARSEGPT_SWEEPS`` (every one gives the same result).

    Returns the new weight (fp32; pruned entries exactly 0) and the OBS loss sum((w-q)^2 / U_ii^2) / 2.
    """
    rows = weight.shape[0]
    groups = [rows] if row_groups is None else list(row_groups)
    if sum(groups) != rows or min(groups) <= 0:
        raise ValueError(f"row_groups {groups} must be positive and add up to the weight's {rows} rows")
    loop = sweep_backend(weight.device, sweep, nm)
    with no_tf32():
        return _solve(weight, H, sparsity, nm, blocksize, percdamp, groups, loop)


# --- which column loop sweeps a block -------------------------------------------------------------------
# environment variables that chose SparseGPT's arithmetic before it became PruneConfig fields
LEGACY_ENVIRONMENT = {"DLP_SPARSEGPT_SWEEP": "sparsegpt_sweep", "DLP_SPARSEGPT_HESSIAN": "sparsegpt_hessian"}
LEGACY_VALUES = {"plain": "auto", "numpy": "auto", "cuda-graph": "auto", "tensor-cores": "half"}  # the rest: as is


def check_no_legacy_environment() -> None:
    """A ConfigError if a variable of ``LEGACY_ENVIRONMENT`` is set: it is no longer read, and a run that
    silently ignored it would not be the run its user asked for."""
    for name, option in LEGACY_ENVIRONMENT.items():
        if name in os.environ:
            value = LEGACY_VALUES.get(os.environ[name], os.environ[name])
            raise ConfigError(
                f"{name} is no longer read: SparseGPT's arithmetic is an option of the run, recorded with it. Unset "
                f"it and pass --{option} {value} to dlp-prune or dlp-search ({option}= in PruneConfig, the "
                f"notebooks' {option} parameter, make reproduce {option.upper()}={value})"
            )


def sweep_backend(device, requested: str = "auto", nm: tuple[int, int] | None = None) -> str:
    """The column loop that sweeps blocks on ``device``: "c", "torch" or "triton", for the requested
    ``PruneConfig.sparsegpt_sweep`` (see ``config.SPARSEGPT_SWEEPS``). The one place a loop is chosen;
    ``prune_model`` calls it before any work, so a loop that cannot run here fails first.

    "auto" takes the C loop on a CPU (the PyTorch loop if it cannot be built) and, on CUDA, the Triton
    kernel once :func:`triton_check` has seen it give the PyTorch loop's results bit for bit on this device
    (on an H200 a 7B solve took 37.9 s with it, 54.8 s without:
    bench/results/h200-2026-12-04/gpu-7b.json); else the PyTorch loop, with a warning.
    An explicit loop that cannot run on ``device`` is a ConfigError."""
    if requested not in SPARSEGPT_SWEEPS:
        raise ConfigError(f"unknown SparseGPT sweep {requested!r}; use one of {', '.join(SPARSEGPT_SWEEPS)}")
    device = torch.device(device)
    if requested == "torch":
        return "torch"
    if requested == "c":
        if device.type != "cpu":
            raise ConfigError(f"the C sweep runs on a CPU, not {device}; use --sparsegpt_sweep auto or torch")
        if compiled_sweep() is None:
            raise ConfigError("the C sweep could not be built (see the warning above: set CC to a C compiler), or "
                              "use --sparsegpt_sweep torch")  # fmt: skip
        return "c"
    if requested == "triton":
        if device.type != "cuda" and not interpreted():
            raise ConfigError(f"the Triton sweep runs on CUDA, not {device}; use --sparsegpt_sweep auto or torch")
        if not triton_available():
            raise ConfigError("the Triton sweep needs the triton package (CUDA builds of torch ship it): "
                              "pip install triton, or use --sparsegpt_sweep torch")  # fmt: skip
        problem = triton_check(str(device), nm)
        if problem:
            raise ConfigError(f"the Triton sweep {problem} on {device}; use --sparsegpt_sweep torch")
        return "triton"
    if device.type == "cpu":
        return "c" if compiled_sweep() is not None else "torch"
    if device.type == "cuda" and triton_available():
        problem = triton_check(str(device), nm)
        if not problem:
            return "triton"
        log.warning(
            "SparseGPT: the Triton sweep %s on %s; using the PyTorch loop (same results, slower)", problem, device
        )
    return "torch"


@functools.cache
def triton_check(device: str, nm: tuple[int, int] | None) -> str | None:
    """None if the Triton sweep gives the PyTorch loop's weights and errors bit for bit on a random
    64 x 128 block on ``device`` (unstructured or ``nm``), else what went wrong. Once per device and pattern:
    it compiles the kernel, and a compiler that fused a multiply-add would show here, before any work."""
    generator = torch.Generator().manual_seed(0)
    W1 = torch.randn(64, 128, generator=generator)
    U1 = torch.randn(128, 128, generator=generator).triu(1) * 0.1 + torch.diag(
        torch.rand(128, generator=generator) + 0.5
    )
    mask1 = torch.rand(64, 128, generator=generator) < (0 if nm else 0.6)
    results = []
    try:
        for loop in ("torch", "triton"):
            W, U, d, mask = W1.to(device), U1.to(device), torch.diag(U1).to(device), mask1.to(device)
            results.append(_sweep(W, U, d, mask, nm, loop))
    except Exception as error:  # noqa: BLE001 - any failure to compile or run means: do not use it
        return f"failed ({type(error).__name__}: {error})"
    (w_torch, e_torch), (w_triton, e_triton) = results
    if not (torch.equal(w_torch, w_triton) and torch.equal(e_torch, e_triton)):
        return "differs from the PyTorch loop"
    return None


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
    ``sweep``: "torch" (:mod:`.sweep_torch`), "c" (:mod:`.sweep_c`) or "triton" (:mod:`.sweep_triton`), from
    :func:`sweep_backend`; the three give the same bits (each multiply, subtract and divide rounded on its
    own, no fused multiply-add)."""
    if sweep == "triton":
        return triton_sweep(W1, U1, d1, mask1, nm)
    if sweep == "c":
        return c_sweep(W1, U1, d1, mask1, nm)
    return torch_sweep(W1, U1, d1, mask1, nm)
