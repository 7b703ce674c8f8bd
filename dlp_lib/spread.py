"""How noisy the numbers are: summaries over calibration seeds, the bold rule, orderings counted seed
by seed, and the reproduction tolerance measured with float-level perturbations.

At 60-80% sparsity on a small model one float-level near-tie in a mask changes every later block, so
a single run's perplexity moves by several percent with the calibration draw or the CPU's BLAS
kernels. Every claim in the tables is therefore made over seeds and against these spreads:

    result records ──► records_frame ──► seed_summary (mean, std, min, max, n per cell)
                                    ──► best_beyond_spread (the bold rule), ordering_counts (k of n seeds)
    float-sensitivity records ──► tolerance_table ──► reproduction.check_tables
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

BOLD_RULE = (
    "A pruner's best allocation (lowest mean perplexity, highest mean accuracy) is bold only when it is better "
    "beyond the spread: its worst seed beats the best seed of every other allocation of that pruner (their "
    "min–max ranges over the calibration seeds do not overlap). A run that reads no calibration data "
    "(magnitude with uniform allocation) is deterministic: its range is its one value. A row run on fewer "
    "calibration seeds than another of its pruner has not shown its spread and is never bold."
)

TOLERANCE_RULE = (
    "Reproduction tolerance of a cell: 3·√2·σ, σ the standard deviation of ln(perplexity) over the normal run "
    "and its float-level perturbations (every pruning statistic × (1 + ε·N(0, 1))); two independent re-runs "
    "then differ by less than this with 99.7% probability if ln(perplexity) is normal. Floor 0.1% (runs whose "
    "masks come from the weights alone, magnitude, reproduce to 6 digits). A cell is noise-dominated when "
    "its tolerance exceeds a factor 2: a re-run on another machine may halve or double it."
)

TOLERANCE_FLOOR = 1e-3  # in ln units: 0.1%
NOISE_DOMINATED_FACTOR = 2.0


# ------------------------------------------------------------------------------------ seed summaries
def seed_summary(frame: pd.DataFrame, by: list[str], value: str = "perplexity") -> pd.DataFrame:
    """One row per cell (``by``): ``mean``, ``std`` (over seeds, ddof 1; NaN for one run), ``min``,
    ``max``, ``n`` runs and the ``seeds`` they used (``"0,1,2"``), in the order cells first appear."""
    rows = []
    for key, group in frame.groupby(by, sort=False, dropna=False):
        values = group[value].astype(float)
        key = key if isinstance(key, tuple) else (key,)
        seeds = ",".join(str(int(s)) for s in group["seed"]) if "seed" in group else ""
        rows.append(
            {
                **dict(zip(by, key)),
                "mean": values.mean(),
                "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                "min": values.min(),
                "max": values.max(),
                "n": int(values.notna().sum()),
                "seeds": seeds,
            }
        )
    return pd.DataFrame(rows)


def best_beyond_spread(summary: pd.DataFrame, group: str, lower_is_better: bool = True) -> pd.Series:
    """The bold mask of ``BOLD_RULE``: per ``group`` (the pruner), True for the entry with the best
    ``mean`` when its ``min``/``max`` range lies wholly on the better side of every other entry's, and
    it ran on as many seeds as any of them (or reads no calibration data: ``uses_calibration`` False)."""
    bold = pd.Series(False, index=summary.index)
    for _, sub in summary.groupby(group, sort=False):
        sub = sub[sub["mean"].notna()]
        if len(sub) < 2:
            continue
        best = sub["mean"].idxmin() if lower_is_better else sub["mean"].idxmax()
        if bool(sub.loc[best].get("uses_calibration", True)) and sub.loc[best, "n"] < sub["n"].max():
            continue  # one calibration draw where the others show several: its spread is unknown
        others = sub.drop(index=best)
        if lower_is_better:
            bold[best] = bool(sub.loc[best, "max"] < others["min"].min())
        else:
            bold[best] = bool(sub.loc[best, "min"] > others["max"].max())
    return bold


def format_range(row, fmt) -> str:
    """``760.10–801.30`` over seeds; ``deterministic`` for one run that reads no calibration data;
    ``single run`` for another single run."""
    if row["n"] <= 1:
        return "deterministic" if not row.get("uses_calibration", True) else "single run"
    return f"{fmt(row['min'])}–{fmt(row['max'])}"


# ------------------------------------------------------------------------------------- orderings
def per_seed_values(frame: pd.DataFrame, column: str, value: str = "perplexity") -> pd.DataFrame:
    """Seeds (rows) x ``column`` values (columns, e.g. allocations). A cell that reads no calibration
    data (one deterministic run) stands for every seed."""
    seeds = sorted(int(s) for s in frame.loc[frame["uses_calibration"].astype(bool), "seed"].dropna().unique())
    table = {}
    for name, group in frame.groupby(column, sort=False):
        if not group["uses_calibration"].astype(bool).any():
            table[name] = pd.Series(float(group[value].iloc[0]), index=seeds)
        else:
            table[name] = group.set_index(group["seed"].astype(int))[value].astype(float)
    return pd.DataFrame(table).reindex(seeds)


def ordering_counts(values: pd.DataFrame, order: list[str], lower_is_better: bool = True) -> dict:
    """How often ``order`` (best first, e.g. ``["dlp", "owl", "uniform"]``) holds, seed by seed, in
    ``values`` (seeds x names, from ``per_seed_values``): the whole chain over the seeds where every name has
    a value, each adjacent pair over the seeds where both have one (rows run on fewer seeds than others).
    Returns ``{"n": seeds with every value, "chain": k, "pairs": [(a, b, k), ...], "pair_n": [seeds, ...]}``."""
    sign = 1.0 if lower_is_better else -1.0
    v = values[order] * sign
    complete = v.notna().all(axis=1)
    pairs, pair_n = [], []
    holds = complete.copy()
    for a, b in zip(order, order[1:]):
        better = v[a] < v[b]
        pairs.append((a, b, int(better.sum())))
        pair_n.append(int((v[a].notna() & v[b].notna()).sum()))
        holds &= better
    return {"n": int(complete.sum()), "chain": int(holds.sum()), "pairs": pairs, "pair_n": pair_n}


def ordering_sentence(values: pd.DataFrame, names: dict, lower_is_better: bool = True) -> str:
    """``DLP < OWL < Uniform holds in 2 of 3 seeds (DLP < OWL: 2, OWL < Uniform: 3)``: the order of
    the means, better first, then how many seeds agree with it. The sign compares the numbers themselves:
    ``<`` for perplexities (lower is better), ``>`` for accuracies (higher is better)."""
    means = values.mean()
    order = list(means.sort_values(ascending=lower_is_better).index)
    counts = ordering_counts(values, order, lower_is_better)
    sign = " < " if lower_is_better else " > "
    chain = sign.join(names.get(o, o) for o in order)
    pairs = ", ".join(
        f"{names.get(a, a)}{sign}{names.get(b, b)}: {k}" + ("" if m == counts["n"] else f" of {m}")
        for (a, b, k), m in zip(counts["pairs"], counts["pair_n"])
    )
    what = "order of the means, better first; higher is better" if not lower_is_better else "order of the means"
    return f"{chain} ({what}) holds in {counts['chain']} of {counts['n']} seeds ({pairs})"


# ------------------------------------------------------------------------------ reproduction tolerance
def log_tolerance(values) -> tuple[float, float]:
    """``(sigma, tolerance)`` in ln units of repeated runs' perplexities (TOLERANCE_RULE)."""
    logs = np.log(np.asarray(values, dtype=float))
    sigma = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
    return sigma, max(3.0 * math.sqrt(2.0) * sigma, TOLERANCE_FLOOR)


