"""AlphaPruning (Lu et al., NeurIPS 2024): how heavy-tailed each weight matrix's spectrum is, per block.

For every linear weight ``W`` the authors' code (github.com/haiquanlu/AlphaPruning, lib/esd_utils.py)
fits a power law to the eigenvalues of ``W^T W`` (the squared singular values, ascending) with the Hill
estimator: for a lower cut-off at the i-th eigenvalue ``x_i`` of ``N``, with ``n = N - i``::

    alpha_i = 1 + n / sum_{j >= i} log(x_j / x_i)
    D_i     = max_{j >= i} | 1 - (x_j / x_i) ** (1 - alpha_i) - (j - i) / n |     (Kolmogorov-Smirnov)

Their default ("xmin_peak") tries every cut-off up to 1.5 times the left edge of the fullest of 100
equal bins of ``log10(x)`` and keeps the one with the smallest ``D``; "xmin_mid" takes ``i = N // 2``.
A block's score is the plain mean of its linears' alphas, and (lib/prune.py, ``ww_sparsity``) the
scores map linearly to factors in ``[1 - epsilon, 1 + epsilon]`` (higher alpha, i.e. a lighter tail and
a less trained matrix, gets the larger factor: more sparsity), scaled so that the parameter-weighted
mean sparsity is the target. Quirks and what we do: docs/methods.md#alphapruning.

The estimator here evaluates every cut-off at once (cumulative sums, one matrix of KS distances per
chunk of cut-offs) in float64, where the authors loop over cut-offs in float32: the same alphas to
about 1e-5, thousands of times faster. The histogram and the candidate cut-offs use the authors' float32
operations, so both pick among the same cut-offs.
"""

from __future__ import annotations

import torch

from .errors import ConfigError
from .stats import one_cpu_thread

ALPHA_ESTIMATORS = {
    "xmin_peak": "the authors' default: the cut-off with the smallest KS distance, up to 1.5x the histogram peak",
    "xmin_mid": "the cut-off at the middle eigenvalue (one Hill estimate per matrix)",
}
ALPHA_DEFAULT_EPSILON = 0.3  # main.py's default and the README's LLaMA-2-7B Wanda command
HISTOGRAM_BINS = 100
_CHUNK = 256  # cut-offs per KS matrix: bounded memory on 4096-wide spectra


def eigenvalues(weight: torch.Tensor) -> torch.Tensor:
    """The squared singular values of ``weight``, ascending, in float64: the eigenvalues of the smaller
    Gram matrix ``W W^T`` or ``W^T W`` formed in float64 (about 20x faster than the authors' float32
    ``svdvals(W) ** 2`` on a CPU, and closer to the exact values: theirs carry relative errors of about
    1e-6 on the embedded model's matrices, these about 1e-14)."""
    w = weight.detach().double().cpu()
    with one_cpu_thread():
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        return torch.linalg.eigvalsh(gram).clamp(min=0.0).sort().values


def _peak_candidates(eigs: torch.Tensor) -> tuple[int, int]:
    """The range [first, last] of cut-off indices "xmin_peak" tries, with the authors' float32 tests.

    Their lower bound compares an eigenvalue with ``log10(0.95 * peak)`` (a logarithm against a linear
    value); it is kept as it is, so both implementations try the same cut-offs."""
    logs = torch.log10(eigs.float())
    low, high = logs.min(), logs.max()
    counts = torch.histc(logs, HISTOGRAM_BINS, min=float(low), max=float(high))
    edges = torch.linspace(float(low), float(high), HISTOGRAM_BINS + 1)
    peak = 10 ** edges[torch.argmax(counts)]
    lower, upper = torch.log10(0.95 * peak), 1.5 * peak
    usable = eigs.float()[:-1]  # the last eigenvalue is never a cut-off
    inside = torch.nonzero((usable >= lower) & (usable <= upper)).flatten()
    if len(inside) == 0:
        return 0, -1
    first = int(inside[0])
    above = torch.nonzero(usable[first:] > upper).flatten()  # their loop stops at the first one above
    last = first + int(above[0]) - 1 if len(above) else len(usable) - 1
    return first, last


def _hill(log_eigs: torch.Tensor, cutoffs: torch.Tensor) -> torch.Tensor:
    """alpha_i for each cut-off index in ``cutoffs`` (float64 logs)."""
    n_total = len(log_eigs)
    tail_sums = torch.flip(torch.cumsum(torch.flip(log_eigs, [0]), 0), [0])  # sum_{j >= i} log x_j
    n = (n_total - cutoffs).to(torch.float64)
    return 1.0 + n / (tail_sums[cutoffs] - n * log_eigs[cutoffs])


