"""Per-weight importance scores. Pure tensor functions, fp32 out."""

from __future__ import annotations

import torch


def magnitude_score(weight: torch.Tensor) -> torch.Tensor:
    """``|W|``."""
    return weight.detach().abs().to(torch.float32)


def wanda_score(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda's ``|W_ij| * sqrt(r_j)``, ``r`` the mean squared input per column (see stats.InputNorms)."""
    return weight.detach().abs().to(torch.float32) * torch.sqrt(input_norms.to(weight.device)).unsqueeze(0)


def block_wanda_scores(weights: dict[str, torch.Tensor], norms: dict[str, torch.Tensor]) -> torch.Tensor:
    """All Wanda scores of one block's linears, flattened and concatenated (fp32): the per-element
    input of every allocation statistic (OWL, DLP, DSA), whatever the pruner (docs/methods.md#allocations)."""
    return torch.cat([wanda_score(w, norms[name]).flatten() for name, w in weights.items()])


def block_statistics(
    block_weights: list[dict[str, torch.Tensor]], block_norms: list[dict[str, torch.Tensor]], config
) -> list[float]:
    """One allocation statistic per block from the dense weights and dense input norms."""
    from .allocation import dlp_unimportance, dsa_value, owl_outlier_ratio

    values = []
    for index, (weights, norms) in enumerate(zip(block_weights, block_norms)):
        scores = block_wanda_scores(weights, norms)
        if config.allocation == "owl":
            values.append(owl_outlier_ratio(scores, config.owl_m))
        elif config.allocation == "dlp":
            values.append(dlp_unimportance(scores, config.dlp_statistic))
        elif config.allocation == "dsa":
            values.append(dsa_value(scores, config.dsa_graph, block=index))
        else:
            values.append(0.0)
    return values
