"""The experiment grid: every run a profile's notebooks need, as independent jobs through submitit.

    python -m dlp_lib.grid --profile paper --model meta-llama/Llama-2-7b-hf --dry-run
    python -m dlp_lib.grid --profile paper --model meta-llama/Llama-2-7b-hf --executor slurm \\
        --partition gpu --gpus 1 --time 240 --mem 64 --parallel 32
    python -m dlp_lib.grid --profile quick --executor local --workers 2

The jobs are the ones the notebooks ask for (the same spec functions of ``dlp_lib.experiments``), in
three phases, each started when the one before has finished:

1. the dense statistics of each calibration seed, one job per seed, so that no two jobs ever compute
   them at once (the jobs of phase 2 read them from ``$DLP_CACHE_DIR``; put it on the shared file
   system on a cluster);
2. every run whose setting is known (hyper-parameter runs that the statistics show infeasible are left
   out, as notebook 05 leaves them out) and DSA's allocation search;
3. the runs that need the search's expression: the DSA rows of the main table and the proxy check.

A job whose record (or statistics table, or search result) is already stored is skipped, so running
the grid again submits only what is missing or failed. Records are written atomically (a killed job
leaves none). Afterwards ``make render`` (notebooks with ``DLP_RECORDS_ONLY=1``) renders every notebook
from the records without computing anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import experiments as ex
from .cache import read_cache
from .cli import add_sparsegpt_arguments
from .config import ConfigError
from .results import config_key

log = logging.getLogger("dlp_lib.grid")  # also when run as python -m dlp_lib.grid (__main__)

PHASES = {1: "dense statistics", 2: "runs and DSA's search", 3: "runs that need the searched expression"}


# ------------------------------------------------------------------------------------------- the jobs
@dataclass
class GridJob:
    """One unit of work: ``kind`` is ``statistics`` (dense statistics of one calibration seed),
    ``search`` (DSA's search) or ``run`` (one record, ``spec`` being ``run_config``'s keywords under
    ``profile``). ``pending`` jobs cannot be set up yet (they wait for an earlier phase's output) and
    are only counted."""

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
    zs, rp = ex.zero_shot_profile(prof), ex.recovery_profile(prof)
    seen: set[str] = set()

    stats = read_cache(ex.dense_statistics_path(prof, None, results_dir), ex.load_dense_statistics, "dense statistics")
    hyper = ex.feasible_hyper_specs(stats, prof)[0] if stats is not None else ex.hyper_specs(prof)
    known = [(prof, ex.dense_spec(prof))]
    known += [(prof, s) for s in ex.seeded(prof, ex.main_specs(prof))]
    known += [(prof, s) for s in ex.float_sensitivity_specs(prof) + ex.sweep_specs(prof) + hyper + ex.nm_specs(prof)]
    known += [(zs, s) for s in ex.seeded(prof, ex.zero_shot_specs(prof))]
    known += [(rp, s) for s in ex.recovery_specs(prof)]
    runs = _run_jobs(known, 2, seen)
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
        count = len(prof["main_methods"]) * len(prof["seeds"]) + prof["dsa_search"]["proxy_check"] - 1
        label = "a run that needs the searched expression (DSA row or proxy check)"
        dsa_runs = [GridJob("run", 3, label, prof, None, pending=True) for _ in range(count)]

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
    return statistics + runs + [search] + dsa_runs


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
    else:
        _, record, _ = ex.run_spec(job.profile, job.spec, results_dir)
        headline = ex.headline(record)
    seconds = time.perf_counter() - start
    log.info("%s: %s (%.0f s)", job.label, headline, seconds)
    return {"label": job.label, "headline": headline, "seconds": seconds}


# ------------------------------------------------------------------------------------------ executing
@dataclass
class Outcome:
    job: GridJob
    state: str  # "done", "failed", "submitted" (not waited for), "cancelled"
    seconds: float | None = None
    log: str | None = None
    error: str | None = None
    job_id: str | None = None


def _short_error(exc: BaseException) -> str:
    """The last meaningful line of a job's error (submitit wraps the worker's traceback)."""
    if "has not produced any output" in str(exc):  # submitit's UncompletedJobError
        return "the job ended without a result (killed, cancelled, out of memory or out of time?)"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class Backend:
    """Submits jobs through a submitit executor and waits for them; at most ``slots`` run at once
    (a local pool), or all at once as one array (Slurm, whose array parallelism limits them)."""

    def __init__(self, executor, slots: int | None = None, per_job=None, threads: int | None = None):
        self.executor = executor
        self.slots = slots
        self.per_job = per_job  # slot index -> executor parameters (e.g. the GPU a local job gets)
        self.threads = threads
        self.poll_seconds = 0.5

    def submit_all(self, jobs: list[GridJob], results_dir: str) -> list:
        with self.executor.batch():
            handles = [self.executor.submit(run_job, job, results_dir, self.threads) for job in jobs]
        return handles

    def run(self, jobs: list[GridJob], results_dir: str, wait: bool = True, on_start=None) -> list[Outcome]:
        """Run ``jobs``; with ``wait=False`` (Slurm only) submit them and return. Ctrl-C cancels every
        submitted job that has not finished and re-raises."""
        results_dir = str(results_dir)
        started: dict[int, tuple[object, float]] = {}  # job index -> (handle, start time)
        outcomes: dict[int, Outcome] = {}
        try:
            if self.slots is None:
                handles = self.submit_all(jobs, results_dir)
                now = time.time()
                started = {i: (h, now) for i, h in enumerate(handles)}
                for i, h in enumerate(handles):
                    if on_start:
                        on_start(jobs[i], h)
                if not wait:
                    return [Outcome(j, "submitted", job_id=str(h.job_id)) for j, (h, _) in zip(jobs, started.values())]
            queue = [] if self.slots is None else list(range(len(jobs)))
            free = list(range(self.slots or 0))
            slot_of: dict[int, int] = {}
            while queue or len(outcomes) < len(started):
                while queue and self.slots is not None and free:
                    index, slot = queue.pop(0), free.pop(0)
                    if self.per_job is not None:
                        self.executor.update_parameters(**self.per_job(slot))
                    handle = self.executor.submit(run_job, jobs[index], results_dir, self.threads)
                    started[index], slot_of[index] = (handle, time.time()), slot
                    if on_start:
                        on_start(jobs[index], handle)
                for index, (handle, start) in started.items():
                    if index in outcomes or not handle.done():
                        continue
                    outcomes[index] = self._outcome(jobs[index], handle, time.time() - start)
                    outcome = outcomes[index]
                    more = f" ({outcome.error}; log {outcome.log})" if outcome.state == "failed" else ""
                    log.info("[%d/%d] %s in %.0f s: %s%s", len(outcomes), len(jobs), outcome.state,
                             outcome.seconds, jobs[index].label, more)  # fmt: skip
                    if index in slot_of:
                        free.append(slot_of.pop(index))
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            running = [h for i, (h, _) in started.items() if i not in outcomes]
            for handle in running:
                handle.cancel(check=False)
            log.warning("interrupted: cancelled %d submitted job(s); nothing of theirs is recorded", len(running))
            raise
        return [outcomes[i] for i in range(len(jobs))]

    @staticmethod
    def _outcome(job: GridJob, handle, seconds: float) -> Outcome:
        log_path = str(getattr(handle.paths, "stderr", "")) or None
        try:
            exc = handle.exception()
        except Exception as err:  # noqa: BLE001 - e.g. a result file that cannot be read
            exc = err
        if exc is None:
            return Outcome(job, "done", seconds, log_path, job_id=str(handle.job_id))
        return Outcome(job, "failed", seconds, log_path, _short_error(exc), str(handle.job_id))


def local_backend(folder: Path, workers: int, gpus: list[int], timeout_min: int, threads: int | None = None) -> Backend:
    """At most ``workers`` jobs at once on this machine; with ``gpus`` each job gets one of them
    (``CUDA_VISIBLE_DEVICES``), else each of the CPU workers gets ``threads`` (default: its share of the
    cores)."""
    import submitit

    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=timeout_min)
    if gpus:
        per_job = lambda slot: {"visible_gpus": (gpus[slot % len(gpus)],), "gpus_per_node": 1}  # noqa: E731
        return Backend(executor, slots=workers, per_job=per_job)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    return Backend(executor, slots=workers, threads=threads)


def slurm_backend(
    folder: Path,
    partition: str | None,
    gpus: int,
    timeout_min: int,
    mem_gb: float | None,
    cpus: int | None,
    parallel: int,
    account: str | None = None,
    setup: list[str] | None = None,
) -> Backend:
    """One Slurm array per phase (submitit writes and submits the sbatch script)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise ConfigError(f"no Slurm here ({err}); submit from a login node, or use --executor local") from err
    params = {"timeout_min": timeout_min, "gpus_per_node": gpus, "slurm_array_parallelism": parallel, "nodes": 1}
    params["name"] = "dlp-grid"
    params["tasks_per_node"] = 1
    if partition:
        params["slurm_partition"] = partition
    if mem_gb:
        params["mem_gb"] = mem_gb
    if cpus:
        params["cpus_per_task"] = cpus
    if account:
        params["slurm_account"] = account
    if setup:
        params["slurm_setup"] = setup
    executor.update_parameters(**params)
    return Backend(executor, slots=None)


