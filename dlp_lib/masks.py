"""Pruning masks from scores. Pure tensor functions; ``True`` marks a weight to prune (set to 0)."""

from __future__ import annotations

import numpy as np
import torch

_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)  # no bfloat16 in NumPy


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest value (1-based, like ``torch.kthvalue``) along the last dimension, kept as a
    dimension of size 1. The k-th order statistic is one value whichever algorithm finds it, so this
    equals ``torch.kthvalue`` (as values: of two tied zeros either sign may come back). On a CPU, with finite
    values, it uses NumPy's introselect, which is faster; on CUDA :func:`kth_smallest_by_topk`, 19-330x faster than
    ``torch.kthvalue`` on an H200 (bench/results/h200-2026-12-04/select.json); NaN rows and bfloat16 on a CPU, and
    other devices, take ``torch.kthvalue`` (MPS has none: its values go through the CPU)."""
    if values.device.type == "cpu" and values.dtype in _NUMPY_FLOATS and bool(torch.isfinite(values).all()):
        selected = np.partition(values.detach().numpy(), k - 1, axis=-1)[..., k - 1 : k]
        return torch.from_numpy(np.ascontiguousarray(selected))
    if values.device.type == "cuda":
        return kth_smallest_by_topk(values, k)
    source = values.cpu() if values.device.type == "mps" else values
    return torch.kthvalue(source, k, dim=-1, keepdim=True).values.to(values.device)


def kth_smallest_by_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`kth_smallest` by ``torch.topk``: the smallest of the ``n - k + 1`` largest values. CUDA's
    ``torch.kthvalue`` works a long slice in one thread block (an H200: 158 ms on a 4096 x 11008 bf16
    matrix, 1.07 ms for a sort, 0.62 ms for topk; a SparseGPT block of 4096 x 128 fp32: 2.4 / 0.08 / 0.11 ms;
    bench/results/h200-2026-12-04/select.json).
    NaN counts as larger than every number, as in ``torch.sort`` and ``torch.kthvalue``: the answer is NaN
    when all of the ``n - k + 1`` largest are, else the smallest number among them. Any device (the tests
    run it on a CPU against ``torch.kthvalue``)."""
    n = values.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}, the length of the last dimension")
    largest = torch.topk(values, n - k + 1, dim=-1, largest=True, sorted=False).values
    nan = torch.isnan(largest)
    smallest = largest.masked_fill(nan, float("inf")).amin(dim=-1, keepdim=True)
    return smallest.masked_fill(nan.all(dim=-1, keepdim=True), float("nan"))


def per_row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune exactly ``int(d_in * sparsity)`` lowest-scoring weights in every output row (Wanda's
    comparison group). Ties are broken by column order (stable sort), so the mask is deterministic.

    Computed with a selection instead of the reference's full stable sort (less work than sorting): every score
    below the row's k-th smallest, then the leftmost of those equal to it, which is exactly the first ``k`` indices
    of the stable sort. Rows with NaN take the sort itself."""
    k = int(score.shape[1] * sparsity)
    if k == 0:
        return torch.zeros_like(score, dtype=torch.bool)
    if score.device.type == "mps" or not bool(torch.isfinite(score).all()):
        order = torch.sort(score, dim=1, stable=True).indices[:, :k]
        return torch.zeros_like(score, dtype=torch.bool).scatter_(1, order, True)
    kth = kth_smallest(score, k)
    below = score < kth
    tied = score == kth
    return below | (tied & (tied.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))


def whole_matrix_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune every weight whose score is <= the value at sorted index ``int(numel * sparsity)``
    (magnitude's whole-matrix comparison group, as the reference code does: this prunes at least one
    weight more than ``int(numel * sparsity)``, plus ties). ``sparsity == 0`` prunes nothing."""
    if sparsity <= 0:
        return torch.zeros_like(score, dtype=torch.bool)
    flat = score.flatten()
    k = min(int(flat.numel() * sparsity), flat.numel() - 1)
    threshold = kth_smallest(flat, k + 1)
    return score <= threshold


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune the ``n`` lowest-scoring weights in every group of ``m`` consecutive input columns of
    each row (N:M semi-structured sparsity, N = zeros per group)."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"N:M sparsity needs the input size ({cols}) to be a multiple of M={m}")
    groups = score.reshape(rows, cols // m, m)
    lowest = torch.topk(groups, n, dim=-1, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True)
    return mask.reshape(rows, cols)


def cumulative_score_mask(score: torch.Tensor, alpha: float) -> torch.Tensor:
    """Wanda's appendix variant: per row, prune every weight up to the largest sorted score whose
    cumulative sum is <= ``alpha`` times the row total (docs/methods.md#wanda)."""
    sorted_scores, _ = torch.sort(score, dim=1)
    cumulative = torch.cumsum(sorted_scores, dim=1)
    keep_count = (cumulative <= alpha * score.sum(dim=1, keepdim=True)).sum(dim=1, keepdim=True)
    # keep_count == 0 picks index -1 (the row maximum) and prunes the whole row, like the reference.
    threshold = torch.gather(sorted_scores, 1, (keep_count - 1) % score.shape[1])
    return score <= threshold


def variant_mask(score: torch.Tensor, sparsity: float, tol: float = 0.001) -> torch.Tensor:
    """Bisection over ``alpha`` for :func:`cumulative_score_mask` until the matrix sparsity is within
    ``tol`` of the target (start 0.4 in [0, 0.8], as the reference code)."""
    alpha, low, high = 0.4, 0.0, 0.8
    mask = cumulative_score_mask(score, alpha)
    achieved = mask.float().mean().item()
    while abs(achieved - sparsity) > tol and high - low >= tol:
        if achieved > sparsity:
            high = alpha
        else:
            low = alpha
        alpha = (low + high) / 2
        mask = cumulative_score_mask(score, alpha)
        achieved = mask.float().mean().item()
    return mask