def tolerance_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The reproduction tolerance per measured cell, from the float-sensitivity runs (``records_frame``
    rows with ``perturb`` 0 for the normal run and > 0 for each draw)."""
    rows = []
    for (method, allocation, sparsity), group in frame.groupby(["method", "allocation", "sparsity"], sort=False):
        values = group["perplexity"].astype(float)
        base = group.loc[group["perturb"].fillna(0) == 0, "perplexity"]
        sigma, tol = log_tolerance(values)
        rows.append(
            {
                "method": method,
                "allocation": allocation,
                "sparsity": float(sparsity),
                "runs": len(values),
                "perturbation": float(group["perturb"].max()),
                "perplexity": float(base.iloc[0]) if len(base) else float("nan"),
                "min": values.min(),
                "max": values.max(),
                "sigma_log": sigma,
                "tolerance_log": tol,
                "tolerance_pct": 100.0 * math.expm1(tol),
                "noise_dominated": math.exp(tol) > NOISE_DOMINATED_FACTOR,
            }
        )
    return pd.DataFrame(rows)


def lookup_tolerance(tolerances: pd.DataFrame, method: str, sparsity: float) -> tuple[float, str]:
    """``(tolerance in ln units, where it comes from)`` for a cell of ``method`` at ``sparsity``.

    Measured cells give theirs (the largest over their allocations); otherwise the one measured at the
    nearest sparsity at or above (noise grows with sparsity). Above the pruner's highest measured
    sparsity, the larger of that one and another pruner's measured at or above this sparsity (a
    conservative stand-in rather than a tolerance that understates the noise). A pruner without
    measurements (magnitude: masks from the weights alone) gets the floor."""
    if method in (None, "dense") or not isinstance(method, str):
        return TOLERANCE_FLOOR, "dense: deterministic"
    rows = tolerances[tolerances["method"] == method] if len(tolerances) else tolerances
    if not len(rows):
        return TOLERANCE_FLOOR, f"{method}: no float-sensitive statistic (floor)"
    measured = sorted(rows["sparsity"].unique())
    above = [s for s in measured if s >= float(sparsity) - 1e-9]
    at = above[0] if above else measured[-1]
    tol = float(rows.loc[rows["sparsity"] == at, "tolerance_log"].max())
    how = "measured" if math.isclose(at, float(sparsity)) else f"from {100 * at:g}%"
    if not above:
        others = tolerances[(tolerances["method"] != method) & (tolerances["sparsity"] >= float(sparsity) - 1e-9)]
        if len(others):
            nearest = others[others["sparsity"] == others["sparsity"].min()]
            other = nearest.loc[nearest["tolerance_log"].idxmax()]
            if float(other["tolerance_log"]) > tol:
                return float(other["tolerance_log"]), (
                    f"{other['method']} {100 * other['sparsity']:g}% (none measured for {method} at "
                    f"{100 * float(sparsity):g}% or above)"
                )
    return tol, f"{method} {100 * at:g}% ({how})"
