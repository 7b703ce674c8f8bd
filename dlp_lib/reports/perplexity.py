"""Perplexity tables: notebook 03's main table (runs, spread, orderings, caption, JSON), the sweep, N:M."""

from __future__ import annotations

import math
import os

import pandas as pd

from ..cache import write_json_atomic
from ..experiments import (
    ALLOCATION_NAMES,
    METHOD_NAMES,
    TABLE_NAMES,
    model_name,
    other_seeds,
    percent,
    record_row,
    source_name,
    table_allocations,
)
from ..results import config_key, machine_label
from ..spread import (
    BOLD_RULE,
    best_beyond_spread,
    format_range,
    ordering_sentence,
    per_seed_values,
    seed_summary,
)
from .format import format_perplexity, format_tolerance


def _ordered(frame: pd.DataFrame, column: str, order) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    return frame.assign(_rank=frame[column].map(rank)).sort_values(["_rank"], kind="stable").drop(columns="_rank")


def main_table_runs(frame: pd.DataFrame, prof: dict) -> pd.DataFrame:
    """Every run of the main table, one row per (pruner, allocation, seed): dense first, then each
    pruner's allocations in profile order, seeds ascending. Perturbed runs are left out."""
    frame = frame[frame["sparsity_type"].isin(["dense", "unstructured"]) & (frame["perturb"].fillna(0) == 0)]
    parts = [frame[frame["method"] == "dense"].head(1).assign(allocation="none")]
    for method in prof["main_methods"]:
        sub = frame[(frame["method"] == method) & (frame["sparsity"] == prof["main_sparsity"])]
        sub = _ordered(sub.sort_values("seed", kind="stable"), "allocation", table_allocations(prof))
        parts.append(sub.drop_duplicates(["allocation", "seed"]))
    runs = pd.concat(parts, ignore_index=True)
    columns = ["method", "allocation", "sparsity", "seed", "uses_calibration", "perplexity", "achieved_sparsity"]
    return runs[columns + ["prune_seconds", "total_seconds", "key"]]


def _summary(runs: pd.DataFrame, value: str, extra: dict) -> pd.DataFrame:
    """``spread.seed_summary`` per (method, allocation) with the mean of ``extra`` columns and the keys."""
    summary = seed_summary(runs, ["method", "allocation"], value)
    grouped = runs.groupby(["method", "allocation"], sort=False)
    aggregated = grouped.agg(**extra, uses_calibration=("uses_calibration", "any"), keys=("key", ";".join))
    return summary.merge(aggregated.reset_index(), on=["method", "allocation"])


