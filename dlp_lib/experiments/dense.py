"""Dense statistics (block outlier ratios, norms, DLP's unimportance) and the allocation analyses on them."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import pipeline
from ..allocation import DIRECTION, allocate, dlp_unimportance, dsa_value, largest_width, owl_outlier_ratio
from ..cache import read_cache, stable_hash, write_json_atomic
from ..config import (
    ConfigError,
    PruneConfig,
)
from .frames import record_row
from .labels import ALLOCATION_NAMES, HYPER_ALLOCATION, calibration_name
from .runs import _json_object, before_computing, run_config, run_label
from .specs import hyper_specs

log = logging.getLogger(__name__)


@dataclass
class DenseStatistics:
    """Per-block allocation statistics of the dense model (from the pipeline's cached dense pass)
    and facts about the model and data. ``densities`` gives any allocation without pruning."""

    facts: dict
    blocks: pd.DataFrame  # block, params, owl_outlier_ratio_m<M>, dlp_abs_mean, dlp_abs_median, dsa_value
    dsa_error: str | None
    seconds: float
    norms_cache: str | None = None  # the dense input norms file the statistics were computed from

    def statistic(self, prune: PruneConfig) -> list[float]:
        if prune.allocation == "uniform":
            return [0.0] * len(self.blocks)
        if prune.allocation == "owl":
            column = owl_column(prune.owl_m)
            if column not in self.blocks:
                raise ConfigError(f"OWL statistic for M={prune.owl_m:g} was not computed; pass it in owl_ms")
            return self.blocks[column].tolist()
        if prune.allocation == "dlp":
            return self.blocks[f"dlp_abs_{prune.dlp_statistic}"].tolist()
        if self.dsa_error:
            raise ConfigError(self.dsa_error)
        if prune.dsa_graph != self.facts["dsa_graph"]:
            raise ConfigError(f"DSA statistic computed for {self.facts['dsa_graph']!r}, not {prune.dsa_graph!r}")
        return self.blocks["dsa_value"].tolist()

    def densities(self, prune: PruneConfig) -> list[float]:
        """Per-block densities of an allocation (the same functions the pipeline uses); raises
        ConfigError when the allocation is not possible (e.g. a block density outside (0, 1])."""
        weights = self.blocks["params"].tolist()
        return [float(d) for d in allocate(self.statistic(prune), prune, weights=weights)]

    def largest_width(self, prune: PruneConfig) -> float:
        """The largest α/λ that keeps every block's density in (0, 1] for ``prune``'s allocation."""
        weights = self.blocks["params"].tolist()
        return largest_width(self.statistic(prune), prune.sparsity, DIRECTION[prune.allocation], weights)


def load_dense_statistics(path: Path) -> DenseStatistics:
    """The dense statistics table that ``dense_statistics`` kept at ``path`` (read it through
    ``cache.read_cache``, which rebuilds an unreadable file)."""
    stored = _json_object(path)
    blocks = pd.DataFrame(stored["blocks"])
    return DenseStatistics(stored["facts"], blocks, stored["dsa_error"], stored["seconds"], stored.get("norms_cache"))


def owl_column(m: float) -> str:
    return f"owl_outlier_ratio_m{float(m):g}"


def dense_statistics(
    prof: dict,
    owl_ms=None,
    progress: bool = False,
    results_dir: str | os.PathLike | None = None,
    refresh: bool = False,
) -> DenseStatistics:
    """Load the model and calibration windows, take the dense input norms from the pipeline's cache
    (one forward pass the first time), and compute every block's allocation statistics: OWL's outlier
    ratio for each M in ``owl_ms`` (default: the profile's M and its sensitivity grid), DLP's |mean|
    and |median| Wanda score, and the DSA expression (NaN, with ``dsa_error`` set, if not finite).

    With ``results_dir`` the result is also kept there (``dense_statistics/<key>.json``, keyed like the
    run records by the settings), so later notebooks need not load the model again; ``refresh=True``
    computes it again (the grid does when the norms file it names has gone)."""
    path = None
    if results_dir is not None:
        path = dense_statistics_path(prof, owl_ms, results_dir)
        stored = None if refresh else read_cache(path, load_dense_statistics, "dense statistics table")
        if stored is not None:
            return stored
        before_computing(f"no dense statistics table in {path}")
    stats = _compute_dense_statistics(prof, _owl_ms(prof, owl_ms), progress)
    if path is not None:
        blocks = stats.blocks.to_dict("list")
        table = {"facts": stats.facts, "blocks": blocks, "dsa_error": stats.dsa_error, "seconds": stats.seconds}
        write_json_atomic(path, {**table, "norms_cache": stats.norms_cache})
    return stats


def _owl_ms(prof: dict, owl_ms=None) -> list[float]:
    if owl_ms is None:
        owl_ms = [prof["owl_m"], *prof["hyper_grid"].get("owl_m", [])]
    return sorted({float(m) for m in owl_ms})


def dense_statistics_path(prof: dict, owl_ms=None, results_dir: str | os.PathLike = "results") -> Path:
    """Where ``dense_statistics`` keeps its table: ``results_dir/dense_statistics/<settings hash>.json``."""
    settings = {k: prof[k] for k in ("model", "calibration", "nsamples", "seqlen", "seed", "device", "dtype")}
    key = stable_hash({"settings": settings, "owl_ms": _owl_ms(prof, owl_ms), "dsa_graph": prof["dsa_graph"]})
    return Path(results_dir) / "dense_statistics" / f"{key}.json"


def stored_norms_cache(prof: dict, results_dir: str | os.PathLike = "results") -> Path | None:
    """The dense input norms file (``$DLP_CACHE_DIR/dense_stats``) that the stored dense statistics
    table of ``prof`` was computed from, if both exist; None otherwise. The grid's statistics jobs are
    done when this is not None."""
    path = dense_statistics_path(prof, None, results_dir)
    try:
        norms = json.loads(path.read_text()).get("norms_cache")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(norms) if norms and Path(norms).is_file() else None


def _compute_dense_statistics(prof: dict, owl_ms: list[float], progress: bool) -> DenseStatistics:
    import torch

    from ..data import calibration_windows
    from ..layers import decoder_blocks, linear_sublayers
    from ..models import load_model
    from ..scores import block_wanda_scores

    start = time.perf_counter()
    model, tokenizer = load_model(prof["model"], prof["dtype"], prof["device"], prof["trust_remote_code"])
    calibration = calibration_windows(prof["calibration"], tokenizer, prof["nsamples"], prof["seqlen"], prof["seed"])
    norms, _ = pipeline.cached_dense_norms(model, calibration, prof["batch_size"], progress)
    norms_cache = str(pipeline.dense_norms_path(model, calibration))
    rows, dsa_error = [], None
    with torch.no_grad():
        for index, block in enumerate(decoder_blocks(model)):
            weights = {name: lin.weight for name, lin in linear_sublayers(block).items()}
            scores = block_wanda_scores(weights, norms[index])
            row = {"block": index, "params": sum(w.numel() for w in weights.values())}
            for m in owl_ms:
                row[owl_column(m)] = owl_outlier_ratio(scores, m)
            row["dlp_abs_mean"] = dlp_unimportance(scores, "mean")
            row["dlp_abs_median"] = dlp_unimportance(scores, "median")
            try:
                row["dsa_value"] = dsa_value(scores, prof["dsa_graph"], block=index)
            except ConfigError as err:
                row["dsa_value"] = float("nan")
                dsa_error = dsa_error or str(err)
            rows.append(row)
    blocks = pd.DataFrame(rows)
    config = model.config
    facts = {
        "model": prof["model"],
        "architecture": config.model_type,
        "decoder blocks": len(blocks),
        "hidden size": getattr(config, "hidden_size", None),
        "vocabulary": getattr(config, "vocab_size", None),
        "parameters (all)": sum(p.numel() for p in model.parameters()),
        "parameters pruned (decoder linears)": int(blocks["params"].sum()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "calibration": f"{calibration.shape[0]} windows × {calibration.shape[1]} tokens of "
        f"{calibration_name(prof['calibration'])}",
        "dsa_graph": prof["dsa_graph"],
    }
    del model
    seconds = time.perf_counter() - start
    return DenseStatistics(facts=facts, blocks=blocks, dsa_error=dsa_error, seconds=seconds, norms_cache=norms_cache)


def dense_facts_table(stats: DenseStatistics, dense_record: dict) -> pd.DataFrame:
    """Two columns, quantity and value: model and data facts, dense perplexity, evaluation time."""
    facts = {k: v for k, v in stats.facts.items() if k != "dsa_graph"}
    ppl = dense_record.get("perplexity") or {}
    facts["evaluation"] = f"{ppl.get('windows')} windows, {ppl.get('tokens')} tokens"
    facts["dense perplexity"] = round(float(ppl.get("perplexity", float("nan"))), 4)
    facts["evaluation seconds"] = round(float(ppl.get("seconds", float("nan"))), 1)
    facts["achieved sparsity of decoder linears (dense)"] = round(float(dense_record["pruning"]["overall_achieved"]), 6)
    return pd.DataFrame({"quantity": list(facts), "value": [str(v) for v in facts.values()]})


def allocation_frame(stats: DenseStatistics, prof: dict, sparsity: float | None = None, allocations=None):
    """Per-block sparsity of each allocation at ``sparsity`` (default: the main sparsity) from the
    dense statistics, next to the statistics. Returns ``(wide frame, notes)``; an allocation that is
    not possible on this model (e.g. a non-finite DSA expression) is left out and explained in notes."""
    sparsity = prof["main_sparsity"] if sparsity is None else sparsity
    allocations = allocations or ["uniform", "owl", "dlp", "dsa"]
    frame = stats.blocks[["block", "params"]].copy()
    frame["owl_outlier_ratio"] = stats.blocks[owl_column(prof["owl_m"])]
    frame[f"dlp_abs_{prof['dlp_statistic']}"] = stats.blocks[f"dlp_abs_{prof['dlp_statistic']}"]
    frame["dsa_value"] = stats.blocks["dsa_value"]
    notes = []
    for allocation in allocations:
        prune = run_config(prof, "wanda", sparsity, allocation).prune
        try:
            densities = stats.densities(prune)
        except ConfigError as err:
            notes.append(f"{ALLOCATION_NAMES[allocation]} is skipped: {err}")
            continue
        frame[f"sparsity_{allocation}"] = [1.0 - d for d in densities]
    return frame, notes


def hyperparameter_allocations(stats: DenseStatistics, prof: dict, sparsity: float | None = None):
    """Allocation-only sensitivity: for every value in ``prof["hyper_grid"]`` the per-block sparsity
    (no pruning). Returns ``(summary, blocks)``: one row per value (feasible or not, min/max/std of
    block sparsity, the largest allowed width), and one row per value x block."""
    sparsity = prof["main_sparsity"] if sparsity is None else sparsity
    summary, blocks = [], []
    for name, values in prof["hyper_grid"].items():
        allocation = HYPER_ALLOCATION[name]
        for value in values:
            prune = run_config(prof, "wanda", sparsity, allocation, **{name: value}).prune
            row = {"parameter": name, "value": float(value), "allocation": allocation, "sparsity": sparsity}
            try:
                block_sparsity = [1.0 - d for d in stats.densities(prune)]
                row.update(
                    feasible=True,
                    min_block_sparsity=min(block_sparsity),
                    max_block_sparsity=max(block_sparsity),
                    block_sparsity_std=float(pd.Series(block_sparsity).std()),
                    note="",
                )
                blocks += [
                    {"parameter": name, "value": float(value), "block": i, "sparsity": s}
                    for i, s in enumerate(block_sparsity)
                ]
            except ConfigError as err:
                row.update(feasible=False, note=str(err))
            row["largest_width"] = stats.largest_width(prune) if name != "owl_m" else float("nan")
            summary.append(row)
    return pd.DataFrame(summary), pd.DataFrame(blocks)


def feasible_hyper_specs(stats: DenseStatistics, prof: dict) -> tuple[list[dict], list[str]]:
    """``hyper_specs`` without the settings whose allocation is impossible (explained in the notes)."""
    specs, notes = [], []
    for spec in hyper_specs(prof):
        try:
            stats.densities(run_config(prof, **spec).prune)
            specs.append(spec)
        except ConfigError as err:
            notes.append(f"skipped {run_label(run_config(prof, **spec))}: {err}")
    return specs, notes


def hyperparameter_table(summary: pd.DataFrame, records: list[dict], prof: dict) -> pd.DataFrame:
    """The allocation-only summary with the perplexity of the pruned runs merged in (NaN where the
    value was not pruned in this profile)."""
    rows = []
    for record in records:
        row = record_row(record)
        for name in HYPER_ALLOCATION:
            if HYPER_ALLOCATION[name] != row["allocation"]:
                continue
            value = row[name]
            others = [n for n in HYPER_ALLOCATION if HYPER_ALLOCATION[n] == row["allocation"] and n != name]
            if all(math.isclose(row[o], prof[o]) for o in others):  # the other hyper-parameter at its default
                rows.append(
                    {
                        "parameter": name,
                        "value": float(value),
                        "method": row["method"],
                        "perplexity": row["perplexity"],
                        "achieved_sparsity": row["achieved_sparsity"],
                    }
                )
    pruned = pd.DataFrame(rows, columns=["parameter", "value", "method", "perplexity", "achieved_sparsity"])
    pruned = pruned.drop_duplicates(["parameter", "value"])
    table = summary.merge(pruned, on=["parameter", "value"], how="outer")
    return table.sort_values(["parameter", "value"]).reset_index(drop=True)
