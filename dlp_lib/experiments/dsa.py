"""DSA's allocation search for the notebooks: settings from a profile, the stored search, its proxy check."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pandas as pd

from ..cache import read_cache, stable_hash, write_json_atomic
from ..search import FitnessSettings, ProxyFitness, SearchConfig, search
from .frames import record_row
from .labels import ALLOCATION_NAMES
from .profiles import search_run_settings
from .runs import _json_object, before_computing, run_specs

log = logging.getLogger(__name__)

SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchConfig))
_ALLOCATION_HYPER = {"uniform": (), "owl": ("owl_lambda", "owl_m"), "dlp": ("dlp_alpha", "dlp_statistic")}


def dsa_search_settings(prof: dict) -> tuple[FitnessSettings, SearchConfig]:
    """The fitness and the evolution of ``prof["dsa_search"]``: the profile's model, calibration source,
    seed, DSA width and main sparsity; the search's own (smaller) windows."""
    setting = prof["dsa_search"]
    fitness = FitnessSettings(
        method=setting["method"],
        sparsity=float(prof["main_sparsity"]),
        dsa_lambda=float(prof["dsa_lambda"]),
        nsamples=setting["nsamples"],
        seqlen=setting["seqlen"],
        windows=setting["windows"],
        eval_batch_size=prof["eval_batch_size"],
        **search_run_settings(prof),
    )
    return fitness, SearchConfig(**{k: v for k, v in setting.items() if k in SEARCH_FIELDS})


def dsa_search_path(prof: dict, results_dir: str | os.PathLike = "results") -> Path:
    """Where the profile's DSA search result is kept: ``results_dir/dsa_search/<settings hash>.json``."""
    fitness_settings, config = dsa_search_settings(prof)
    key = stable_hash({"fitness": fitness_settings.to_dict(), "search": config.to_dict()})
    return Path(results_dir) / "dsa_search" / f"{key}.json"


def _search_result(path: Path) -> dict:
    """A stored search result, refused (as unreadable) unless it holds what the notebooks read."""
    result = _json_object(path)
    best = result.get("best")
    if not isinstance(best, dict) or "expression" not in best:
        raise ValueError("no best expression (field 'best')")
    for field in ("candidates", "history"):
        if not isinstance(result.get(field), list):
            raise ValueError(f"no {field} list (field {field!r})")
    if not isinstance(result.get("references"), dict):
        raise ValueError("no reference fitness (field 'references')")
    return result


def stored_dsa_search(prof: dict, results_dir: str | os.PathLike = "results") -> dict | None:
    """The profile's stored DSA search result, or None (missing, unreadable or for other settings)."""
    fitness_settings, config = dsa_search_settings(prof)
    path = dsa_search_path(prof, results_dir)
    stored = read_cache(path, _search_result, "DSA search result")  # None: search (cached candidates are reused)
    if stored is None:
        return None
    if stored.get("settings") == fitness_settings.to_dict() and stored.get("config") == config.to_dict():
        return stored
    log.warning("ignoring mismatched search result %s; searching again", path)
    return None


def dsa_search(prof: dict, results_dir: str | os.PathLike = "results", progress: bool = False) -> dict:
    """The profile's DSA search (``dlp_lib.search``), run once and kept in
    ``results_dir/dsa_search/<settings hash>.json``; its candidates are also cached one by one (under
    ``$DLP_CACHE_DIR/dsa_search``), so an interrupted search resumes. Besides the search result
    (``best``, ``candidates``, ``history``), ``references`` has the same proxy fitness for the
    profile's allocations (Uniform, OWL, DLP) and ``settings`` the fitness settings."""
    stored = stored_dsa_search(prof, results_dir)
    if stored is not None:
        return stored
    path = dsa_search_path(prof, results_dir)
    before_computing(f"no DSA search result in {path}")
    fitness_settings, config = dsa_search_settings(prof)
    fitness = ProxyFitness(fitness_settings, progress=progress)
    result = search(fitness, config, progress=progress).to_dict()
    result["settings"] = fitness_settings.to_dict()
    result["references"] = {
        a: fitness.allocation_fitness(a, **{h: prof[h] for h in _ALLOCATION_HYPER[a]}).to_dict()
        for a in prof["allocations"]
    }
    write_json_atomic(path, result)
    return result


