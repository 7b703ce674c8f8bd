"""Layer-wise allocation: one scalar statistic per decoder block -> one density per block.

OWL, DLP, DSA and LSA are one affine template (docs/methods.md#one-template-for-owl-dlp-and-dsa)::

    d_l = (1 - s) + 2 * width * direction * (x_l - mean(x)) / (max(x) - min(x))

with ``direction = +1`` for OWL (more outliers -> denser) and ``-1`` for DLP, DSA and LSA (larger
statistic -> sparser). The density range is exactly ``2 * width`` and the (parameter-weighted) mean
density is exactly ``1 - s``. Pure functions of per-block statistics: no model, no data.
"""

from __future__ import annotations

import logging

import torch

from .config import TEMPLATE_WIDTHS, ConfigError, PruneConfig
from .dsa_ops import (  # noqa: F401  (the DSA names were defined here before dsa_ops existed)
    DSA_MATRIX_ONLY,
    DSA_PREPROCESS,
    DSA_REDUCTION,
    DSA_TRANSFORM,
    GRAPH_FORM,
    dsa_value,
    parse_dsa_graph,
)

log = logging.getLogger(__name__)

DIRECTION = {"owl": +1.0, "dlp": -1.0, "dsa": -1.0, "lsa": -1.0}
MIN_DENSITY = 0.01  # clipping never leaves a block with fewer than 1% of its weights


# ------------------------------------------------------------------------------ block statistics
def owl_outlier_ratio(scores: torch.Tensor, m: float) -> float:
    """Percentage of a block's Wanda scores above ``m`` times their mean (OWL's statistic)."""
    return 100.0 * float((scores > m * scores.mean()).sum()) / scores.numel()


def dlp_unimportance(scores: torch.Tensor, statistic: str = "mean") -> float:
    """|mean| (the reference code) or |median| (the paper) of a block's Wanda scores (DLP's statistic)."""
    value = scores.mean() if statistic == "mean" else scores.median()
    return abs(float(value))


# --- DSA's graph expressions (docs/methods.md#dsa) ---


# ------------------------------------------------------------------------------ the template
def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum()


def affine_densities(statistic, sparsity: float, width: float, direction: float, weights=None) -> torch.Tensor:
    """The module docstring's template in float64, mean weighted by ``weights`` (parameter counts)."""
    x = torch.as_tensor(statistic, dtype=torch.float64)
    w = torch.ones_like(x) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    spread = x.max() - x.min()
    if spread == 0:
        return torch.full_like(x, 1.0 - sparsity)  # all blocks alike: nothing to allocate
    z = direction * (x - _weighted_mean(x, w)) / spread
    return (1.0 - sparsity) + 2.0 * width * z


def largest_width(statistic, sparsity: float, direction: float, weights=None) -> float:
    """The largest alpha/Lamda that keeps every block's density inside (0, 1]."""
    z = affine_densities(statistic, sparsity, 0.5, direction, weights) - (1.0 - sparsity)
    limits = [float("inf")]
    if z.max() > 0:
        limits.append(sparsity / float(z.max()) / 2.0)
    if z.min() < 0:
        limits.append((1.0 - sparsity) / float(-z.min()) / 2.0)
    return min(limits)


def clip_and_redistribute(densities, sparsity: float, weights=None, low: float = MIN_DENSITY) -> torch.Tensor:
    """Clip densities to [low, 1] and shift the unclipped blocks so the weighted mean stays 1 - s."""
    d = torch.as_tensor(densities, dtype=torch.float64).clone()
    w = torch.ones_like(d) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    target = 1.0 - sparsity
    for _ in range(len(d) + 1):
        d = d.clamp(low, 1.0)
        gap = target - _weighted_mean(d, w)
        if gap.abs() < 1e-12:
            break
        free = (d < 1.0) if gap > 0 else (d > low)  # blocks that can move in the gap's direction
        if not free.any():
            break
        d[free] += gap * w.sum() / w[free].sum()
    return d


def allocate(statistic, config: PruneConfig, weights=None) -> torch.Tensor:
    """Per-block densities for ``config.allocation`` from per-block statistics.

    Refuses a width that would push a block outside (0, 1] (naming the largest allowed value),
    unless ``config.clip_densities`` asks to clip and redistribute.
    """
    n = len(statistic)
    if config.allocation == "uniform":
        return torch.full((n,), 1.0 - config.sparsity, dtype=torch.float64)
    width = config.width
    field, _, authors_name = TEMPLATE_WIDTHS[config.allocation]
    direction = DIRECTION[config.allocation]
    densities = affine_densities(statistic, config.sparsity, width, direction, weights)
    if densities.min() <= 0 or densities.max() > 1 + 1e-12:
        if not config.clip_densities:
            limit = largest_width(statistic, config.sparsity, direction, weights)
            raise ConfigError(
                f"{config.allocation}: {authors_name} ({field}) = {width} gives block densities in "
                f"[{float(densities.min()):.4f}, {float(densities.max()):.4f}], outside (0, 1]; the largest "
                f"allowed value at sparsity {config.sparsity} is {limit:.4f} (or ask for clipping: --clip_densities)"
            )
        densities = clip_and_redistribute(densities, config.sparsity, weights)
    return densities


def nm_per_block(densities, n: int, m: int) -> list[int]:
    """Integer zeros-per-group for each block so that the average is exactly ``n`` (blocks of equal
    size): each block's ideal ``m * (1 - d_l)`` shifted to mean ``n``, floored, and the leftover units
    given to the largest remainders. Every value stays within [0, m - 1]."""
    d = torch.as_tensor(densities, dtype=torch.float64)
    ideal = m * (1.0 - d)
    ideal = (ideal - ideal.mean() + n).clamp(0, m - 1)
    floor = ideal.floor()
    leftover = int(round(n * len(d) - float(floor.sum())))
    # largest remainders first; ties go by the unclamped ideal so a denser block never gets more zeros
    raw = m * (1.0 - d)
    key = (ideal - floor) + 1e-9 * (raw - raw.min()) / (raw.max() - raw.min() + 1e-12)
    order = torch.argsort(key, descending=leftover > 0, stable=True)
    result = floor.clone()
    step = 1 if leftover > 0 else -1
    i = 0
    while leftover != 0:
        j = int(order[i % len(d)])
        if 0 <= result[j] + step <= m - 1:
            result[j] += step
            leftover -= step
        i += 1
    return [int(v) for v in result]