def _ks_distances(log_eigs: torch.Tensor, cutoffs: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """D_i for each cut-off (1 where alpha_i <= 1, as the authors leave it)."""
    n_total = len(log_eigs)
    result = torch.ones(len(cutoffs), dtype=torch.float64)
    j = torch.arange(n_total)
    for start in range(0, len(cutoffs), _CHUNK):
        i = cutoffs[start : start + _CHUNK, None]
        a = alphas[start : start + _CHUNK, None]
        n = (n_total - i).to(torch.float64)
        fitted = 1.0 - torch.exp((1.0 - a) * (log_eigs[None, :] - log_eigs[i]))
        gap = (fitted - (j[None, :] - i) / n).abs()
        gap = torch.where(j[None, :] >= i, gap, torch.zeros((), dtype=torch.float64))
        distances = gap.amax(dim=1)
        result[start : start + _CHUNK] = torch.where(a[:, 0] > 1.0, distances, result[start : start + _CHUNK])
    return result


def hill_alpha(weight: torch.Tensor, estimator: str = "xmin_peak") -> float:
    """PL_Alpha_Hill of one weight matrix (the authors' ``net_esd_estimator`` alpha)."""
    _check_estimator(estimator)  # before the eigenvalues are computed
    return spectrum_alpha(eigenvalues(weight), estimator, tuple(weight.shape))


def _check_estimator(estimator: str) -> None:
    if estimator not in ALPHA_ESTIMATORS:
        raise ConfigError(f"unknown AlphaPruning estimator {estimator!r}; use one of {', '.join(ALPHA_ESTIMATORS)}")


def spectrum_alpha(eigs: torch.Tensor, estimator: str = "xmin_peak", shape=None) -> float:
    """PL_Alpha_Hill from ascending eigenvalues (:func:`eigenvalues`).

    Zero eigenvalues (a rank-deficient matrix, e.g. one already pruned hard) have no logarithm; they are
    left out of the fit (the authors' ``filter_zeros`` option, off by default there, where they give NaN).
    """
    _check_estimator(estimator)
    eigs = eigs[eigs > 0]
    if len(eigs) < 2:
        raise ConfigError(f"a {shape or 'weight'} with fewer than 2 non-zero singular values has no spectrum to fit")
    log_eigs = eigs.log()
    if estimator == "xmin_mid":
        return float(_hill(log_eigs, torch.tensor([len(eigs) // 2]))[0])
    first, last = _peak_candidates(eigs)
    if last < first:  # no cut-off in range: the authors' argmin then falls on index 0 with alpha 0
        return 0.0
    cutoffs = torch.arange(first, last + 1)
    alphas = _hill(log_eigs, cutoffs)
    with one_cpu_thread():
        distances = _ks_distances(log_eigs, cutoffs, alphas)
    best = int(torch.argmin(distances))  # first of equal minima, as torch.argmin in their code
    if first > 0 and float(distances[best]) >= 1.0:  # every D is the default 1: they keep index 0, alpha 0
        return 0.0
    return float(alphas[best])


def block_alpha(linears: dict[str, torch.Tensor], estimator: str = "xmin_peak") -> tuple[float, dict[str, float]]:
    """A block's score (the plain mean of its linears' alphas, as the authors' block_wise mapping) and
    the alphas themselves, by linear name."""
    alphas = {name: hill_alpha(w, estimator) for name, w in linears.items()}
    return sum(alphas.values()) / len(alphas), alphas


def _factors(scores, epsilon: float) -> torch.Tensor:
    x = torch.as_tensor(scores, dtype=torch.float64)
    spread = x.max() - x.min()
    unit = (x - x.min()) / spread if spread > 0 else torch.zeros_like(x)
    return unit * (2.0 * epsilon) + (1.0 - epsilon)


def alpha_largest_epsilon(scores, sparsity: float, weights=None) -> float:
    """The supremum of the epsilons that keep every block's sparsity in [0, 1) (density in (0, 1]).

    With ``u`` the min-max scaled scores and ``m`` their weighted mean, the densest block's sparsity is
    ``s (1 - e) / (1 - e + 2 e m) >= 0`` for e <= 1, the sparsest's ``s (1 + e) / (1 - e + 2 e m) < 1``
    for ``e < (1 - s) / (1 + s - 2 m)``."""
    x = torch.as_tensor(scores, dtype=torch.float64)
    w = torch.ones_like(x) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if x.max() == x.min():
        return 1.0
    m = float(((x - x.min()) / (x.max() - x.min()) * w).sum() / w.sum())
    return min(1.0, (1.0 - sparsity) / (1.0 + sparsity - 2.0 * m))


def alpha_sparsities(scores, sparsity: float, epsilon: float, weights=None, check: bool = True) -> torch.Tensor:
    """The authors' mapping (float64): ``factor * s * sum(P) / sum(P * factor)`` per block, ``P`` the
    block sizes. Raises ConfigError where a block would reach sparsity 1 or above (the authors clip
    nothing), naming the largest epsilon allowed; ``check=False`` returns such sparsities for clipping."""
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ConfigError(f"AlphaPruning: epsilon must be in [0, 1] (factors in [1 - e, 1 + e]); got {epsilon}")
    factors = _factors(scores, epsilon)
    w = torch.ones_like(factors) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    result = factors * (sparsity * w.sum() / (w * factors).sum())
    if check and float(result.max()) >= 1.0:
        limit = alpha_largest_epsilon(scores, sparsity, weights)
        raise ConfigError(
            f"AlphaPruning: epsilon = {epsilon:g} gives a block sparsity of {float(result.max()):.4f} (>= 1) at "
            f"sparsity {sparsity:g}; use an epsilon below {limit:.4f} (--alpha_epsilon) or ask for clipping "
            "(--clip_densities)"
        )
    return result