def searched_graph(result: dict) -> str | None:
    """The best expression of a search, or None if every candidate was invalid."""
    best = result["best"]
    return best["expression"] if best.get("fitness") is not None else None


def search_history(result: dict) -> pd.DataFrame:
    """Per generation: best so far, best and median of the population (NaN: invalid), counts."""
    frame = pd.DataFrame(result["history"])
    for column in ("best", "generation_best", "median"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def search_candidates(result: dict) -> pd.DataFrame:
    """Every evaluated expression, best first: proxy fitness (NaN if invalid, with its reason), the
    generation it was born in, and the earlier expression whose densities it shares, if any."""
    frame = pd.DataFrame(result["candidates"])
    frame["fitness"] = pd.to_numeric(frame["fitness"], errors="coerce")
    columns = ["rank", "expression", "fitness", "generation", "shared_with", "reason", "seconds"]
    return frame[columns]


def proxy_check_picks(result: dict, count: int) -> list[dict]:
    """``count`` valid candidates with distinct densities, evenly spread over the proxy ranking, the
    best and the worst included (all of them when there are fewer)."""
    distinct = [c for c in result["candidates"] if c.get("fitness") is not None and not c.get("shared_with")]
    distinct.sort(key=lambda c: c["rank"])
    if len(distinct) <= count:
        return distinct
    if count <= 1:  # the best alone (a spread needs two ends)
        return distinct[: max(count, 0)]
    step = (len(distinct) - 1) / (count - 1)
    return [distinct[round(i * step)] for i in range(count)]


def dsa_proxy_check(prof: dict, result: dict, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """How well the search's proxy fitness ranks allocations: the picked candidates
    (``proxy_check_picks``) and the profile's allocations, each with its proxy fitness and its
    perplexity in a run with the table's settings (profile seed; cached like every run)."""
    method, s = prof["dsa_search"]["method"], prof["main_sparsity"]
    picks = proxy_check_picks(result, prof["dsa_search"]["proxy_check"])
    rows = []
    specs = [{"method": method, "sparsity": s, "allocation": "dsa", "dsa_graph": c["expression"]} for c in picks]
    for candidate, record in zip(picks, run_specs(prof, specs, results_dir)):
        rows.append(
            {
                "kind": "searched",
                "allocation": candidate["expression"],
                "proxy": candidate["fitness"],
                "proxy_rank": candidate["rank"],
                "perplexity": record["perplexity"]["perplexity"],
            }
        )
    references = [{"method": method, "sparsity": s, "allocation": a} for a in prof["allocations"]]
    for spec, record in zip(references, run_specs(prof, references, results_dir)):
        proxy = result["references"][spec["allocation"]]["fitness"]
        rows.append(
            {
                "kind": "reference",
                "allocation": ALLOCATION_NAMES[spec["allocation"]],
                "proxy": proxy,
                "proxy_rank": None,
                "perplexity": record["perplexity"]["perplexity"],
            }
        )
    return pd.DataFrame(rows)


def table_block_sparsity(records: list[dict], prof: dict, method: str) -> pd.DataFrame:
    """Per-block target sparsity (rows: blocks) of each allocation (columns) of ``method``'s main-table
    runs at the main sparsity on the profile's seed."""
    columns = {}
    for record in records:
        row = record_row(record)
        if (row["method"], row["sparsity"], row["seed"]) == (method, prof["main_sparsity"], prof["seed"]):
            if row["sparsity_type"] == "unstructured" and not row["perturb"]:
                columns.setdefault(row["allocation"], record["pruning"]["block_targets"])
    frame = pd.DataFrame(columns)
    frame.index.name = "block"
    return frame


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties): the Pearson correlation of the ranks."""
    x, y = pd.Series(list(x), dtype=float).rank(), pd.Series(list(y), dtype=float).rank()
    return float(x.corr(y))