# ------------------------------------------------------------------------------------------ the grid
@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0  # jobs whose output was already stored
    pending: int = 0  # jobs that wait for an earlier phase that did not finish
    stopped: str | None = None  # why a later phase was not started

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    def lines(self) -> list[str]:
        counts = {}
        for o in self.outcomes:
            counts[o.state] = counts.get(o.state, 0) + 1
        done = ", ".join(f"{n} {state}" for state, n in counts.items()) or "nothing to do"
        lines = [f"grid: {done}; {self.skipped} already stored" + (f"; {self.pending} waiting" if self.pending else "")]
        for o in self.failed:
            lines.append(f"  FAILED {o.job.label}: {o.error}\n         log: {o.log}")
        if self.stopped:
            lines.append(self.stopped)
        return lines


def run_grid(prof: dict, results_dir: str | os.PathLike, backend: Backend, wait: bool = True) -> Summary:
    """Run every missing job of ``prof``'s grid, phase after phase; stops before a phase whose inputs a
    failed job did not produce, and (``wait=False``) after submitting the first phase with work."""
    summary = Summary()
    results_dir = str(results_dir)
    for phase in PHASES:
        jobs = [j for j in plan(prof, results_dir) if j.phase == phase]
        summary.pending = sum(j.pending for j in jobs)
        todo = [j for j in jobs if not j.pending and not j.done(results_dir)]
        summary.skipped += len(jobs) - summary.pending - len(todo)
        if summary.pending:  # phase 3 before the search result exists: the search failed or was skipped
            summary.stopped = "the DSA rows and the proxy check wait for the DSA search's result; run the grid again"
            return summary
        if not todo:
            continue
        log.info("phase %d (%s): %d job(s) to run, %d stored", phase, PHASES[phase], len(todo), len(jobs) - len(todo))
        outcomes = backend.run(todo, results_dir, wait=wait)
        summary.outcomes += outcomes
        if not wait:
            summary.stopped = f"submitted phase {phase}; run the same command again when its jobs have finished"
            return summary
        failed = [o for o in outcomes if o.state == "failed"]
        if phase == 1 and failed:
            summary.stopped = "the dense statistics failed; no run was started (see the logs above)"
            return summary
    return summary


