"""Notebook 08's LoRA recovery tables: runs, curves, orderings, caption."""

from __future__ import annotations

import math

import pandas as pd

from ..experiments import (
    ALLOCATION_NAMES,
    METHOD_NAMES,
    model_name,
    percent,
    record_row,
    training_name,
)
from ..recovery import RecoveryConfig
from ..spread import (
    format_range,
    lookup_tolerance,
    seed_summary,
)
from .format import format_perplexity, format_tolerance
from .perplexity import _ordered, machine_of


def recovery_runs(records: list[dict], prof: dict, tolerance: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per recovery run (notebook 08): perplexity before recovery, with the adapter (unmerged,
    the papers' number) and merged with the mask applied again, the factor before / adapter, what the
    training cost, and ``tolerance_pct``: the before-recovery reproduction tolerance of the cell
    (``spread.lookup_tolerance``; the recovery's own float noise is not measured)."""
    rows = []
    for record in records:
        row = record_row(record)
        recovery = record["recovery"]
        ppl = recovery.get("perplexity") or {}
        tol_pct = float("nan")
        if tolerance is not None and len(tolerance):
            tol_pct = 100.0 * math.expm1(lookup_tolerance(tolerance, row["method"], row["sparsity"])[0])
        zero = record.get("zero_shot") or {}
        rows.append(
            {
                "method": row["method"],
                "allocation": row["allocation"],
                "sparsity": row["sparsity"],
                "seed": row["seed"],
                "perplexity_before": ppl.get("before"),
                "perplexity_adapter": ppl.get("adapter"),
                "perplexity_merged": ppl.get("merged"),
                "factor": ppl["before"] / ppl["adapter"] if ppl.get("before") and ppl.get("adapter") else None,
                "tolerance_pct": tol_pct,
                "achieved_sparsity": row["achieved_sparsity"],
                "merged_sparsity": recovery.get("merged_sparsity"),
                "zero_shot_mean_acc": zero.get("mean_acc"),
                "steps": recovery["settings"]["steps"],
                "tokens": recovery["tokens"],
                "trainable_parameters": recovery["trainable_parameters"],
                "train_seconds": recovery["seconds"]["train"],
                "key": row["key"],
            }
        )
    frame = pd.DataFrame(rows)
    frame = pd.concat(
        [_ordered(frame[frame["method"] == m], "allocation", prof["allocations"]) for m in prof["recovery"]["methods"]]
    )
    return frame.reset_index(drop=True)


def recovery_curves(records: list[dict]) -> pd.DataFrame:
    """The training curves of recovery runs: one row per (run, step) with the step's mean training
    loss, learning rate and, where evaluated, the held-out perplexity."""
    rows = []
    for record in records:
        row = record_row(record)
        for point in record["recovery"]["curve"]:
            rows.append({"method": row["method"], "allocation": row["allocation"], **point})
    return pd.DataFrame(rows, columns=["method", "allocation", "step", "loss", "lr", "heldout_perplexity"])


def recovery_display(runs: pd.DataFrame, main_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Formatted recovery table: before (with its min–max over the main table's seeds, when notebook
    03 stored them), with the adapter, merged, the factor and the tolerance that applies."""
    ranges = {}
    if main_runs is not None and len(main_runs):
        summary = seed_summary(main_runs[main_runs["method"] != "dense"], ["method", "allocation"])
        ranges = {(r["method"], r["allocation"]): format_range(r, format_perplexity) for _, r in summary.iterrows()}
    previous = runs["method"].shift()
    display = {
        "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(runs["method"], previous)],
        "Layerwise": [ALLOCATION_NAMES[a] for a in runs["allocation"]],
        "Sparsity": [percent(s) for s in runs["sparsity"]],
        "Before": [format_perplexity(v) for v in runs["perplexity_before"]],
        "Before, min–max over seeds": [ranges.get((m, a), "–") for m, a in zip(runs["method"], runs["allocation"])],
        "LoRA (adapter)": [format_perplexity(v) for v in runs["perplexity_adapter"]],
        "LoRA (merged, masked)": [format_perplexity(v) for v in runs["perplexity_merged"]],
        "÷": [f"{v:.2f}" if v is not None and math.isfinite(v) else "–" for v in runs["factor"]],
        "Tolerance": [format_tolerance(v) if math.isfinite(v) else "–" for v in runs["tolerance_pct"]],
    }
    if runs["zero_shot_mean_acc"].notna().any():
        display["Zero-shot mean acc (adapter)"] = [
            f"{v:.4f}" if pd.notna(v) else "–" for v in runs["zero_shot_mean_acc"]
        ]
    return pd.DataFrame(display)


def recovery_orderings(runs: pd.DataFrame, value: str = "perplexity_adapter") -> dict:
    """``{pruner: sentence}`` for single-run recovery results: the order of the allocations and, for each
    neighbouring pair, whether the gap exceeds the cell's tolerance (only those gaps are claims)."""
    out = {}
    for method, sub in runs.groupby("method", sort=False):
        sub = sub.dropna(subset=[value]).sort_values(value)
        if len(sub) < 2:
            continue
        names = [ALLOCATION_NAMES[a] for a in sub["allocation"]]
        values = sub[value].tolist()
        tol = sub["tolerance_pct"].max()
        gaps = []
        for (a, va), (b, vb) in zip(zip(names, values), zip(names[1:], values[1:])):
            ratio = 100.0 * (vb / va - 1.0)
            if not math.isfinite(tol):
                verdict = "no tolerance measured: no claim"
            else:
                verdict = f"{'beyond' if ratio > tol else 'within'} the {format_tolerance(tol)} tolerance"
            gaps.append(f"{a} < {b} by {ratio:.0f}% ({verdict})")
        out[method] = "; ".join(gaps)
    return out


def recovery_caption(prof: dict, records: list[dict]) -> str:
    if records:
        settings, data = records[0]["recovery"]["settings"], records[0]["recovery"].get("data")
    else:  # the profile's settings over RecoveryConfig's defaults (paper: the papers' recipe)
        settings = RecoveryConfig(**prof["recovery"]["settings"]).to_dict()
        data = settings["data"] or prof["calibration"]
    return (
        f"LoRA recovery at {percent(prof['main_sparsity'])} sparsity, seed {prof['seed']}: rank {settings['rank']} "
        f"(alpha {settings['alpha']:g}) on {', '.join(settings['targets'])}, {settings['steps']} steps of "
        f"{settings['batch_tokens']} tokens ({settings.get('windows_per_step', '?')} windows of "
        f"{settings.get('seqlen', '?')}), learning rate {settings['lr']:g}, trained on "
        f"{training_name(data)} (never an evaluation window). Perplexity on the evaluation windows "
        "before recovery, with the adapter unmerged (the papers' number) and merged with the pruning mask "
        "applied again (a plain sparse model); ÷ is before / adapter. Single runs: the tolerance is the "
        "before-recovery reproduction tolerance of the cell (the recovery's own float noise is not measured), "
        "and an ordering is claimed only where the gap exceeds it. "
        f"Model {model_name(prof)}; profile '{prof.get('name')}'. Machine: {machine_of(records)}."
    )