def main_table(frame: pd.DataFrame, prof: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The DLP README layout: Dense, then each pruner with its allocations (Uniform, OWL, DLP), each
    cell the mean perplexity over the calibration seeds with its min–max range.

    Returns ``(numbers, display, bold)``: numeric table (CSV: ``perplexity`` is the mean, with
    ``perplexity_min``/``_max``/``_std``, ``n`` runs and their ``seeds``), formatted strings
    (Markdown/LaTeX) and the bold mask of ``spread.BOLD_RULE``.
    """
    runs = main_table_runs(frame, prof)
    summary = _summary(
        runs,
        "perplexity",
        dict(achieved_sparsity=("achieved_sparsity", "mean"), prune_seconds=("prune_seconds", "mean")),
    )
    numbers = summary.rename(
        columns={"mean": "perplexity", "min": "perplexity_min", "max": "perplexity_max", "std": "perplexity_std"}
    )
    numbers = numbers[
        ["method", "allocation", "perplexity", "perplexity_min", "perplexity_max", "perplexity_std", "n", "seeds"]
        + ["uses_calibration", "achieved_sparsity", "prune_seconds", "keys"]
    ]
    is_best = best_beyond_spread(summary[summary["method"] != "dense"], "method").reindex(
        numbers.index, fill_value=False
    )
    previous = numbers["method"].shift()
    display = pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(numbers["method"], previous)],
            "Layerwise": [TABLE_NAMES[a] for a in numbers["allocation"]],
            model_name(prof): [format_perplexity(v) for v in numbers["perplexity"]],
            "min–max over seeds": [format_range(r, format_perplexity) for _, r in summary.iterrows()],
            "n": numbers["n"].astype(int),
            "Sparsity (%)": [f"{100 * v:.2f}" for v in numbers["achieved_sparsity"]],
            "Pruning (s)": ["–" if pd.isna(v) else f"{v:.1f}" for v in numbers["prune_seconds"]],
        }
    )
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold[model_name(prof)] = is_best.values
    return numbers, display, bold


def orderings(runs: pd.DataFrame, prof: dict, methods=None, value: str = "perplexity", lower_is_better=True) -> dict:
    """``{pruner: sentence}``: the order of the allocations' means and in how many seeds it holds
    (``spread.ordering_sentence``), from per-seed runs (``main_table_runs`` or zero-shot runs)."""
    out = {}
    seeds, others = list(prof["seeds"]), other_seeds(prof)
    for method in methods or prof["main_methods"]:
        sub = runs[(runs["method"] == method) & runs["allocation"].isin(table_allocations(prof))]
        if sub["allocation"].nunique() < 2:
            continue
        own = sub["allocation"].isin(prof["allocations"])
        if others == seeds or own.all() or sub.loc[own, "allocation"].nunique() < 2:
            out[method] = ordering_sentence(per_seed_values(sub, "allocation", value), TABLE_NAMES, lower_is_better)
            continue
        # the searched and newer rows ran on fewer seeds: the profile's own allocations over every seed,
        # then every row over the seeds they all have, so that no count mixes the two
        common = sub[sub["seed"].isin(others) | ~sub["uses_calibration"].astype(bool)]
        mine = ordering_sentence(per_seed_values(sub[own], "allocation", value), TABLE_NAMES, lower_is_better)
        every = ordering_sentence(per_seed_values(common, "allocation", value), TABLE_NAMES, lower_is_better)
        out[method] = f"{mine}; every row, on seed{'s' * (len(others) > 1)} {', '.join(map(str, others))}: {every}"
    return out


def seeds_phrase(seeds) -> str:
    """``seed 0 only`` or ``3 seeds (0, 1, 2)``."""
    seeds = list(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]} only"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))})"


def main_table_caption(prof: dict, records: list[dict] = ()) -> str:
    seeds, others = prof["seeds"], other_seeds(prof)
    other = "" if list(others) == list(seeds) else f" (the searched and newer rows: {seeds_phrase(others)})"
    return (
        f"Perplexity (lower is better) at {percent(prof['main_sparsity'])} unstructured sparsity of the decoder "
        f"linears: mean over {len(seeds)} calibration seeds ({', '.join(map(str, seeds))}){other} with the min–max "
        f"range; n = runs. {BOLD_RULE} Model {model_name(prof)}, evaluation on "
        f"{source_name(prof['eval'], long=True)}, calibration {prof['nsamples']}×{prof['seqlen']} tokens of "
        f"{source_name(prof['calibration'])}; profile '{prof.get('name')}'. Sparsity = achieved; Pruning = "
        "seconds of the whole pruning pass, its calibration forwards through every block included "
        "(tables/pruning_speed.md counts the scores, masks and solver alone)."
        f"{dsa_note(prof, records)}{evopress_note(prof, records)} "
        f"Machine: {machine_of(records)}."
    )


def evopress_note(prof: dict, records: list[dict]) -> str:
    """A sentence on the EvoPress rows, if any: whose search, at what scale."""
    methods = [
        r["config"]["prune"]["method"]
        for r in records
        if (r["config"].get("prune") or {}).get("allocation") == "evopress"
    ]
    if not methods:
        return ""
    search = prof["evopress_search"]
    names = " and ".join(METHOD_NAMES[m] for m in dict.fromkeys(methods))
    return (
        f" EvoPress (searched): per-linear sparsities found by our EvoPress search for each pruner ({names}; "
        f"notebook 11: a level database of every linear at ±{search['num_levels']} levels, {search['generations']} "
        f"generations of {search['offspring']} offspring, fitness = KL divergence from the dense model on "
        f"calibration-side windows of {search['window_seqlen']} tokens), the total sparsity the same as every row's."
    )


def dsa_note(prof: dict, records: list[dict]) -> str:
    """A sentence on the DSA rows, if any: which expression, found how."""
    prunes = [r["config"].get("prune") or {} for r in records]
    graphs = sorted({p["dsa_graph"] for p in prunes if p.get("allocation") == "dsa"})
    if not graphs:
        return ""
    search = prof["dsa_search"]
    return (
        f" DSA (searched): the allocation expression {', '.join(f'`{g}`' for g in graphs)} found by our evolutionary "
        f"search (notebook 10: {METHOD_NAMES[search['method']]} at {percent(prof['main_sparsity'])}, population "
        f"{search['population']} × {search['generations']} generations, fitness = perplexity on {search['windows']} "
        f"calibration-side windows of {search['seqlen']} tokens), applied to every pruner with λ = "
        f"{prof['dsa_lambda']:g}."
    )


def machine_of(records) -> str:
    """The machine that produced ``records`` (``results.machine_label``), or every distinct one."""
    labels = []
    for record in records:
        label = machine_label(record.get("hardware"))
        if label not in labels:
            labels.append(label)
    return "; ".join(labels) if labels else machine_label(None)


def write_main_table_json(path: str | os.PathLike, numbers: pd.DataFrame, records: list[dict], prof: dict) -> None:
    """Numbers plus every run behind each cell: seed, perplexity, configuration, per-block densities,
    timings, versions and hardware (``block_densities`` of a cell: its run on the profile's seed)."""
    by_key = {config_key(r["config"]): r for r in records}
    rows = []
    for row in numbers.to_dict("records"):
        runs = []
        for key in row["keys"].split(";"):
            record = by_key[key]
            runs.append(
                {
                    "seed": record["config"]["seed"],
                    "perplexity": (record.get("perplexity") or {}).get("perplexity"),
                    "block_densities": (record.get("allocation") or {}).get("densities"),
                    "config": record["config"],
                    "timings": record.get("timings"),
                    "versions": record.get("versions"),
                    "hardware": record.get("hardware"),
                }
            )
        first = next((r for r in runs if r["seed"] == prof["seed"]), runs[0])
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        rows.append({**clean, "block_densities": first["block_densities"], "runs": runs})
    payload = {
        "caption": main_table_caption(prof, records),
        "profile": {k: v for k, v in prof.items()},
        "rows": rows,
    }
    write_json_atomic(path, payload)


def sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[frame["sparsity_type"] == "unstructured"]
    columns = ["method", "allocation", "sparsity", "achieved_sparsity", "perplexity", "prune_seconds", "key"]
    return frame.sort_values(["method", "allocation", "sparsity"])[columns].reset_index(drop=True)


def nm_table(records: list[dict]) -> pd.DataFrame:
    """One row per N:M run, with the range of per-block N (zeros per group) the allocation chose, how many
    blocks take each N (``block_n_counts``, e.g. ``1: 1, 2: 28, 3: 1``) and how many it moved off the
    pattern's own N (``blocks_moved``; 0 for Uniform)."""
    rows = []
    for record in records:
        row = record_row(record)
        allocation = record.get("allocation") or {}
        ns = [n for n, _ in allocation.get("block_nm") or []]
        pattern_n = int(str(row["sparsity_type"]).split(":")[0])
        row["block_n_range"] = f"{min(ns)}–{max(ns)}" if ns else "uniform"
        row["block_n_counts"] = ", ".join(f"{n}: {ns.count(n)}" for n in sorted(set(ns))) if ns else "uniform"
        row["blocks_moved"] = sum(n != pattern_n for n in ns)
        rows.append(row)
    columns = ["method", "allocation", "sparsity_type", "block_n_range", "block_n_counts", "blocks_moved"]
    columns += ["achieved_sparsity", "perplexity"]
    frame = pd.DataFrame(rows)
    return frame[columns + ["prune_seconds", "key"]].reset_index(drop=True)


def nm_caption(prof: dict) -> str:
    return (
        "Perplexity (lower is better) with N:M sparsity (N zeros in every group of M weights along the input "
        "dimension). Allocated: each block gets an integer N chosen from the allocation's densities, with mean "
        "exactly N over the blocks; Blocks per N: how many blocks take each N; Blocks moved: how many blocks the "
        f"allocation moved off the pattern's N. Single runs on calibration seed {prof['seed']}; Tolerance: the "
        "reproduction tolerance that applies (notebook 03), differences within it are noise. Model "
        f"{model_name(prof)}, evaluation on {source_name(prof['eval'], long=True)}; profile '{prof.get('name')}'."
    )


def nm_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Pattern": table["sparsity_type"],
            "Method": [METHOD_NAMES[m] for m in table["method"]],
            "Layerwise": [ALLOCATION_NAMES[a] for a in table["allocation"]],
            "N per block": table["block_n_range"],
            "Blocks per N": table["block_n_counts"],
            "Blocks moved": table["blocks_moved"],
            "Sparsity (%)": [f"{100 * v:.2f}" for v in table["achieved_sparsity"]],
            "Perplexity": [format_perplexity(v) for v in table["perplexity"]],
            **(
                {"Tolerance": [format_tolerance(v) for v in table["tolerance_pct"]]} if "tolerance_pct" in table else {}
            ),
        }
    )
