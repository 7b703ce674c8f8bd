"""ATP's beta for the notebooks: chosen per pruner on held-out calibration text (dlp_lib.atp_beta), once,
and kept in ``results_dir/atp_beta/<settings hash>.json`` beside the runs that use it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..atp_beta import choose_atp_beta
from ..cache import read_cache, stable_hash, write_json_atomic
from .runs import _json_object, before_computing, run_config

log = logging.getLogger(__name__)


def atp_settings(prof: dict, method: str) -> dict:
    """What the choice depends on: the uniform run it starts from (model, data, seed, pruner, sparsity) and
    the profile's ``atp_search`` (held-out windows, grid step, the text it is scored on)."""
    config = run_config(prof, method, prof["main_sparsity"], "uniform")
    return {"run": config.to_dict(), **prof["atp_search"]}


def atp_path(prof: dict, method: str, results_dir: str | os.PathLike = "results") -> Path:
    return Path(results_dir) / "atp_beta" / f"{stable_hash(atp_settings(prof, method))}.json"


def _choice(path: Path) -> dict:
    result = _json_object(path)
    if not isinstance(result.get("best"), float) or not isinstance(result.get("perplexity"), list):
        raise ValueError("no chosen beta (fields 'best', 'perplexity')")
    return result


def stored_atp_choice(prof: dict, method: str, results_dir: str | os.PathLike = "results") -> dict | None:
    """The stored choice for ``method``, or None (missing, unreadable, or for other settings)."""
    stored = read_cache(atp_path(prof, method, results_dir), _choice, "ATP beta choice")
    if stored is not None and stored.get("settings") == atp_settings(prof, method):
        return stored
    return None


def atp_choice(prof: dict, method: str, results_dir: str | os.PathLike = "results", progress: bool = False) -> dict:
    """ATP's beta for ``method`` (``choose_atp_beta`` with the profile's ``atp_search``), chosen once."""
    stored = stored_atp_choice(prof, method, results_dir)
    if stored is not None:
        return stored
    path = atp_path(prof, method, results_dir)
    before_computing(f"no ATP beta choice in {path}")
    setting = prof["atp_search"]
    config = run_config(prof, method, prof["main_sparsity"], "uniform")
    result = choose_atp_beta(config, on=setting["on"], heldout=setting["heldout"], step=setting["step"],
                             progress=progress)  # fmt: skip
    result = {**result, "method": method, "settings": atp_settings(prof, method)}
    write_json_atomic(path, result)
    return result


def atp_choices(prof: dict, results_dir: str | os.PathLike = "results", progress: bool = False) -> dict[str, float]:
    """``{pruner: beta}`` for the profile's ``recent`` pruners (choosing where needed)."""
    if "atp" not in prof["recent"]["allocations"]:
        return {}
    return {m: atp_choice(prof, m, results_dir, progress)["best"] for m in prof["recent"]["methods"]}


def atp_choice_frame(prof: dict, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """One row per pruner and beta tried: the held-out perplexity, and which beta was chosen."""
    rows = []
    for method in prof["recent"]["methods"]:
        choice = atp_choice(prof, method, results_dir)
        for beta, ppl in zip(choice["betas"], choice["perplexity"]):
            rows.append({"method": method, "beta": beta, "perplexity": ppl, "chosen": beta == choice["best"]})
    return pd.DataFrame(rows)


def allocation_profiles(records: list[dict], method: str, seed: int) -> pd.DataFrame:
    """Target sparsity per decoder block (rows) of each allocation (columns, in table order) that
    ``method``'s records at calibration seed ``seed`` used: what each allocation asked for, read from the
    records (uniform: the target everywhere)."""
    columns = {}
    for record in records:
        config = record["config"]
        prune = config.get("prune")
        if prune is None or prune["method"] != method or config["seed"] != seed:
            continue
        if prune["sparsity_type"] != "unstructured" or prune.get("perturb"):
            continue
        allocation = record.get("allocation")
        if allocation is None:  # uniform
            columns[prune["allocation"]] = [prune["sparsity"]] * len(record["pruning"]["block_achieved"])
        elif "densities" in allocation:
            columns[prune["allocation"]] = [1.0 - d for d in allocation["densities"]]
    frame = pd.DataFrame(columns)
    frame.index.name = "block"
    return frame


def profile_correlations(profiles: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation between the per-block profiles of every two non-uniform allocations
    (a constant profile has no ranking)."""
    varying = profiles.loc[:, profiles.nunique() > 1]
    return varying.rank().corr()  # Pearson on ranks = Spearman (ties get their mean rank)
