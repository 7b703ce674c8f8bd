"""EvoPress's search for the notebooks: settings from a profile, the stored searches, their allocations and check."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..cache import read_cache, stable_hash, write_json_atomic
from ..search.evopress import EvoPressConfig, EvoPressSettings, evopress_search
from .profiles import search_run_settings
from .runs import _json_object, before_computing, run_specs

log = logging.getLogger(__name__)

CONFIG_FIELDS = ("generations", "offspring", "survivors", "tokens", "search_seed")
SETTING_FIELDS = ("granularity", "num_levels", "windows", "window_seqlen")


def evopress_settings(prof: dict, method: str) -> tuple[EvoPressSettings, EvoPressConfig]:
    """The database, fitness and evolution of ``prof["evopress_search"]`` for ``method``: the profile's
    model, calibration windows (the table's, so the dense statistics are shared), seed and main sparsity."""
    setting = prof["evopress_search"]
    settings = EvoPressSettings(
        method=method,
        sparsity=float(prof["main_sparsity"]),
        nsamples=prof["nsamples"],
        seqlen=prof["seqlen"],
        **{name: setting[name] for name in SETTING_FIELDS},
        **search_run_settings(prof),
    )
    return settings, EvoPressConfig(**{name: setting[name] for name in CONFIG_FIELDS})


def evopress_path(prof: dict, method: str, results_dir: str | os.PathLike = "results") -> Path:
    """Where the profile's search for ``method`` is kept: ``results_dir/evopress_search/<search key>.json``."""
    from ..search.evopress import search_key

    return Path(results_dir) / "evopress_search" / f"{search_key(*evopress_settings(prof, method))}.json"


def stored_evopress(prof: dict, method: str, results_dir: str | os.PathLike = "results") -> dict | None:
    """The stored search for ``method``, or None (missing, unreadable, or for other settings)."""
    settings, config = evopress_settings(prof, method)
    stored = read_cache(evopress_path(prof, method, results_dir), _json_object, "EvoPress search result")
    if stored is None:
        return None
    if stored.get("settings") == settings.to_dict() and stored.get("config") == config.to_dict():
        if len(stored.get("checked", [])) >= min(1, prof["evopress_search"]["proxy_check"]):
            return stored
    log.warning("ignoring mismatched EvoPress result for %s; searching again", method)
    return None


def evopress(prof: dict, method: str, results_dir: str | os.PathLike = "results", progress: bool = False) -> dict:
    """The profile's EvoPress search for ``method``, run once and kept in ``results_dir/evopress_search/``
    (every generation is checkpointed under ``$DLP_CACHE_DIR/evopress_search``, so an interrupted search
    resumes). The file is also the allocation itself: ``dlp-prune --allocation evopress --evopress FILE``."""
    stored = stored_evopress(prof, method, results_dir)
    if stored is not None:
        return stored
    path = evopress_path(prof, method, results_dir)
    before_computing(f"no EvoPress search result in {path}")
    settings, config = evopress_settings(prof, method)
    result = evopress_search(settings, config, progress=progress, check=prof["evopress_search"]["proxy_check"])
    write_json_atomic(path, result)
    return result


def evopress_allocations(prof: dict, results_dir: str | os.PathLike = "results", progress: bool = False) -> dict:
    """``{method: search result file}`` for each of the profile's EvoPress pruners (searching where needed)."""
    paths = {}
    for method in prof["evopress_search"]["methods"]:
        evopress(prof, method, results_dir, progress)
        paths[method] = str(evopress_path(prof, method, results_dir))
    return paths


def evopress_history(result: dict) -> pd.DataFrame:
    """Per generation: the KL of the surviving parent on its last stage's windows, whether the parent was
    kept, how many levels it has moved from Uniform in all, and a key of its levels (two searches that end
    on the same key found the same allocation). Generations are numbered from 1 (0: the Uniform start), as
    in the fitness check and the figure."""
    frame = pd.DataFrame(result["history"])
    frame["generation"] = frame["generation"] + 1  # the search counts from 0, with -1 for the start
    frame["last_stage_windows"] = [len(h["stages"][-1]["windows"]) for h in result["history"]]
    frame["parent_key"] = [stable_hash(h["parent"]) for h in result["history"]]
    return frame[["generation", "fitness", "parent_kept", "moved", "last_stage_windows", "seconds", "parent_key"]]


def pick_path(prof: dict, method: str, generation: int, results_dir) -> Path:
    return (
        Path(results_dir)
        / "evopress_search"
        / "checked"
        / f"{evopress_path(prof, method, results_dir).stem}-g{generation}.json"
    )


def evopress_check_specs(
    prof: dict, method: str, result: dict, results_dir: str | os.PathLike = "results"
) -> list[dict]:
    """The run specs of the search's checked allocations (``result["checked"]``): the Uniform run for the
    start (its per-row counts are level 0's exactly), else an EvoPress run of the allocation, kept as its own
    file under ``results_dir/evopress_search/checked/`` (the last one's is the EvoPress row's run itself)."""
    specs, s = [], prof["main_sparsity"]
    for pick in result["checked"]:
        if pick["generation"] < 0:
            specs.append({"method": method, "sparsity": s, "allocation": "uniform"})
            continue
        path = pick_path(prof, method, pick["generation"], results_dir)
        if read_cache(path, _json_object, "checked EvoPress allocation") is None:
            keep = {k: pick[k] for k in ("levels", "linear_sparsities", "block_sparsities")}
            write_json_atomic(path, {**result, **keep, "fitness": pick["kl"], "history": [], "checked": []})
        specs.append({"method": method, "sparsity": s, "allocation": "evopress", "evopress": str(path)})
    return specs


def evopress_check(prof: dict, method: str, result: dict, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """The search's fitness against the table's evaluation: each checked allocation (the Uniform start,
    parents along the search, the last) with its KL on every search window and its perplexity in a run
    with the table's settings (profile seed)."""
    specs = evopress_check_specs(prof, method, result, results_dir)
    rows = []
    for pick, record in zip(result["checked"], run_specs(prof, specs, results_dir)):
        rows.append(
            {
                "generation": pick["generation"] + 1,  # 0: the Uniform start, as in evopress_history
                "kl": pick["kl"],
                "moved": sum(abs(v) for v in pick["levels"]),
                "perplexity": record["perplexity"]["perplexity"],
            }
        )
    return pd.DataFrame(rows)


def evopress_linear_sparsity(result: dict) -> pd.DataFrame:
    """The found sparsity of every linear (rows: blocks, columns: the linears' names)."""
    rows: dict[int, dict[str, float]] = {}
    for key, value in result["linear_sparsities"].items():
        block, name = key.split(".", 1)
        rows.setdefault(int(block), {})[name.rsplit(".", 1)[-1]] = value
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index.name = "block"
    return frame
