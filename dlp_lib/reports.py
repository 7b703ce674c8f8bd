"""Tables of the experiments: formatting (perplexity style, Markdown, booktabs LaTeX), atomic writing,
and the layout of each table the notebooks write to ``tables/``.

    records (dlp_lib.experiments) ──► records_frame ──► main_table / nm_table / ... ──► write_table
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from .cache import atomic_path, write_json_atomic
from .experiments import (
    ALLOCATION_NAMES,
    METHOD_NAMES,
    TABLE_NAMES,
    float_sensitivity_specs,
    main_specs,
    model_name,
    percent,
    record_row,
    records_frame,
    seeded,
    source_name,
    stored_runs,
    table_allocations,
    training_name,
)
from .recovery import RecoveryConfig
from .results import config_key, machine_label
from .spread import (
    BOLD_RULE,
    NOISE_DOMINATED_FACTOR,
    TOLERANCE_RULE,
    best_beyond_spread,
    format_range,
    lookup_tolerance,
    ordering_sentence,
    per_seed_values,
    seed_summary,
    tolerance_table,
)


def format_perplexity(value) -> str:
    """``12.35``; ``4.92e4`` from 1000 up (the DLP README's compact style); ``–`` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    if abs(value) < 1000:
        return f"{value:.2f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_tolerance(percent_value) -> str:
    """``±46%``; ``±0.1%`` below 10%."""
    return f"±{percent_value:.0f}%" if percent_value >= 10 else f"±{percent_value:.1f}%"


def _format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub pipe table of the frame's cells as strings (``bold``: same-shape boolean mask)."""
    cells = frame.map(_format_cell)
    if bold is not None:
        cells = cells.where(~bold.reindex_like(cells).fillna(False).astype(bool), "**" + cells + "**")
    escape = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(escape(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text)).replace("α", r"$\alpha$").replace("λ", r"$\lambda$")


def _looks_numeric(column: pd.Series) -> bool:
    """Numbers or formatted numbers (``4.92e4``, ``–`` for missing): right-aligned in LaTeX."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    try:
        [float(v) for v in column if str(v) not in ("–", "")]
    except ValueError:
        return False
    return True


def to_latex(frame: pd.DataFrame, bold: pd.DataFrame | None = None, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (numbers right-aligned) of the frame's cells; ``bold`` as in to_markdown."""
    cells = frame.map(lambda v: _latex_escape(_format_cell(v)))
    if bold is not None:
        cells = cells.where(~bold.reindex_like(cells).fillna(False).astype(bool), r"\textbf{" + cells + "}")
    align = "".join("r" if _looks_numeric(frame[c]) else "l" for c in frame.columns)
    lines = [f"% {caption}"] if caption else []
    lines += [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(_latex_escape(c) for c in frame.columns) + r" \\",
    ]
    lines.append(r"\midrule")
    lines += [" & ".join(row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame,
    tables_dir: str | os.PathLike,
    name: str,
    formats=("csv", "md"),
    display: pd.DataFrame | None = None,
    bold: pd.DataFrame | None = None,
    caption: str | None = None,
) -> list[Path]:
    """Write ``frame`` as ``<name>.csv`` (raw numbers) and ``display`` (default: ``frame``; formatted
    strings) as ``<name>.md`` / ``<name>.tex``, each written atomically. Returns the paths."""

    display = frame if display is None else display
    out = Path(tables_dir)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            text = frame.to_csv(index=False)
        elif fmt == "md":
            text = (f"{caption}\n\n" if caption else "") + to_markdown(display, bold)
        elif fmt == "tex":
            text = to_latex(display, bold, caption)
        else:
            raise ValueError(f"unknown table format {fmt!r}; use csv, md or tex")
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        paths.append(path)
    return paths


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
    for method in methods or prof["main_methods"]:
        sub = runs[(runs["method"] == method) & runs["allocation"].isin(table_allocations(prof))]
        if sub["allocation"].nunique() < 2:
            continue
        values = per_seed_values(sub, "allocation", value)
        out[method] = ordering_sentence(values, TABLE_NAMES, lower_is_better)
    return out


def main_table_caption(prof: dict, records: list[dict] = ()) -> str:
    seeds = prof["seeds"]
    return (
        f"Perplexity (lower is better) at {percent(prof['main_sparsity'])} unstructured sparsity of the decoder "
        f"linears: mean over {len(seeds)} calibration seeds ({', '.join(map(str, seeds))}) with the min–max "
        f"range; n = runs. {BOLD_RULE} Model {model_name(prof)}, evaluation on "
        f"{source_name(prof['eval'], long=True)}, calibration {prof['nsamples']}×{prof['seqlen']} tokens of "
        f"{source_name(prof['calibration'])}; profile '{prof.get('name')}'. Sparsity = achieved; Pruning = "
        f"seconds of the pruning pass.{dsa_note(prof, records)} Machine: {machine_of(records)}."
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
    """One row per N:M run, with the range of per-block N (zeros per group) the allocation chose."""
    rows = []
    for record in records:
        row = record_row(record)
        allocation = record.get("allocation") or {}
        ns = [n for n, _ in allocation.get("block_nm") or []]
        row["block_n_range"] = f"{min(ns)}–{max(ns)}" if ns else "uniform"
        rows.append(row)
    columns = ["method", "allocation", "sparsity_type", "block_n_range", "achieved_sparsity", "perplexity"]
    frame = pd.DataFrame(rows)
    return frame[columns + ["prune_seconds", "key"]].reset_index(drop=True)


def nm_caption(prof: dict) -> str:
    return (
        "Perplexity (lower is better) with N:M sparsity (N zeros in every group of M weights along the input "
        "dimension). Allocated: each block gets an integer N chosen from the allocation's densities, with mean "
        f"exactly N over the blocks. Single runs on calibration seed {prof['seed']}; Tolerance: the reproduction "
        "tolerance that applies (notebook 03), differences within it are noise. Model "
        f"{model_name(prof)}, evaluation on {source_name(prof['eval'], long=True)}; profile '{prof.get('name')}'."
    )


def nm_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Pattern": table["sparsity_type"],
            "Method": [METHOD_NAMES[m] for m in table["method"]],
            "Layerwise": [ALLOCATION_NAMES[a] for a in table["allocation"]],
            "N per block": table["block_n_range"],
            "Sparsity (%)": [f"{100 * v:.2f}" for v in table["achieved_sparsity"]],
            "Perplexity": [format_perplexity(v) for v in table["perplexity"]],
            **(
                {"Tolerance": [format_tolerance(v) for v in table["tolerance_pct"]]} if "tolerance_pct" in table else {}
            ),
        }
    )


# ----------------------------------------------------------------------------------- zero-shot
TASK_NAMES = {
    "boolq": "BoolQ",
    "rte": "RTE",
    "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande",
    "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c",
    "openbookqa": "OBQA",
    "piqa": "PIQA",
}


def _run_cell(row: dict) -> tuple:
    """What identifies a run across record kinds: the setting, and the seed where the run reads calibration data."""
    seed = row["seed"] if row["uses_calibration"] else None
    return (row["method"], row["allocation"], row["sparsity"], row["sparsity_type"], seed)


def zero_shot_runs(records: list[dict], prof: dict, perplexity_records: list[dict] = ()) -> pd.DataFrame:
    """One row per zero-shot run (method, allocation, seed): accuracy per task, the means, and the
    perplexity of the same setting and seed from ``perplexity_records`` where one matches (else NaN).
    Dense first, then each pruner's allocations in profile order, seeds ascending."""
    tasks = list(prof["zero_shot"]["tasks"])
    ppl = {}
    for record in perplexity_records:
        row = record_row(record)
        ppl.setdefault(_run_cell(row), row["perplexity"])
    rows = []
    for record in records:
        row = record_row(record)
        result = record["zero_shot"]
        out = {k: row[k] for k in ("method", "allocation", "seed", "uses_calibration", "achieved_sparsity")}
        for task in tasks:
            out[task] = result["tasks"][task].get("acc")
        out["mean_acc"] = result["mean_acc"]
        out["mean_acc_norm"] = result["mean_acc_norm"]
        out["perplexity"] = ppl.get(_run_cell(row))
        out["zero_shot_seconds"] = result.get("seconds")
        out["key"] = row["key"]
        rows.append(out)
    runs = pd.DataFrame(rows).sort_values("seed", kind="stable")
    # by allocation, then (stable) by method: Dense first, each pruner's allocations in profile order
    runs = _ordered(runs, "allocation", ["none", *prof["allocations"]])
    return _ordered(runs, "method", ["dense", *prof["zero_shot"]["methods"]]).reset_index(drop=True)


def zero_shot_table(
    records: list[dict], prof: dict, perplexity_records: list[dict] = ()
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Accuracy per task and the means over the calibration seeds, Dense first, then each pruner with
    its allocations.

    ``records`` are runs with zero-shot results (``experiments.zero_shot_specs`` on each seed); the
    perplexity of the same setting is the mean over the ``perplexity_records`` that match (method,
    allocation, sparsity, seed), else empty. Returns ``(numbers, display, bold)``: accuracies as
    fractions (CSV; ``mean_acc`` with ``mean_acc_min``/``_max``/``_std`` and ``n`` runs), percentages as
    strings (Markdown/LaTeX, the papers' style) and the bold mask of ``spread.BOLD_RULE`` on the mean.
    """
    tasks = list(prof["zero_shot"]["tasks"])
    runs = zero_shot_runs(records, prof, perplexity_records)
    extra = {t: (t, "mean") for t in tasks}
    extra.update(
        mean_acc_norm=("mean_acc_norm", "mean"),
        perplexity=("perplexity", "mean"),
        achieved_sparsity=("achieved_sparsity", "mean"),
        zero_shot_seconds=("zero_shot_seconds", "mean"),
    )
    summary = _summary(runs, "mean_acc", extra)
    numbers = summary.rename(
        columns={"mean": "mean_acc", "min": "mean_acc_min", "max": "mean_acc_max", "std": "mean_acc_std"}
    )
    numbers = numbers[
        ["method", "allocation", *tasks, "mean_acc", "mean_acc_min", "mean_acc_max", "mean_acc_std", "n", "seeds"]
        + ["mean_acc_norm", "perplexity", "uses_calibration", "achieved_sparsity", "zero_shot_seconds", "keys"]
    ]
    pruned = summary[summary["method"] != "dense"]
    is_best = best_beyond_spread(pruned, "method", lower_is_better=False).reindex(numbers.index, fill_value=False)
    previous = numbers["method"].shift()
    pct = lambda v: "–" if v is None or pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    display = pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(numbers["method"], previous)],
            "Layerwise": [ALLOCATION_NAMES[a] for a in numbers["allocation"]],
            **{TASK_NAMES.get(t, t): [pct(v) for v in numbers[t]] for t in tasks},
            "Mean": [pct(v) for v in numbers["mean_acc"]],
            "min–max over seeds": [format_range(r, pct) for _, r in summary.iterrows()],
            "n": numbers["n"].astype(int),
            "Mean (norm)": [pct(v) for v in numbers["mean_acc_norm"]],
            "Perplexity": [format_perplexity(v) for v in numbers["perplexity"]],
        }
    )
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold["Mean"] = is_best.values
    return numbers, display, bold


def zero_shot_settings(records: list[dict]) -> dict:
    """The settings that move zero-shot numbers, from the records (all records share them)."""
    first = records[0]["zero_shot"]
    settings = dict(first["settings"])
    settings["task_versions"] = first["versions"]
    settings["n"] = {t: entry.get("n") for t, entry in first["tasks"].items()}
    return settings


def zero_shot_caption(prof: dict, records: list[dict]) -> str:
    settings = zero_shot_settings(records)
    limit = settings["limit"]
    scope = "full splits"
    if limit is not None:  # the standard error of an accuracy over n examples is at most 50/sqrt(n) points
        scope = f"the first {limit} examples of each task (standard error up to ±{50 / math.sqrt(limit):.0f} points)"
    version = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731  (2.0 -> 2)
    versions = ", ".join(f"{TASK_NAMES.get(t, t)} v{version(v)}" for t, v in settings["task_versions"].items())
    data = settings["task_data"] + (" converted offline" if settings["source"] == "local" else "")
    bos = "added" if settings["add_bos_token"] else "not added"
    seeds = prof["seeds"]
    return (
        f"Zero-shot accuracy (%, `acc`, higher is better) at {percent(prof['main_sparsity'])} unstructured "
        f"sparsity: mean over {len(seeds)} calibration seeds ({', '.join(map(str, seeds))}), the mean over tasks "
        f"with its min–max range over seeds; n = runs. {BOLD_RULE} The examples are the same for every run, "
        "so the seed range does not include their sampling error. Mean (norm): `acc_norm` where a task "
        f"defines it (HellaSwag, ARC, OBQA), `acc` elsewhere. Model {model_name(prof)}, {scope}; "
        f"lm-eval {settings['lm_eval']}, "
        f"{settings['num_fewshot']}-shot, batch size {settings['batch_size']}, BOS {bos}, task versions "
        f"{versions}; data: {data}. Perplexity: the same setting in the main table (evaluation on "
        f"{source_name(prof['eval'], long=True)}), mean over the same seeds; profile '{prof.get('name')}'. "
        f"Machine: {machine_of(records)}."
    )


def write_zero_shot_json(path: str | os.PathLike, numbers: pd.DataFrame, records: list[dict], prof: dict) -> None:
    """The table's numbers plus, for every run behind a row, its seed, every task's acc/acc_norm/stderr/n,
    its configuration and hardware; and the settings shared by all runs."""
    by_key = {config_key(r["config"]): r for r in records}
    rows = []
    for row in numbers.to_dict("records"):
        runs = [by_key[key] for key in row["keys"].split(";")]
        runs = [
            {
                "seed": r["config"]["seed"],
                "tasks": r["zero_shot"]["tasks"],
                "config": r["config"],
                "hardware": r.get("hardware"),
            }
            for r in runs
        ]
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        rows.append({**clean, "runs": runs})
    payload = {"caption": zero_shot_caption(prof, records), "settings": zero_shot_settings(records), "rows": rows}
    write_json_atomic(path, payload)


# ------------------------------------------------------------------------ reproduction tolerance
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


# ------------------------------------------------------------------------------------ LoRA recovery
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


# ---------------------------------------------------------------------------------- DSA search (10)
def dsa_versus(runs: pd.DataFrame, prof: dict, method: str, tolerances: pd.DataFrame | None = None) -> pd.DataFrame:
    """The searched DSA row against each other allocation of ``method`` in the main table's runs
    (``main_table_runs``): means, the ratio, in how many seeds DSA is better on the same calibration
    windows, whether the min–max ranges over seeds are apart, and whether the gap of the means exceeds
    the cell's reproduction tolerance. An empty frame if there is no DSA row."""
    sub = runs[runs["method"] == method]
    if "dsa" not in set(sub["allocation"]):
        return pd.DataFrame()
    values = per_seed_values(sub, "allocation")
    tol = math.nan
    if tolerances is not None and len(tolerances):
        tol = lookup_tolerance(tolerances, method, prof["main_sparsity"])[0]
    dsa = values["dsa"]
    rows = []
    for other in [a for a in prof["allocations"] if a in values]:
        theirs = values[other]
        both = dsa.notna() & theirs.notna()
        gap = math.log(theirs.mean() / dsa.mean())  # > 0: DSA is better
        rows.append(
            {
                "method": method,
                "versus": other,
                "perplexity": float(theirs.mean()),
                "dsa_perplexity": float(dsa.mean()),
                "ratio": float(theirs.mean() / dsa.mean()),
                "dsa_better_seeds": int((dsa[both] < theirs[both]).sum()),
                "seeds": int(both.sum()),
                "ranges_apart": bool(dsa.max() < theirs.min() or theirs.max() < dsa.min()),
                "tolerance_pct": 100.0 * (math.exp(tol) - 1.0) if math.isfinite(tol) else math.nan,
                "beyond_tolerance": bool(math.isfinite(tol) and abs(gap) > tol),
            }
        )
    return pd.DataFrame(rows)


def dsa_verdicts(versus: pd.DataFrame) -> list[str]:
    """One sentence per comparison of ``dsa_versus``: who is better, by how much, and whether that is
    beyond the spread over seeds and beyond the reproduction tolerance (only then a claim)."""
    lines = []
    for _, r in versus.iterrows():
        name = ALLOCATION_NAMES[r["versus"]]
        better = r["dsa_perplexity"] < r["perplexity"]
        # the gap as the worse one's excess over the better one: the same ratio scale as the tolerance
        worse, excess = (name, r["ratio"] - 1.0) if better else ("DSA", 1.0 / r["ratio"] - 1.0)
        head = (
            f"DSA (searched) {'beats' if better else 'does not beat'} {name}: {format_perplexity(r['dsa_perplexity'])} "
            f"vs {format_perplexity(r['perplexity'])} ({worse} {100 * excess:.0f}% higher); "
            f"DSA better in {r['dsa_better_seeds']} of {r['seeds']} seeds"
        )
        spread = "min–max ranges apart" if r["ranges_apart"] else "min–max ranges overlap"
        tol = (
            f"{'beyond' if r['beyond_tolerance'] else 'within'} the {format_tolerance(r['tolerance_pct'])} "
            "reproduction tolerance"
            if math.isfinite(r["tolerance_pct"])
            else "no tolerance measured"
        )
        claim = "an ordering" if r["ranges_apart"] and r["beyond_tolerance"] else "no claimed ordering"
        lines.append(f"{head}; {spread}, {tol}: {claim}.")
    return lines


def dsa_search_summary(result: dict, settings, config) -> str:
    """Markdown bullets for a DSA search (``ex.dsa_search``'s result with its ``ex.dsa_search_settings``):
    the best expression and the ``dlp-prune`` command that applies it, the evolution's settings and
    counts, and what the proxy fitness measured."""
    candidates = result["candidates"]
    shared = sum(c["shared_with"] is not None for c in candidates)
    invalid = sum(c["fitness"] is None for c in candidates)
    best = result["best"]
    if best.get("fitness") is None:
        found = "- **best expression**: none; every candidate was invalid\n"
    else:
        graph = best["expression"]
        found = (
            f"- **best expression**: `{graph}` (proxy perplexity {best['fitness']:.2f})\n"
            f'- **use it**: `dlp-prune --prune_method {settings.method} --allocation dsa --dsa_graph "{graph}" '
            f"--Lamda {settings.dsa_lambda:g} --sparsity_ratio {settings.sparsity:g}`\n"
        )
    return (
        found + f"- **search**: population {config.population} × {config.generations} generations, "
        f"elite {config.elite}, tournament {config.tournament}, crossover {config.crossover:g}, "
        f"mutation {config.mutation:g}, seed {config.seed}; {len(candidates)} expressions evaluated "
        f"({shared} shared an earlier one's densities, {invalid} invalid), {result['seconds']:.0f} s when it ran\n"
        f"- **fitness**: {settings.method} at {settings.sparsity:g}, {settings.nsamples} × {settings.seqlen} "
        f"calibration tokens, perplexity on {settings.windows} search windows of {settings.seqlen} tokens "
        f"(calibration side), λ = {settings.dsa_lambda:g}"
    )


def proxy_check_caption(prof: dict, check: pd.DataFrame, rho_searched: float, rho_all: float) -> str:
    search = prof["dsa_search"]
    searched = int((check["kind"] == "searched").sum())
    return (
        f"Proxy check: {searched} searched expressions spread over the search's ranking, and the profile's "
        f"allocations, each with its proxy fitness (perplexity on {search['windows']} calibration-side windows of "
        f"{search['seqlen']} tokens after pruning with {search['nsamples']} calibration windows of {search['seqlen']}) "
        f"and its perplexity with the table's settings ({prof['nsamples']}×{prof['seqlen']} calibration, "
        f"{prof['eval_windows'] or 'all'} evaluation windows of {prof['seqlen']}, seed {prof['seed']}). Spearman "
        f"rank correlation: {rho_searched:.2f} over the searched expressions, {rho_all:.2f} with the allocations "
        f"added. Model {model_name(prof)}; profile '{prof.get('name')}'."
    )
