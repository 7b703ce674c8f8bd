"""Running the jobs: submitit backends (local workers or Slurm), outcomes, the grid phase by phase."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError
from .jobs import PHASES, GridJob, plan, run_job

log = logging.getLogger(__name__)


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
