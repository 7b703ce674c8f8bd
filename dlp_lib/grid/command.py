"""``python -m dlp_lib.grid``: list, estimate (--dry-run) or run the grid of a profile."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .. import experiments as ex
from ..cli.flags import add_sparsegpt_arguments
from ..config import ConfigError
from .estimate import estimate, format_estimate, format_jobs
from .execute import local_backend, run_grid, slurm_backend
from .jobs import plan


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
        check_arguments(args)
        jobs = plan(prof, args.results)
        if args.dry_run:
            print(format_jobs(jobs, args.results))
            print()
            print(format_estimate(jobs, prof, args.results, estimate(jobs, prof, args.params)))
            return 0
        from ..preflight import check

        check(args.profile, args.model, (args.results,), **arithmetic)  # model and data reachable, results writable
        folder = logs_folder(args)
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
        print(f"python -m dlp_lib.grid: error: {' '.join(str(err).split())}", file=sys.stderr)
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


def logs_folder(args) -> Path:
    """Submitit's job folder: ``--logs`` or ``<results>/grid_logs``."""
    return Path(args.logs or Path(args.results) / "grid_logs").expanduser()


def check_arguments(args) -> None:
    """Every number and place the grid will use, checked before planning (the dry run too); raises
    ConfigError."""
    from ..cache import check_writable

    at_least = {"--workers": 1, "--time": 1, "--gpus": 0, "--parallel": 1, "--cpus": 1}
    for name, minimum in at_least.items():
        value = getattr(args, name[2:])
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}; got {value}")
    for name, value in (("--params", args.params), ("--mem", args.mem)):
        if value is not None and not (math.isfinite(value) and value > 0):
            example = "the model's parameter count (e.g. 7e9)" if name == "--params" else "memory per job in GB"
            raise ConfigError(f"{name} is {example}: a positive number; got {value}")
    if args.no_wait and args.executor != "slurm":
        raise ConfigError("--no-wait is for --executor slurm (local jobs end with this process)")
    results = Path(args.results).expanduser()
    if results.exists() and not results.is_dir():
        raise ConfigError(f"--results {args.results} is a file; give the records' directory")
    check_writable(results / ".probe", "the records (--results)")
    logs = logs_folder(args)
    if logs.exists() and not logs.is_dir():
        raise ConfigError(f"the job folder {logs} is a file; give --logs a directory")
    check_writable(logs / ".probe", "submitit's job folder (--logs)")


def _visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        return []
