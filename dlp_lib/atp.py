"""ATP (Huang et al., ICML 2025): per-block sparsity rising linearly with depth, one slope ``beta``.

The authors' main.py (github.com/wzhuang-xmu/ATP) gives block ``l`` of ``L`` (0-based) the sparsity::

    s_l = s - beta * (L - 1) / 2 + l * beta        (an arithmetic progression centred on s)

so the plain mean of the block sparsities is exactly ``s`` (every LLaMA block has the same size, so
plain and parameter-weighted means agree). It exits with "Illegal beta" when
``beta > min(2 s / (L - 1), 2 (1 - s) / (L - 1))``, i.e. when a block would leave [0, 1]. There is no
default beta: main.py requires ``--beta``, and search.sh tries 0.002, 0.004, ... (step 0.002) until
main.py refuses one, keeping the beta with the lowest WikiText-2 *test* perplexity
(docs/methods.md#atp). Densities here are ``1 - s_l``, computed with the reference's float operations
so they match its ratios bit for bit.

Pure functions: no model, no data. Imports only torch and dlp_lib.errors.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

ATP_BETA_STEP = 0.002  # search.sh: beta starts at 0.002 and grows by 0.002 (bc decimals)
ATP_DEFAULT_BETA = None  # the authors' main.py has none (--beta is required); search.sh searches
# search.sh's grid for its own setting (LLaMA-2-7B: 32 blocks, 70% sparsity); atp_beta_grid gives any other
ATP_BETAS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.012, 0.014, 0.016, 0.018)


def _check(n_blocks: int, sparsity: float, beta: float) -> None:
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise ConfigError(f"ATP needs a positive whole number of blocks; got {n_blocks!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ConfigError(f"ATP: sparsity must be in [0, 1); got {sparsity}")
    if not float(beta) >= 0.0:  # also refuses NaN
        raise ConfigError(f"ATP: beta = {beta} is negative; ATP's sparsity rises with depth (beta >= 0, 0 = uniform)")


def _centre(n_blocks: int, weights) -> torch.Tensor | None:
    """The weighted mean block index, or None for equal weights (the reference's (L - 1) / 2)."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (n_blocks,) or not bool((w > 0).all()):
        raise ConfigError(
            f"ATP: weights must be {n_blocks} positive numbers (one per block); got shape {tuple(w.shape)}"
        )
    index = torch.arange(n_blocks, dtype=torch.float64)
    return (w * index).sum() / w.sum()


def atp_largest_beta(n_blocks: int, sparsity: float, weights=None) -> float:
    """The supremum of the betas whose densities all lie in (0, 1]: ``min(2 s, 2 (1 - s)) / (L - 1)``
    for equal weights (the authors' legality bound). The bound on the last block's side is strict (it
    would be left with density 0); the one on the first block's side (density 1) is allowed."""
    _check(n_blocks, sparsity, 0.0)
    if n_blocks == 1:
        return float("inf")
    c = _centre(n_blocks, weights)
    c = (n_blocks - 1) / 2 if c is None else float(c)
    return min(float(sparsity) / c, (1.0 - float(sparsity)) / (n_blocks - 1 - c))


def atp_densities(n_blocks: int, sparsity: float, beta: float, weights=None) -> torch.Tensor:
    """Per-block densities ``1 - s_l`` (float64), first block densest.

    Without ``weights`` this is the reference's arithmetic (main.py) to the last bit. With ``weights``
    (parameter counts per block), the ramp is centred on the weighted mean block index instead, so the
    weighted mean density is ``1 - sparsity`` (the same ramp when all weights are equal).

    Raises ConfigError for a negative beta or one that pushes a density outside (0, 1], naming the
    largest allowed value.
    """
    _check(n_blocks, sparsity, beta)
    s, beta = float(sparsity), float(beta)
    centre = _centre(n_blocks, weights)
    if centre is None:
        first = s - (beta * (n_blocks - 1)) / 2  # main.py: first_term
        rates = torch.tensor([first + i * beta for i in range(n_blocks)], dtype=torch.float64)
        densities = 1.0 - rates
    else:
        index = torch.arange(n_blocks, dtype=torch.float64)
        densities = (1.0 - s) - beta * (index - centre)
    if float(densities.min()) <= 0.0 or float(densities.max()) > 1.0 + 1e-12:
        limit = atp_largest_beta(n_blocks, s, weights)
        raise ConfigError(
            f"ATP: beta = {beta} gives block densities in [{float(densities.min()):.4f}, "
            f"{float(densities.max()):.4f}], outside (0, 1]; at sparsity {s} with {n_blocks} blocks beta must be "
            f"below {limit:.6g} (the authors' search grid: atp_beta_grid({n_blocks}, {s}))"
        )
    return densities.clamp(max=1.0)


def atp_beta_grid(n_blocks: int, sparsity: float, weights=None, step: float = ATP_BETA_STEP) -> tuple[float, ...]:
    """search.sh's betas for this model and sparsity: ``step, 2 step, ...`` (as decimals, e.g. 0.006 not
    0.006000000000000001) while every density stays in (0, 1]. The authors pick the one with the lowest
    WikiText-2 test perplexity; ``ATP_BETAS`` is this grid for their LLaMA-2-7B (32 blocks) at 70%."""
    _check(n_blocks, sparsity, 0.0)
    if n_blocks == 1:
        return ()
    limit = atp_largest_beta(n_blocks, sparsity, weights)
    grid, k = [], 1
    while True:
        beta = round(k * step, 12)
        if beta > limit + 1e-12:
            break
        try:
            atp_densities(n_blocks, sparsity, beta, weights)
        except ConfigError:
            break
        grid.append(beta)
        k += 1
    return tuple(grid)