# ---------------------------------------------------------------------------------------- estimating
# GPU seconds on one H200 for the LLaMA-2-7B shape (bf16, 128 x 2048 calibration), from the bench/gpu.py
# run of 2026-12-04 (../shared/gpu-results/2026-12-04-h200/); bench/results/gpu-7b.json (make bench-gpu)
# replaces the pruning figures when present. Loading, evaluation, zero-shot and LoRA figures are derived
# from the measured forward (the floor) and token counts: estimates, not measurements.
GPU_7B_SECONDS = {
    "floor": 7.24,  # one forward of 128 x 2048 tokens through every block (measured, warm)
    "load": 30.0,  # reading 13.5 GB of bf16 weights from a local disk (estimate)
    "dense_statistics": 8.0,  # measured
    "magnitude": 2.0,  # a topk per linear (estimate: the measured 46.5 s was torch.kthvalue's)
    "wanda": 13.9,  # uniform 70% (measured; DLP's pruning costs the same)
    # SparseGPT uniform 70% with the CUDA defaults (estimate from the measured parts: tensor-core Hessians
    # 9.1 s, the Triton sweep's solver 37.9 s less the ~30 s its 8,900 selections took in torch.kthvalue,
    # propagation 6.4 s) and with the reference's fp32 Hessians (41.1 s of statistics instead of 9.1)
    "sparsegpt": 24.5,
    "sparsegpt fp32 Hessian": 56.5,
}
LLAMA2_7B_PARAMS = 6.74e9
BENCH_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
LLAMA_PARAMS = {7: 6.74e9, 8: 8.03e9, 13: 13.02e9, 30: 32.53e9, 65: 65.29e9, 70: 68.98e9}  # the names round
WIKITEXT2_TEST_TOKENS = 338_535  # LLaMA tokenizer
ZERO_SHOT_TOKENS = 6.5e6  # the 7 tasks' full splits, every choice scored (approximate)


