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
from .experiments import ALLOCATION_NAMES, METHOD_NAMES, model_name, percent, record_row, source_name
from .results import config_key


def format_perplexity(value) -> str:
    """``12.35``; ``4.92e4`` from 1000 up (the DLP README's compact style); ``–`` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    if abs(value) < 1000:
        return f"{value:.2f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


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


def main_table(frame: pd.DataFrame, prof: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The DLP README layout: Dense, then each pruner with its allocations (Uniform, OWL, DLP).

    Returns ``(numbers, display, bold)``: numeric table (CSV), formatted strings (Markdown/LaTeX) and
    the mask of each pruner's best (lowest) perplexity.
    """
    frame = frame[(frame["sparsity_type"].isin(["dense", "unstructured"]))]
    rows = []
    dense = frame[frame["method"] == "dense"]
    for _, r in dense.head(1).iterrows():
        rows.append({**dict(r), "method": "dense", "allocation": "none"})
    for method in prof["main_methods"]:
        sub = frame[(frame["method"] == method) & (frame["sparsity"] == prof["main_sparsity"])]
        sub = _ordered(sub, "allocation", prof["allocations"]).drop_duplicates("allocation")
        rows += [dict(r) for _, r in sub.iterrows()]
    numbers = pd.DataFrame(rows)[
        ["method", "allocation", "perplexity", "achieved_sparsity", "prune_seconds", "total_seconds", "key"]
    ].reset_index(drop=True)
    best = numbers.groupby("method")["perplexity"].transform("min")
    is_best = (numbers["perplexity"] == best) & (numbers["method"] != "dense") & numbers["perplexity"].notna()
    previous = numbers["method"].shift()
    display = pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(numbers["method"], previous)],
            "Layerwise": [ALLOCATION_NAMES[a] for a in numbers["allocation"]],
            model_name(prof): [format_perplexity(v) for v in numbers["perplexity"]],
            "Sparsity (%)": [f"{100 * v:.2f}" for v in numbers["achieved_sparsity"]],
            "Pruning (s)": ["–" if pd.isna(v) else f"{v:.1f}" for v in numbers["prune_seconds"]],
        }
    )
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold[model_name(prof)] = is_best.values
    return numbers, display, bold


def main_table_caption(prof: dict) -> str:
    return (
        f"Perplexity (lower is better) at {percent(prof['main_sparsity'])} unstructured sparsity of the decoder "
        f"linears; best allocation per pruner in bold. Model {model_name(prof)}, evaluation on "
        f"{source_name(prof['eval'], long=True)}, calibration {prof['nsamples']}×{prof['seqlen']} tokens of "
        f"{source_name(prof['calibration'])}; profile '{prof.get('name')}'. Sparsity = achieved; Pruning = "
        "seconds of the pruning pass."
    )


def write_main_table_json(path: str | os.PathLike, numbers: pd.DataFrame, records: list[dict], prof: dict) -> None:
    """Numbers plus the full run configurations, per-block densities and timings, for later notebooks."""
    by_key = {config_key(r["config"]): r for r in records}
    rows = []
    for row in numbers.to_dict("records"):
        record = by_key[row["key"]]
        allocation = record.get("allocation") or {}
        rows.append(
            {
                **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()},
                "block_densities": allocation.get("densities"),
                "config": record["config"],
                "timings": record.get("timings"),
                "versions": record.get("versions"),
                "hardware": record.get("hardware"),
            }
        )
    payload = {
        "caption": main_table_caption(prof),
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
        f"exactly N over the blocks. Model {model_name(prof)}, evaluation on {source_name(prof['eval'], long=True)}; "
        f"profile '{prof.get('name')}'."
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


def zero_shot_table(
    records: list[dict], prof: dict, perplexity_records: list[dict] = ()
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Accuracy per task and the means, Dense first, then each pruner with its allocations.

    ``records`` are runs with zero-shot results (``experiments.zero_shot_specs``); the perplexity of
    the same setting is taken from ``perplexity_records`` where one matches (method, allocation,
    sparsity), else left empty. Returns ``(numbers, display, bold)``: accuracies as fractions (CSV),
    percentages as strings (Markdown/LaTeX, the papers' style) and the mask of each pruner's best mean.
    """
    tasks = list(prof["zero_shot"]["tasks"])
    ppl = {}
    for record in perplexity_records:
        row = record_row(record)
        ppl.setdefault((row["method"], row["allocation"], row["sparsity"], row["sparsity_type"]), row["perplexity"])
    rows = []
    for record in records:
        row = record_row(record)
        result = record["zero_shot"]
        out = {"method": row["method"], "allocation": row["allocation"], "achieved_sparsity": row["achieved_sparsity"]}
        for task in tasks:
            out[task] = result["tasks"][task].get("acc")
        out["mean_acc"] = result["mean_acc"]
        out["mean_acc_norm"] = result["mean_acc_norm"]
        out["perplexity"] = ppl.get((row["method"], row["allocation"], row["sparsity"], row["sparsity_type"]))
        out["zero_shot_seconds"] = result.get("seconds")
        out["key"] = row["key"]
        rows.append(out)
    numbers = pd.DataFrame(rows)
    # by allocation, then (stable) by method: Dense first, each pruner's allocations in profile order
    numbers = _ordered(numbers, "allocation", ["none", *prof["allocations"]])
    numbers = _ordered(numbers, "method", ["dense", *prof["zero_shot"]["methods"]]).reset_index(drop=True)
    best = numbers.groupby("method")["mean_acc"].transform("max")
    is_best = (numbers["mean_acc"] == best) & (numbers["method"] != "dense")
    previous = numbers["method"].shift()
    pct = lambda v: "–" if v is None or pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    display = pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(numbers["method"], previous)],
            "Layerwise": [ALLOCATION_NAMES[a] for a in numbers["allocation"]],
            **{TASK_NAMES.get(t, t): [pct(v) for v in numbers[t]] for t in tasks},
            "Mean": [pct(v) for v in numbers["mean_acc"]],
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
    return (
        f"Zero-shot accuracy (%, `acc`, higher is better) at {percent(prof['main_sparsity'])} unstructured "
        "sparsity; best mean per pruner in bold. Mean (norm): `acc_norm` where a task defines it (HellaSwag, "
        f"ARC, OBQA), `acc` elsewhere. Model {model_name(prof)}, {scope}; lm-eval {settings['lm_eval']}, "
        f"{settings['num_fewshot']}-shot, batch size {settings['batch_size']}, BOS {bos}, task versions "
        f"{versions}; data: {data}. Perplexity: the same setting in the main table (evaluation on "
        f"{source_name(prof['eval'], long=True)}); profile '{prof.get('name')}'."
    )


def write_zero_shot_json(path: str | os.PathLike, numbers: pd.DataFrame, records: list[dict], prof: dict) -> None:
    """The table's numbers plus every task's acc/acc_norm/stderr/n, the settings and the run configs."""
    by_key = {config_key(r["config"]): r for r in records}
    rows = []
    for row in numbers.to_dict("records"):
        record = by_key[row["key"]]
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        rows.append({**clean, "tasks": record["zero_shot"]["tasks"], "config": record["config"]})
    payload = {"caption": zero_shot_caption(prof, records), "settings": zero_shot_settings(records), "rows": rows}
    write_json_atomic(path, payload)
