"""Result records as pandas frames: one row per run, per block."""

from __future__ import annotations

import logging

import pandas as pd

from ..results import config_key
from .labels import percent
from .runs import uses_calibration

log = logging.getLogger(__name__)


def record_row(record: dict) -> dict:
    """One flat row of a result record: setup, achieved sparsity, perplexity, timings."""
    config = record["config"]
    prune = config.get("prune") or {}
    pruning = record.get("pruning") or {}
    timings = record.get("timings") or {}
    ppl = record.get("perplexity") or {}
    allocation = prune.get("allocation", "none")
    return {
        "method": prune.get("method", "dense"),
        "allocation": allocation,
        "sparsity": prune.get("sparsity", 0.0),
        "sparsity_type": prune.get("sparsity_type", "dense"),
        "owl_lambda": prune.get("owl_lambda") if allocation == "owl" else None,
        "owl_m": prune.get("owl_m") if allocation == "owl" else None,
        "dlp_alpha": prune.get("dlp_alpha") if allocation == "dlp" else None,
        "seed": config.get("seed"),
        "perturb": prune.get("perturb", 0.0),
        "perturb_seed": prune.get("perturb_seed"),
        "uses_calibration": uses_calibration(prune.get("method"), allocation),
        "achieved_sparsity": pruning.get("overall_achieved"),
        "perplexity": ppl.get("perplexity"),
        "prune_seconds": (pruning.get("seconds") or {}).get("total"),
        "eval_seconds": ppl.get("seconds"),
        "total_seconds": timings.get("total"),
        "model": config.get("model"),
        "key": config_key(config),
    }


def runs_table(*run_lists) -> pd.DataFrame:
    """The runs behind a notebook section, one row each: the configuration, its record's file name in
    the results folder, the seconds the run took when it was computed, and whether it was computed now
    or read from that record. Takes one or more ``run_specs`` results."""
    rows = []
    for records in run_lists:
        for record, run in zip(records, records.runs):
            seconds = (record.get("timings") or {}).get("total")
            source = "computed" if run["computed"] else "read from record"
            rows.append({"run": run["run"], "record": run["record"], "seconds": seconds, "source": source})
    frame = pd.DataFrame(rows, columns=["run", "record", "seconds", "source"])
    frame["seconds"] = frame["seconds"].round(1)
    return frame


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record (see ``record_row``)."""
    return pd.DataFrame([record_row(r) for r in records])


def blocks_frame(record: dict) -> pd.DataFrame:
    """Per-block target and achieved sparsity (and allocation statistic) of one pruned record."""
    pruning = record["pruning"]
    frame = pd.DataFrame({"block": range(len(pruning["block_achieved"])), "achieved": pruning["block_achieved"]})
    if pruning.get("block_targets") is not None:
        frame["target"] = pruning["block_targets"]
    allocation = record.get("allocation")
    if allocation:
        frame["statistic"] = allocation["statistic"]
        frame["density"] = allocation["densities"]
        if allocation.get("block_nm"):
            frame["nm"] = [f"{n}:{m}" for n, m in allocation["block_nm"]]
    return frame


def block_sparsity_frame(records: list[dict]) -> pd.DataFrame:
    """Achieved sparsity per decoder block (rows) of each pruned record (columns ``method/allocation``
    plus the pattern or sparsity), to check an allocation was applied as planned."""
    columns = {}
    for record in records:
        row = record_row(record)
        if row["method"] == "dense":
            continue
        pattern = row["sparsity_type"] if row["sparsity_type"] != "unstructured" else percent(row["sparsity"])
        columns[f"{row['method']}/{row['allocation']} {pattern}"] = record["pruning"]["block_achieved"]
    frame = pd.DataFrame(columns)
    frame.index.name = "block"
    return frame


def dense_perplexity(frame: pd.DataFrame) -> float | None:
    if "method" not in frame:  # no records at all
        return None
    dense = frame[frame["method"] == "dense"]
    return float(dense["perplexity"].iloc[0]) if len(dense) else None
