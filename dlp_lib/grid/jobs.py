"""The grid's jobs: the runs, statistics, searches and measurements the notebooks need, in phases; one job run."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from .. import experiments as ex
from ..cache import read_cache
from ..results import config_key

log = logging.getLogger(__name__)

PHASES = {
    1: "dense statistics",
    2: "runs, DSA's and EvoPress's searches, ATP's beta choices",
    3: "runs that need a search's result or ATP's beta",
    4: "notebook 09's CPU speed measurement, alone so that nothing runs beside it",
}


# ------------------------------------------------------------------------------------------- the jobs
@dataclass
class GridJob:
    """One unit of work: ``kind`` is ``statistics`` (dense statistics of one calibration seed),
    ``search`` (DSA's search), ``evopress`` (EvoPress's search for ``spec["method"]``), ``atp`` (ATP's beta
    for ``spec["method"]``), ``speed``
    (notebook 09's CPU measurements) or ``run`` (one record, ``spec`` being ``run_config``'s keywords
    under ``profile``). ``pending`` jobs cannot be set up yet (they wait for an earlier phase's output)
    and are only counted."""

    kind: str
    phase: int
    label: str
    profile: dict = field(repr=False)
    spec: dict | None = None
    pending: bool = False

    def done(self, results_dir: str | os.PathLike) -> bool:
        """Whether the job's output is stored (a record, a statistics table with its norms, a search)."""
        if self.pending:
            return False
        if self.kind == "statistics":
            return ex.stored_norms_cache(self.profile, results_dir) is not None
        if self.kind == "search":
            return ex.stored_dsa_search(self.profile, results_dir) is not None
        if self.kind == "evopress":
            return ex.stored_evopress(self.profile, self.spec["method"], results_dir) is not None
        if self.kind == "atp":
            return ex.stored_atp_choice(self.profile, self.spec["method"], results_dir) is not None
        if self.kind == "speed":
            return ex.stored_live_speed(self.profile, results_dir) is not None
        return ex.stored_spec(self.profile, self.spec, results_dir)[1] is not None

    def config(self):
        return ex.run_config(self.profile, **self.spec) if self.kind == "run" else None


def _run_jobs(pairs: list[tuple[dict, dict]], phase: int, seen: set[str]) -> list[GridJob]:
    """A run job for each (profile, spec) pair whose configuration is not in ``seen`` yet."""
    jobs = []
    for prof, spec in pairs:
        config = ex.run_config(prof, **spec)
        key = config_key(config.to_dict())
        if key not in seen:
            seen.add(key)
            jobs.append(GridJob("run", phase, ex.run_label(config) + _evaluation(config), prof, spec))
    return jobs


def _evaluation(config) -> str:
    if config.zero_shot_tasks is not None:
        return " · zero-shot"
    return ""


def plan(prof: dict, results_dir: str | os.PathLike = "results") -> list[GridJob]:
    """Every job of ``prof``'s grid in phase order, as far as it can be known now: hyper-parameter runs
    are filtered for feasibility once the statistics are stored (all of them before), and the runs of
    phase 3 are ``pending`` placeholders until the search result is stored."""
    seen: set[str] = set()

    stats = read_cache(ex.dense_statistics_path(prof, None, results_dir), ex.load_dense_statistics, "dense statistics")
    hyper = ex.feasible_hyper_specs(stats, prof)[0] if stats is not None else ex.hyper_specs(prof)
    runs = _run_jobs(ex.notebook_specs(prof, hyper), 2, seen)
    search = GridJob(
        "search", 2, f"DSA search ({ex.dsa_search_settings(prof)[1].evaluations()} candidates at most)", prof
    )

    result = ex.stored_dsa_search(prof, results_dir)
    if result is not None:
        graph = ex.searched_graph(result)
        later = [(prof, s) for s in ex.seeded(prof, ex.main_specs(prof, dsa_graph=graph))] if graph else []
        method, s = prof["dsa_search"]["method"], prof["main_sparsity"]
        picks = ex.proxy_check_picks(result, prof["dsa_search"]["proxy_check"])
        later += [
            (prof, {"method": method, "sparsity": s, "allocation": "dsa", "dsa_graph": c["expression"]}) for c in picks
        ]
        dsa_runs = _run_jobs(later, 3, seen)
    else:  # the DSA rows (each main pruner on each seed) and the proxy check's candidates
        count = len(prof["main_methods"]) * len(ex.other_seeds(prof)) + prof["dsa_search"]["proxy_check"] - 1
        label = "a run that needs the searched expression (DSA row or proxy check)"
        dsa_runs = [GridJob("run", 3, label, prof, None, pending=True) for _ in range(count)]

    evopress = [
        GridJob("evopress", 2, f"EvoPress search for {m}", prof, {"method": m})
        for m in prof["evopress_search"]["methods"]
    ]
    evopress_runs = []
    for job in evopress:
        method, s = job.spec["method"], prof["main_sparsity"]
        result = ex.stored_evopress(prof, method, results_dir)
        if result is not None:
            path = str(ex.evopress_path(prof, method, results_dir))
            later = [(prof, spec) for spec in ex.seeded(prof, ex.main_specs(prof, [method], evopress={method: path}))]
            later += [(prof, spec) for spec in ex.evopress_check_specs(prof, method, result, results_dir)]
            evopress_runs += _run_jobs(later, 3, seen)
        else:
            label = "a run that needs the searched allocation (EvoPress row)"
            count = len(ex.other_seeds(prof)) + max(prof["evopress_search"]["proxy_check"] - 2, 0)
            evopress_runs += [GridJob("run", 3, label, prof, None, pending=True) for _ in range(count)]

    atp = [
        GridJob("atp", 2, f"ATP beta for {m} (held-out text)", prof, {"method": m})
        for m in prof["recent"]["methods"]
        if "atp" in prof["recent"]["allocations"]
    ]
    atp_runs = []
    for job in atp:
        method = job.spec["method"]
        choice = ex.stored_atp_choice(prof, method, results_dir)
        if choice is not None:
            later = ex.seeded(prof, ex.recent_specs(prof, method, {method: choice["best"]}))
            atp_runs += _run_jobs([(prof, spec) for spec in later], 3, seen)
        else:
            label = "a run that needs ATP's chosen beta (ATP row)"
            atp_runs += [GridJob("run", 3, label, prof, None, pending=True) for _ in ex.other_seeds(prof)]

    # one statistics job per calibration seed a run needs the dense norms of (and the profile's seed,
    # whose table notebooks 01, 02 and 05 show); DSA rows use the same seeds as the main table
    seeds = {prof["seed"]}
    for job in runs:
        config = job.config()
        if config.prune is not None and config.prune.needs_dense_statistics:
            seeds.add(config.seed)
    statistics = [
        GridJob("statistics", 1, f"dense statistics, calibration seed {seed}", {**prof, "seed": seed})
        for seed in sorted(seeds)
    ]
    speed = GridJob("speed", 4, "CPU speed of sparse products and of the model (notebook 09)", prof)
    return statistics + runs + [search] + evopress + atp + dsa_runs + evopress_runs + atp_runs + [speed]


def run_job(job: GridJob, results_dir: str, threads: int | None = None) -> dict:
    """Do one job (in a submitit worker): compute and store its output. Returns a short summary."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    ex.setup_logging()
    start = time.perf_counter()
    log.info("started: %s", job.label)
    if job.kind == "statistics":
        refresh = ex.stored_norms_cache(job.profile, results_dir) is None  # e.g. a new $DLP_CACHE_DIR
        ex.dense_statistics(job.profile, results_dir=results_dir, refresh=refresh)
        headline = "stored"
    elif job.kind == "search":
        headline = f"best {ex.searched_graph(ex.dsa_search(job.profile, results_dir))}"
    elif job.kind == "evopress":
        headline = f"KL {ex.evopress(job.profile, job.spec['method'], results_dir)['fitness']:.4g}"
    elif job.kind == "atp":
        headline = f"beta {ex.atp_choice(job.profile, job.spec['method'], results_dir)['best']:g}"
    elif job.kind == "speed":
        headline = f"measured on {ex.live_speed(job.profile, results_dir)['machine']}"
    else:
        _, record, _ = ex.run_spec(job.profile, job.spec, results_dir)
        headline = ex.headline(record)
    seconds = time.perf_counter() - start
    log.info("%s: %s (%.0f s)", job.label, headline, seconds)
    return {"label": job.label, "headline": headline, "seconds": seconds}
