"""The reproduction tolerance: float-sensitivity runs, the noise beside a table's cells."""

from __future__ import annotations

import math

import pandas as pd

from ..experiments import (
    ALLOCATION_NAMES,
    METHOD_NAMES,
    float_sensitivity_specs,
    main_specs,
    model_name,
    percent,
    records_frame,
    seeded,
    stored_runs,
)
from ..spread import (
    NOISE_DOMINATED_FACTOR,
    TOLERANCE_RULE,
    lookup_tolerance,
    seed_summary,
    tolerance_table,
)
from .format import format_perplexity, format_tolerance
from .perplexity import machine_of, main_table_runs


def float_sensitivity_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The float-sensitivity runs, one row each: the cell, the draw (``perturb_seed``; 0 for the normal
    run), the perturbation size and the perplexity."""
    frame = frame.assign(perturb=frame["perturb"].fillna(0.0), perturb_seed=frame["perturb_seed"].fillna(0).astype(int))
    columns = ["method", "allocation", "sparsity", "seed", "perturb", "perturb_seed", "perplexity", "key"]
    order = ["method", "sparsity", "allocation", "perturb_seed"]
    return frame[columns].sort_values(order, kind="stable").reset_index(drop=True)


def tolerance_display(tolerance: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] for m in tolerance["method"]],
            "Layerwise": [ALLOCATION_NAMES[a] for a in tolerance["allocation"]],
            "Sparsity": [percent(s) for s in tolerance["sparsity"]],
            "Runs": tolerance["runs"],
            "Perplexity": [format_perplexity(v) for v in tolerance["perplexity"]],
            "min–max": [
                f"{format_perplexity(a)}–{format_perplexity(b)}" for a, b in zip(tolerance["min"], tolerance["max"])
            ],
            "σ of ln ppl": [f"{v:.3f}" for v in tolerance["sigma_log"]],
            "Tolerance": [format_tolerance(v) for v in tolerance["tolerance_pct"]],
            "Noise-dominated": ["yes" if v else "no" for v in tolerance["noise_dominated"]],
        }
    )


def tolerance_caption(prof: dict, records: list[dict]) -> str:
    setting = prof["float_sensitivity"]
    return (
        f"Reproduction tolerance: each cell's normal run (seed {prof['seed']}) and {setting['draws']} re-runs with "
        f"every pruning statistic (Wanda's input norms, SparseGPT's Hessian) multiplied by (1 + ε·N(0, 1)), "
        f"ε = {setting['scale']:g}, a float-rounding-level change like another CPU's BLAS kernels make. "
        f"{TOLERANCE_RULE} Cells not measured here take the tolerance of the nearest measured sparsity at or "
        f"above theirs (`make check-reproduction`). Model {model_name(prof)}; profile '{prof.get('name')}'. "
        f"Machine: {machine_of(records)}."
    )


def stored_noise(prof: dict, results_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(tolerance table, main-table runs)`` from the records notebook 03 stored in ``results_dir``
    (nothing is run); empty frames where they are missing."""
    float_records = stored_runs(prof, float_sensitivity_specs(prof), results_dir)
    main_records = stored_runs(prof, seeded(prof, main_specs(prof)), results_dir)
    tolerance = (
        tolerance_table(float_sensitivity_runs(records_frame(float_records))) if float_records else pd.DataFrame()
    )
    runs = main_table_runs(records_frame(main_records), prof) if main_records else pd.DataFrame()
    return tolerance, runs


