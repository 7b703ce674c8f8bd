"""Calibration statistics as pure accumulators, and a context manager for the hooks that feed them.

Everything is accumulated in fp32 whatever the model's dtype, and the Hessian with TF32 off (or, with
``half=True``, from half-precision inputs as they are: tensor cores on CUDA).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

HALF_DTYPES = (torch.bfloat16, torch.float16)


@contextmanager
def no_tf32():
    """Full fp32 matmuls on CUDA while active: TF32 keeps ~10 mantissa bits, too few for SparseGPT's
    Hessian and its Cholesky factors (the reference switches TF32 off, docs/methods.md#sparsegpt). The
    previous settings are restored afterwards, so the model's own forward passes are unaffected."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32, cudnn.allow_tf32 = False, False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@contextmanager
def one_cpu_thread():
    """torch on one CPU thread while active, then as before. For loops of many small operations (LSA's
    greedy removal, AlphaPruning's spectra of at most 4096 x 4096): threads gain little there, and on a
    CPU busy with other work they lose 10-40x waiting on each other (LSA on one 576 x 1536 weight of the
    embedded model beside another process: 1.6 s on one thread, 73 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class InputNorms:
    """Wanda's statistic for one linear layer: ``r_j = (1/N) * sum over windows and tokens of x_j**2``,
    N the number of windows (docs/methods.md#wanda; the constant factor cancels in every ranking).

    Accumulated with the reference code's running-mean rule, one window at a time, so the float
    result matches it: at 70% sparsity a 1e-6 relative change in ``r`` moves enough weights across
    the threshold to change a small model's perplexity by several percent.
    """

    def __init__(self, d_in: int, device: torch.device | str = "cpu"):
        self.mean = torch.zeros(d_in, dtype=torch.float32, device=device)
        self.windows = 0

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of inputs shaped (windows, tokens, d_in) (or (tokens, d_in) for one window)."""
        if x.dim() == 2:
            x = x.unsqueeze(0)
        sq_norms = torch.linalg.vector_norm(x.to(torch.float32), ord=2, dim=1) ** 2  # (windows, d_in)
        for sq_norm in sq_norms:
            self.mean *= self.windows / (self.windows + 1)
            self.windows += 1
            self.mean += sq_norm / self.windows

    def perturb(self, scale: float, generator: torch.Generator) -> None:
        """Multiply each entry by ``1 + scale * N(0, 1)`` (noise drawn on the CPU, so the same on every device)."""
        noise = torch.randn(self.mean.shape, generator=generator, dtype=torch.float64)
        self.mean *= (1.0 + scale * noise).to(self.mean)


class Hessian:
    """SparseGPT's statistic for one linear layer: ``H = (2/N) * sum over tokens of x x^T`` in fp32,
    N the number of windows (docs/methods.md#sparsegpt), with the reference's running update per batch.

    ``x^T x`` is symmetric, so each update computes only the upper triangle, one band of rows at a
    time (about 60% of the matrix product's work), and mirrors it into the lower one. Every entry is
    the same dot product over the tokens as in the full product, summed in an order the BLAS picks: on
    an AMD EPYC it equals ``addmm_(x.t(), x)`` bit for bit (checked
    with MKL's AVX-512, AVX2 and SSE4.2 code paths); on an Intel Xeon, MKL picks other kernels by shape
    and most entries differ in their last bits, no further from the exact values (tests/test_stats.py).

    ``half=True`` (``PruneConfig.sparsegpt_hessian="half"``), with bf16/fp16 inputs (a half-precision
    model's activations): each update adds ``(2/N) * x^T x`` with ``x^T x`` formed from the inputs as
    they are, on tensor cores on CUDA. Every product of two bf16 (or fp16) numbers is exact in fp32 and the
    sums are fp32, so it differs from the reference only in rounding: the scale applied once to each sum
    instead of to every input, and the order of summation. fp32 without TF32, the reference's
    arithmetic, runs on an H100/H200's CUDA cores at about a tenth of their half-precision tensor-core
    rate, and on the LLaMA-2-7B shape the Hessians are about 1.7 PFLOP. On a CPU the same products are
    formed from exact fp32 copies of the inputs (how the effect on perplexity is measured without a GPU).
    fp32 inputs keep the reference's arithmetic.
    """

    def __init__(self, d_in: int, device: torch.device | str = "cpu", half: bool = False):
        self.matrix = torch.zeros(d_in, d_in, dtype=torch.float32, device=device)
        self.windows = 0
        self.half = half

    def add(self, x: torch.Tensor) -> None:
        windows = x.shape[0] if x.dim() == 3 else 1
        x = x.reshape(-1, x.shape[-1])
        self.matrix *= self.windows / (self.windows + windows)
        self.windows += windows
        if self.half and x.dtype in HALF_DTYPES:
            symmetric_rank_update(self.matrix, x, alpha=2.0 / self.windows)
            return
        x = x.to(torch.float32) * (2.0 / self.windows) ** 0.5
        with no_tf32():
            symmetric_rank_update(self.matrix, x)

    def perturb(self, scale: float, generator: torch.Generator) -> None:
        """Multiply each entry by ``1 + scale * S`` with S symmetric standard-normal noise (drawn on the
        CPU), so the Hessian stays symmetric."""
        noise = torch.randn(self.matrix.shape, generator=generator, dtype=torch.float64)
        symmetric = (noise + noise.t()) / 2**0.5
        self.matrix *= (1.0 + scale * symmetric).to(self.matrix)


def half_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of bf16/fp16 matrices in fp32: every product exact, the sums in fp32. On CUDA cuBLAS forms it
    on tensor cores from the half-precision inputs; elsewhere (no such kernel) from their exact fp32 copies."""
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())


def symmetric_rank_update(H: torch.Tensor, x: torch.Tensor, alpha: float | None = None) -> None:
    """``H += x^T x`` for a symmetric ``H`` (d x d) and ``x`` (tokens x d), in place: the upper
    triangle in bands of rows (band a: rows a..a+b, columns a..d), then the lower one as its mirror.
    Bands about a sixth of ``d`` wide (a multiple of 64, at least 128) keep each product large enough
    to run at full speed; a narrow ``H`` is one plain product. With ``alpha`` (``x`` in half precision):
    ``H += alpha * x^T x``, the product formed in fp32 by :func:`half_product`."""

    def add_product(out, a, b):
        if alpha is None:
            out.addmm_(a, b)
        else:
            out.add_(half_product(a, b), alpha=alpha)

    d = H.shape[0]
    band = max(128, 64 * -(-d // (6 * 64)))
    if d <= band:
        add_product(H, x.t(), x)
        return
    for a in range(0, d, band):
        add_product(H[a : a + band, a:], x[:, a : a + band].t(), x[:, a:])
    for a in range(band, d, band):
        H[a : a + band, :a] = H[:a, a : a + band].t()


@contextmanager
def record_inputs(modules: dict[str, nn.Module], record: Callable[[str, torch.Tensor], None]):
    """While active, call ``record(name, input)`` with the input of every forward call of each module,
    before the module runs (so ``record`` may raise to skip the rest of the forward). The hooks are
    always removed, even if the block raises."""
    handles = [
        module.register_forward_pre_hook(lambda mod, args, name=name: record(name, args[0].detach()))
        for name, module in modules.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
