"""RIA, Relative Importance and Activations (Zhang et al., ICLR 2024, "Plug-and-Play"): score and masks.

Pure tensor functions; ``True`` in a mask marks a weight to prune, as in :mod:`dlp_lib.masks`.

The score of weight ``W_ij`` (row ``i`` = output, column ``j`` = input) is its *relative importance*,
its share of the absolute weight of its output row plus its share of the absolute weight of its input
column, times the input activation's norm to the power ``a``::

    RIA_ij = ( |W_ij| / sum_j' |W_ij'|  +  |W_ij| / sum_i' |W_i'j| ) * sqrt(r_j) ** a

``r_j`` is the statistic Wanda uses and :class:`dlp_lib.stats.InputNorms` accumulates: the sum over
calibration tokens of ``x_j ** 2`` divided by the number of windows, with the running-mean rule of the
reference (its ``WrappedGPT.scaler_row`` is the same quantity, computed the same way). So ``sqrt(r_j)`` is
``||X_j||_2 / sqrt(N)``, and ``sqrt(r_j) ** a`` is the paper's ``||X_j||_2 ** a`` up to the factor
``N ** (-a / 2)``, the same for every weight: it changes no ranking. The authors' default is ``a = 0.5``
(``main.py --a``); ``a = 0`` is their plain "RI" method without activations. There is no epsilon in either
denominator: the reference gives NaN for a weight whose whole row or column is zero. Here ``0 / 0`` counts
as 0 (a zero weight has no importance; the mask then prunes it first), which differs from the reference
only in that case; every other score is the reference's float expression, bit for bit.

Which weights are pruned (the reference's ``lib/prune.py``, ``prune_ria``):

* Unstructured, the default: one threshold for the whole matrix, not per output row as Wanda
  (``--per_outneuron`` is off by default). The reference sorts all scores, takes the value at index
  ``int(numel * sparsity)`` and prunes every score ``<=`` it: one weight more than ``int(numel *
  sparsity)`` (plus ties). :func:`ria_mask` reproduces this with :func:`dlp_lib.masks.whole_matrix_mask`;
  ``per_row=True`` is ``--per_outneuron``: exactly ``int(d_in * sparsity)`` per row, ties to the lower
  column (their stable sort), :func:`dlp_lib.masks.per_row_mask`.
* N:M (``--sparsity_type 2:4``): the ``n`` lowest scores of every ``m`` consecutive input columns of each
  row (``torch.topk`` per group), :func:`dlp_lib.masks.nm_mask`.
* ``--reallocation`` (heuristic channel reallocation, N:M only): the input columns are sorted by the sum
  of their scores, cut into ``m`` equal chunks, and the ``k``-th group of the permuted order receives the
  ``k``-th column of chunks 1, 3, ... and the ``k``-th from the end of chunks 2, 4, ... (a snake pattern), so
  that every group mixes strong and weak channels. The N:M mask is taken in that order and scattered back:
  the result is N:M only after permuting the input channels, and the reference zeroes the weights in place
  without permuting anything (its ``--semi_sparse_acc`` path stores the permuted weights but does not
  permute the inputs; its README calls acceleration after permutation untested).
  :func:`channel_reallocation` and ``ria_nm_mask(..., reallocation=True)`` reproduce it. The further
  ``--lsa`` refinement (linear sum assignment per column slot, with scipy, on a hard-coded ``cuda:7``) and
  the other ``--importance_score`` options are not implemented.

Also not implemented: ``--reconstruction`` (SparseGPT's weight update under the RIA mask, off by default).
"""

from __future__ import annotations

import torch

from .masks import nm_mask, per_row_mask, whole_matrix_mask


def _share(weight: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``weight / total`` with ``0 / 0`` read as 0 (only a zero weight can have a zero total)."""
    return torch.where(total == 0, torch.zeros_like(weight), weight / total)


def relative_importance(weight: torch.Tensor) -> torch.Tensor:
    """RIA's relative importance ``|W_ij| / sum_i' |W_i'j| + |W_ij| / sum_j' |W_ij'|`` in fp32: the
    weight's share of its input column plus its share of its output row (the reference's order of
    operations: column share first)."""
    w = weight.detach().abs().to(torch.float32)
    return _share(w, w.sum(dim=0)) + _share(w, w.sum(dim=1).reshape(-1, 1))


def ria_score(weight: torch.Tensor, input_norms: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """RIA's score ``relative_importance(W) * sqrt(r_j) ** a`` (fp32, the shape of ``weight``).

    ``input_norms`` is ``r``, the per-input-column statistic of :class:`dlp_lib.stats.InputNorms` (the sum
    over calibration tokens of ``x_j ** 2`` over the number of windows, Wanda's and the reference's
    ``scaler_row``); scaling it by ``c`` scales every score by ``c ** (a / 2)``, so masks do not change."""
    norms = input_norms.to(device=weight.device, dtype=torch.float32).reshape(1, -1)
    if norms.shape[1] != weight.shape[1]:
        raise ValueError(f"input_norms has {norms.shape[1]} entries, the weight {weight.shape[1]} input columns")
    return relative_importance(weight) * torch.sqrt(norms) ** a


def ria_mask(score: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """Unstructured RIA mask: the reference's default whole-matrix threshold (every score ``<=`` the one at
    sorted index ``int(numel * sparsity)``: one more than ``int(numel * sparsity)`` weights, plus ties),
    or with ``per_row=True`` (``--per_outneuron``) exactly ``int(d_in * sparsity)`` per output row."""
    if per_row:
        return per_row_mask(score, sparsity)
    return whole_matrix_mask(score, sparsity)


def channel_reallocation(score: torch.Tensor, m: int) -> torch.Tensor:
    """RIA's heuristic channel reallocation: a permutation ``index`` of the input columns such that the
    N:M groups of ``score[:, index]`` mix strong and weak channels.

    Columns are sorted by ascending score sum and cut into ``m`` chunks of ``d_in / m``; position
    ``g * m + c`` of the new order takes the ``g``-th column of chunk ``c`` (counted from its end for odd
    ``c``, the reference's ``flip`` of every second chunk)."""
    cols = score.shape[1]
    if cols % m:
        raise ValueError(f"N:M sparsity needs the input size ({cols}) to be a multiple of M={m}")
    order = torch.sort(score.sum(dim=0)).indices
    index = torch.empty_like(order)
    chunk = cols // m
    for c in range(m):
        part = order[c * chunk : (c + 1) * chunk]
        index[c::m] = part.flip(0) if c % 2 else part
    return index


def ria_nm_mask(score: torch.Tensor, n: int, m: int, reallocation: bool = False) -> torch.Tensor:
    """N:M RIA mask (``n`` pruned of every ``m`` consecutive inputs per row); with ``reallocation`` the
    groups are taken in the order of :func:`channel_reallocation` and the mask is mapped back to the
    original columns (N:M only once the input channels are permuted by that index)."""
    if not reallocation:
        return nm_mask(score, n, m)
    index = channel_reallocation(score, m)
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[:, index] = nm_mask(score[:, index], n, m)
    return mask