def model_parameters(spec: str) -> float:
    """The parameter count of a model spec, read from its name (``Llama-2-13b-hf``: 13e9) or from a
    local directory's config.json; the embedded model is 135M."""
    if spec == "smollm2-135m":
        return 135e6
    path = Path(spec)
    if (path / "config.json").is_file():
        from .memory import Shapes

        shapes = Shapes.from_config(json.loads((path / "config.json").read_text()))
        return float(shapes.layers * shapes.block_params + shapes.outer_params)
    match = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", path.name)
    if match is None:
        raise ConfigError(f"cannot tell the size of {spec!r} from its name; pass --params (e.g. --params 7e9)")
    size = float(match.group(1))
    if match.group(2) in "mM":
        return size * 1e6
    return LLAMA_PARAMS.get(size, size * 1e9) if "llama" in path.name.lower() else size * 1e9


def gpu_seconds_7b(bench_dir: str | os.PathLike | None = None) -> tuple[dict, str]:
    """Per-step GPU seconds for the 7B shape and where they come from."""
    seconds, source = dict(GPU_7B_SECONDS), "an H200's measurements and estimates (dlp_lib.grid.GPU_7B_SECONDS)"
    path = Path(bench_dir or BENCH_RESULTS) / "gpu-7b.json"
    if path.is_file():
        bench = json.loads(path.read_text())
        seconds["floor"] = bench["floor_seconds"]
        seconds["dense_statistics"] = bench["dense_statistics_seconds"]
        for row in bench["runs"]:  # a run labelled by its method alone: uniform, unstructured, defaults
            if row["run"] in ("magnitude", "wanda", "sparsegpt", "sparsegpt fp32 Hessian"):
                seconds[row["run"]] = row["seconds"]
        source = f"{path} ({bench['hardware'].get('gpu', 'GPU')})"
    return seconds, source


def job_seconds(job: GridJob, prof: dict, scale: float, gpu: dict) -> tuple[str, float]:
    """``(kind, estimated seconds)`` of a job: CPU seconds of the quick profile's table on a CPU
    profile; GPU seconds of the 7B shape times ``scale`` (parameters / 6.74e9) on a GPU profile."""
    on_gpu = str(prof["device"]).startswith("cuda")
    if job.kind == "statistics":
        if not on_gpu:
            return "dense statistics", ex.QUICK_SECONDS["dense"]
        windows = prof["nsamples"] * prof["seqlen"] / (128 * 2048)
        return "dense statistics", (gpu["load"] + gpu["dense_statistics"] * windows) * scale
    if job.kind == "search":
        if not on_gpu:
            return "DSA search", ex.QUICK_SECONDS["dsa_candidate"] * ex.dsa_search_settings(prof)[1].evaluations()
        setting = prof["dsa_search"]
        calibration = setting["nsamples"] * setting["seqlen"] / (128 * 2048)
        candidate = gpu[setting["method"]] * calibration + gpu["floor"] * setting["windows"] * setting["seqlen"] / (
            128 * 2048
        )
        return "DSA search", (gpu["load"] + candidate * ex.dsa_search_settings(prof)[1].evaluations()) * scale
    if job.pending:
        config = ex.run_config(prof, method=prof["dsa_search"]["method"])
    else:
        config = job.config()
    method = "dense" if config.prune is None else config.prune.method
    kind = method
    if config.zero_shot_tasks is not None:
        kind += " + zero-shot"
    if config.recovery is not None:
        kind += " + LoRA"
    if not on_gpu:
        return kind, ex.run_seconds(config)
    forward_per_token = gpu["floor"] / (128 * 2048)
    calibration = config.nsamples * config.seqlen / (128 * 2048)
    if method == "sparsegpt" and config.prune.sparsegpt_hessian == "fp32":
        method = "sparsegpt fp32 Hessian"  # the reference's Hessians on CUDA cores
    total = gpu["load"] + (0.0 if config.prune is None else gpu[method] * calibration)
    eval_tokens = WIKITEXT2_TEST_TOKENS if config.eval_windows is None else config.eval_windows * config.seqlen
    if config.eval:
        total += forward_per_token * eval_tokens / 0.94  # perplexity ran at 94% of a plain forward
    if config.zero_shot_tasks is not None:
        tokens = ZERO_SHOT_TOKENS * len(config.zero_shot_tasks) / 7
        if config.zero_shot_limit is not None:
            tokens = min(tokens, config.zero_shot_limit * 4 * 200 * len(config.zero_shot_tasks))
        total += forward_per_token * tokens * 3  # short, padded sequences: a third of the throughput
    if config.recovery is not None:
        trained = config.recovery.steps * config.recovery.batch_tokens
        total += forward_per_token * trained * 3 + 2 * forward_per_token * eval_tokens  # forward + backward
    return kind, total * scale


