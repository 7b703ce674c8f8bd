"""Notebook 07's zero-shot table: runs, means with spread, settings, caption, JSON."""

from __future__ import annotations

import math
import os

import pandas as pd

from ..cache import write_json_atomic
from ..experiments import (
    ALLOCATION_NAMES,
    METHOD_NAMES,
    model_name,
    percent,
    record_row,
    source_name,
)
from ..results import config_key
from ..spread import (
    BOLD_RULE,
    best_beyond_spread,
    format_range,
)
from .format import format_perplexity
from .perplexity import _ordered, _summary, machine_of

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