def with_noise(table: pd.DataFrame, tolerance: pd.DataFrame, prof: dict, main_runs: pd.DataFrame | None = None):
    """``table`` (sweep, N:M or hyper-parameter rows with ``method`` and ``sparsity`` or
    ``achieved_sparsity``) plus what a reader needs to judge each perplexity: ``spread`` (the min–max
    over seeds where ``main_runs`` has the same cell at the main sparsity, else ``single run``) with
    ``seed_min``/``seed_max``, ``tolerance_pct`` (the reproduction tolerance that applies,
    ``spread.lookup_tolerance``) with ``tolerance_from`` (where it was measured) and ``noise_dominated``."""
    ranges = {}
    if main_runs is not None and len(main_runs):
        summary = seed_summary(main_runs[main_runs["method"] != "dense"], ["method", "allocation"])
        ranges = {(r["method"], r["allocation"]): r for _, r in summary.iterrows() if r["n"] > 1}
    out = []
    for _, row in table.iterrows():
        sparsity = row.get("sparsity")
        sparsity = float(row["achieved_sparsity"] if sparsity is None or pd.isna(sparsity) else sparsity)
        unstructured = row.get("sparsity_type", "unstructured") == "unstructured"
        cell = ranges.get((row["method"], row["allocation"])) if unstructured else None
        cell = cell if cell is not None and math.isclose(sparsity, prof["main_sparsity"]) else None
        if cell is not None and isinstance(row.get("parameter"), str):  # a hyper-parameter row: the default only
            cell = cell if math.isclose(float(row["value"]), float(prof[row["parameter"]])) else None
        extra = {"spread": "single run", "seed_min": float("nan"), "seed_max": float("nan")}
        if cell is not None:
            extra = {
                "spread": f"{format_perplexity(cell['min'])}–{format_perplexity(cell['max'])} over {cell['n']} seeds",
                "seed_min": cell["min"],
                "seed_max": cell["max"],
            }
        if isinstance(row["method"], str) and len(tolerance):
            tol, source = lookup_tolerance(tolerance, row["method"], sparsity)
            extra.update(
                tolerance_pct=100.0 * math.expm1(tol),
                tolerance_from=source,
                noise_dominated=math.exp(tol) > NOISE_DOMINATED_FACTOR,
            )
        else:
            extra.update(tolerance_pct=float("nan"), tolerance_from="", noise_dominated=False)
        out.append(extra)
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(out, index=range(len(table)))], axis=1)


def _against(row, base) -> tuple[float, float, str]:
    """``(ln of row's perplexity over base's, the larger of their tolerances in ln units, the verdict)``:
    ``lower beyond tolerance``, ``higher beyond tolerance`` or ``within tolerance``."""
    tol = math.log1p(max(row["tolerance_pct"], base["tolerance_pct"]) / 100.0)
    gap = math.log(row["perplexity"] / base["perplexity"])
    verdict = "within tolerance" if abs(gap) <= tol else f"{'lower' if gap < 0 else 'higher'} beyond tolerance"
    return gap, tol, verdict


def against_default(table: pd.DataFrame, prof: dict) -> pd.Series:
    """For hyper-parameter rows (``parameter``, ``value``, ``perplexity``, ``tolerance_pct``): how each pruned
    value compares with the same parameter's default (``prof[parameter]``): ``default``, ``lower beyond
    tolerance``, ``higher beyond tolerance`` or ``within tolerance`` (the larger of the two rows' tolerances);
    empty where a row has no perplexity."""
    out = pd.Series("", index=table.index, dtype=object)
    for name, rows in table[table["perplexity"].notna()].groupby("parameter", sort=False):
        is_default = [math.isclose(float(v), float(prof[name])) for v in rows["value"]]
        if not any(is_default):
            continue
        base = rows[is_default].iloc[0]
        for (index, row), default in zip(rows.iterrows(), is_default):
            out[index] = "default" if default else _against(row, base)[2]
    return out


def against_uniform(table: pd.DataFrame) -> pd.DataFrame:
    """Sweep rows (``method``, ``allocation``, ``sparsity``, ``perplexity``, ``tolerance_pct``): each
    allocation's perplexity against Uniform's at the same pruner and sparsity, as a ratio, and whether the gap
    lies beyond the larger of the two tolerances (``lower/higher beyond tolerance``, ``within tolerance``)."""
    rows = []
    for (method, sparsity), group in table.groupby(["method", "sparsity"], sort=False):
        base = group[group["allocation"] == "uniform"]
        if base.empty:
            continue
        base = base.iloc[0]
        for _, row in group[group["allocation"] != "uniform"].iterrows():
            gap, tol, verdict = _against(row, base)
            rows.append(
                {
                    "method": method,
                    "sparsity": sparsity,
                    "allocation": row["allocation"],
                    "perplexity": row["perplexity"],
                    "uniform": base["perplexity"],
                    "ratio_pct": 100.0 * math.expm1(gap),
                    "tolerance_pct": 100.0 * math.expm1(tol),
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(rows)