def estimate(jobs: list[GridJob], prof: dict, params: float | None = None, bench_dir=None) -> dict:
    """Job counts and estimated device seconds per job kind (see ``job_seconds``)."""
    on_gpu = str(prof["device"]).startswith("cuda")
    gpu, source = gpu_seconds_7b(bench_dir)
    scale = (params or model_parameters(str(prof["model"]))) / LLAMA2_7B_PARAMS
    kinds: dict[str, dict] = {}
    for job in jobs:
        kind, seconds = job_seconds(job, prof, scale, gpu)
        row = kinds.setdefault(kind, {"jobs": 0, "seconds_each": seconds, "seconds": 0.0})
        row["jobs"] += 1
        row["seconds"] += seconds
    source = source if on_gpu else "experiments.QUICK_SECONDS (quick profile, 2-core CPU)"
    return {"kinds": kinds, "source": source, "scale": scale, "device": "GPU" if on_gpu else "CPU"}


def format_estimate(jobs: list[GridJob], prof: dict, results_dir, estimate_: dict) -> str:
    stored = sum(1 for j in jobs if j.done(results_dir))
    total = sum(r["seconds"] for r in estimate_["kinds"].values())
    lines = [
        f"profile {prof['name']}, model {prof['model']}: {len(jobs)} jobs ({stored} already stored) in 3 phases",
        "",
        f"| job kind | jobs | {estimate_['device']} seconds each (estimate) | {estimate_['device']} hours (estimate) |",
        "|---|---|---|---|",
    ]
    for kind, row in estimate_["kinds"].items():
        lines.append(f"| {kind} | {row['jobs']} | {row['seconds_each']:.0f} | {row['seconds'] / 3600:.2f} |")
    lines += [
        f"| **all** | **{len(jobs)}** | | **{total / 3600:.1f}** |",
        "",
        f"An estimate, not a measurement: per-step seconds from {estimate_['source']}" + _estimate_note(estimate_),
    ]
    return "\n".join(lines)


def _estimate_note(estimate_: dict) -> str:
    if estimate_["device"] == "GPU":
        return (
            f", scaled by parameter count (x{estimate_['scale']:.2f} of LLaMA-2-7B); loading, evaluation, zero-shot "
            "and LoRA seconds are derived from the measured forward and token counts. Phase-3 jobs are counted "
            "before the search decides them."
        )
    return " (the quick profile's run times: an upper bound for smoke). Phase-3 jobs are counted before the search."


