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
    zero_shot_seeds,
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


CHANCE = {"boolq": 0.5, "rte": 0.5, "winogrande": 0.5, "piqa": 0.5, "hellaswag": 0.25}
CHANCE.update(arc_easy=0.25, arc_challenge=0.25, openbookqa=0.25)
SE_RULE = (
    "Bold also needs the best mean to lead every other allocation by more than twice the standard error of "
    "the difference, √(SE₁² + SE₂²) (examples' sampling error)."
)


def mean_standard_error(errors) -> float:
    """The standard error of the mean of T task accuracies from each task's standard error: √(Σ SEᵢ²) / T
    (the tasks' examples are independent)."""
    errors = [float("nan") if e is None else float(e) for e in errors]  # lm-eval gives none without bootstrap
    return math.sqrt(sum(e * e for e in errors)) / len(errors) if errors else float("nan")


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
        for task in tasks:
            out[f"{task}_se"] = result["tasks"][task].get("acc_stderr")
        out["mean_acc"] = result["mean_acc"]
        out["mean_acc_se"] = mean_standard_error(out[f"{t}_se"] for t in tasks)
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
    extra.update({f"{t}_se": (f"{t}_se", "mean") for t in tasks})
    extra.update(
        mean_acc_se=("mean_acc_se", "mean"),
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
        [
            "method",
            "allocation",
            *tasks,
            *(f"{t}_se" for t in tasks),
            "mean_acc",
            "mean_acc_se",
            "mean_acc_min",
            "mean_acc_max",
            "mean_acc_std",
        ]
        + ["n", "seeds"]
        + ["mean_acc_norm", "perplexity", "uses_calibration", "achieved_sparsity", "zero_shot_seconds", "keys"]
    ]
    pruned = summary[summary["method"] != "dense"]
    is_best = best_beyond_spread(pruned, "method", lower_is_better=False) & _leads_beyond_se(pruned)
    is_best = is_best.reindex(numbers.index, fill_value=False)
    previous = numbers["method"].shift()
    pct = lambda v: "–" if v is None or pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    display = pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(numbers["method"], previous)],
            "Layerwise": [ALLOCATION_NAMES[a] for a in numbers["allocation"]],
            **{TASK_NAMES.get(t, t): [pct(v) for v in numbers[t]] for t in tasks},
            "Mean": [pct(v) for v in numbers["mean_acc"]],
            "± SE": [pct(v) for v in numbers["mean_acc_se"]],
            "min–max over seeds": [format_range(r, pct) for _, r in summary.iterrows()],
            "n": numbers["n"].astype(int),
            "Mean (norm)": [pct(v) for v in numbers["mean_acc_norm"]],
            "Perplexity": [format_perplexity(v) for v in numbers["perplexity"]],
        }
    )
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold["Mean"] = is_best.values
    return numbers, display, bold


def _leads_beyond_se(summary: pd.DataFrame) -> pd.Series:
    """Per pruner: True for the allocation with the highest mean accuracy when it leads every other by more
    than 2 √(SE₁² + SE₂²) (``SE_RULE``); where no standard error was recorded, by any margin."""
    leads = pd.Series(False, index=summary.index)
    for _, sub in summary.groupby("method", sort=False):
        if len(sub) < 2:
            continue
        best = sub["mean"].idxmax()
        others = sub.drop(index=best)
        gaps = sub.loc[best, "mean"] - others["mean"]
        noise = 2 * (sub.loc[best, "mean_acc_se"] ** 2 + others["mean_acc_se"] ** 2) ** 0.5
        leads[best] = bool((gaps > noise.fillna(0.0)).all())  # no standard error recorded: the seed rule alone
    return leads


def below_chance(numbers: pd.DataFrame, tasks) -> list[tuple[str, str, str, float, float]]:
    """``(method, allocation, task, accuracy, standard error)`` of every cell more than two standard errors
    below its task's chance level (``CHANCE``)."""
    found = []
    for _, row in numbers.iterrows():
        for task in tasks:
            se = row.get(f"{task}_se", float("nan"))
            if task in CHANCE and pd.notna(row[task]) and pd.notna(se) and row[task] < CHANCE[task] - 2 * se:
                found.append((row["method"], row["allocation"], task, float(row[task]), float(se)))
    return found


def task_errors(runs: pd.DataFrame, tasks) -> pd.DataFrame:
    """Per task: examples scored, chance level, and each model's accuracy with its standard error (first
    seed's run of each row), as fractions: the table a reader needs to judge any gap of the main one."""
    first = runs.drop_duplicates(["method", "allocation"])
    rows = []
    for task in tasks:
        row = {"task": task, "chance": CHANCE.get(task)}
        for _, run in first.iterrows():
            name = (
                "Dense"
                if run["method"] == "dense"
                else f"{METHOD_NAMES[run['method']]} {ALLOCATION_NAMES[run['allocation']]}"
            )
            row[name] = run[task]
            row[f"{name} SE"] = run[f"{task}_se"]
        rows.append(row)
    return pd.DataFrame(rows)


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
        worst = 50 / math.sqrt(limit)
        scope = f"the first {limit} examples of each task (a task's standard error up to ±{worst:.0f} points)"
    version = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731  (2.0 -> 2)
    versions = ", ".join(f"{TASK_NAMES.get(t, t)} v{version(v)}" for t, v in settings["task_versions"].items())
    data = settings["task_data"] + (" converted offline" if settings["source"] == "local" else "")
    bos = "added" if settings["add_bos_token"] else "not added"
    seeds = zero_shot_seeds(prof)
    over = (
        f"mean over {len(seeds)} calibration seeds ({', '.join(map(str, seeds))}), the mean over tasks with its "
        "min–max range over seeds"
        if len(seeds) > 1
        else f"calibration seed {seeds[0]}"
    )
    return (
        f"Zero-shot accuracy (%, `acc`, the metric the papers report; higher is better) at "
        f"{percent(prof['main_sparsity'])} unstructured sparsity: {over}; ± SE: the standard error of the mean "
        f"over the tasks, √(Σ SEᵢ²)/T from each task's binomial standard error; n = runs. {BOLD_RULE} {SE_RULE} "
        "The examples are the same for every run, so a seed range does not include their sampling error. "
        "Mean (norm): `acc_norm` where a task "
        f"defines it (HellaSwag, ARC, OBQA), `acc` elsewhere. Model {model_name(prof)}, {scope}; "
        f"lm-eval {settings['lm_eval']}, "
        f"{settings['num_fewshot']}-shot, batch size {settings['batch_size']}, BOS {bos}, task versions "
        f"{versions}; data: {data}. Perplexity: the same setting in the main table (evaluation on "
        f"{source_name(prof['eval'], long=True)}), mean over the main table's seeds; profile '{prof.get('name')}'. "
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