def format_jobs(jobs: list[GridJob], results_dir) -> str:
    lines = []
    for phase, name in PHASES.items():
        these = [j for j in jobs if j.phase == phase]
        lines.append(f"phase {phase}: {name} ({len(these)} jobs)")
        for job in these:
            if not job.pending:
                lines.append(f"  [{'stored' if job.done(results_dir) else 'to run':>6}] {job.label}")
        waiting = sum(j.pending for j in these)
        if waiting:
            lines.append(f"  [ waits] {waiting} runs that need the searched expression (DSA rows, proxy check)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dlp_lib.grid",
        description="Run every missing run of a profile's notebooks as its own job through submitit "
        "(Slurm or local workers); the notebooks then render from the records (make render).",
    )
    p.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    p.add_argument("--model", default=None, help="model spec instead of the profile's (e.g. meta-llama/Llama-2-7b-hf)")
    add_sparsegpt_arguments(p, default=None)
    p.add_argument("--results", default="results", help="records directory (shared file system on a cluster)")
    p.add_argument("--logs", default=None, help="submitit's job folder (default: <results>/grid_logs)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and an estimate of device time; run nothing")
    p.add_argument(
        "--params", type=float, default=None, help="parameter count for the estimate (default: from the name)"
    )
    p.add_argument("--workers", type=int, default=None, help="local: jobs at once (default: one per visible GPU, or 1)")
    p.add_argument("--time", type=int, default=240, help="time limit per job in minutes (default 240)")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--account", default=None, help="slurm: account")
    p.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per job (default 1)")
    p.add_argument("--mem", type=float, default=None, help="slurm: memory per job in GB")
    p.add_argument("--cpus", type=int, default=None, help="slurm: CPUs per job")
    p.add_argument("--parallel", type=int, default=64, help="slurm: array parallelism (jobs at once, default 64)")
    p.add_argument("--setup", action="append", default=None, help="slurm: a shell line run before each job")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit the next phase and exit; run again later")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    ex.setup_logging()
    try:
        arithmetic = {"sparsegpt_sweep": args.sparsegpt_sweep, "sparsegpt_hessian": args.sparsegpt_hessian}
        prof = ex.profile(args.profile, model=args.model, **arithmetic)
        for name, value in (("--workers", args.workers), ("--time", args.time), ("--gpus", args.gpus)):
            if value is not None and value < (0 if name == "--gpus" else 1):
                raise ConfigError(f"{name} must be at least {0 if name == '--gpus' else 1}; got {value}")
        if args.params is not None and not (math.isfinite(args.params) and args.params > 0):
            raise ConfigError(f"--params is the model's parameter count (e.g. 7e9); got {args.params}")
        if Path(args.results).expanduser().exists() and not Path(args.results).expanduser().is_dir():
            raise ConfigError(f"--results {args.results} is a file; give the records' directory")
        if args.no_wait and args.executor != "slurm":
            raise ConfigError("--no-wait is for --executor slurm (local jobs end with this process)")
        jobs = plan(prof, args.results)
        if args.dry_run:
            print(format_jobs(jobs, args.results))
            print()
            print(format_estimate(jobs, prof, args.results, estimate(jobs, prof, args.params)))
            return 0
        from .preflight import check

        check(args.profile, args.model, (args.results,), **arithmetic)  # model and data reachable, results writable
        folder = Path(args.logs or Path(args.results) / "grid_logs")
        if args.executor == "slurm":
            backend = slurm_backend(
                folder,
                args.partition,
                args.gpus,
                args.time,
                args.mem,
                args.cpus,
                args.parallel,
                args.account,
                args.setup,
            )
        else:
            gpus = _visible_gpus() if str(prof["device"]).startswith("cuda") else []
            workers = args.workers or max(1, len(gpus))
            backend = local_backend(folder, workers, gpus, args.time)
    except ConfigError as err:
        print(f"python -m dlp_lib.grid: error: {err}", file=sys.stderr)
        return 2
    try:
        summary = run_grid(prof, args.results, backend, wait=not args.no_wait)
    except KeyboardInterrupt:
        print("python -m dlp_lib.grid: interrupted; the submitted jobs were cancelled", file=sys.stderr)
        return 130
    print("\n".join(summary.lines()))
    if summary.failed:
        return 1
    if not args.no_wait and not summary.stopped:
        settings = {"profile": args.profile, "model": args.model, **arithmetic}
        variables = " ".join(f"{name.upper()}={value}" for name, value in settings.items() if value)
        print(f"every record is stored; render the notebooks with: make render {variables}")
    return 0


def _visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        return []


if __name__ == "__main__":
    sys.exit(main())
