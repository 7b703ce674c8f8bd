"""What a grid costs: seconds per job from the quick profile's CPU figures or the measured 7B GPU figures."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .. import experiments as ex
from ..config import ConfigError
from ..experiments.cost import (  # noqa: F401  (the GPU figures lived here before)
    GPU_7B_SECONDS,
    LLAMA2_7B_PARAMS,
    WIKITEXT2_TEST_TOKENS,
    ZERO_SHOT_TOKENS,
)
from .jobs import PHASES, GridJob

BENCH_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
LLAMA_PARAMS = {7: 6.74e9, 8: 8.03e9, 13: 13.02e9, 30: 32.53e9, 65: 65.29e9, 70: 68.98e9}  # the names round


def model_parameters(spec: str) -> float:
    """The parameter count of a model spec, read from its name (``Llama-2-13b-hf``: 13e9) or from a
    local directory's config.json; the embedded model is 135M."""
    if spec == "smollm2-135m":
        return 135e6
    path = Path(spec)
    if (path / "config.json").is_file():
        from ..memory import Shapes

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
    """``(kind, estimated seconds)`` of a job from the one cost model (``dlp_lib.experiments.cost``): the
    quick profile's CPU seconds on a CPU profile; GPU seconds of the 7B shape times ``scale`` (parameters /
    6.74e9) on a GPU profile."""
    on_gpu = str(prof["device"]).startswith("cuda")
    if job.kind == "statistics":
        seconds = ex.gpu_statistics_seconds(prof, gpu, scale) if on_gpu else ex.QUICK_SECONDS["dense"]
        return "dense statistics", seconds
    if job.kind == "search":
        if on_gpu:
            return "DSA search", ex.gpu_search_seconds(prof, gpu, scale)
        return "DSA search", ex.QUICK_SECONDS["dsa_candidate"] * ex.dsa_search_settings(prof)[1].evaluations()
    if job.kind == "evopress":
        method = job.spec["method"]
        if on_gpu:
            return "EvoPress search", ex.gpu_evopress_seconds(prof, method, gpu, scale)
        return "EvoPress search", ex.evopress_search_seconds(prof, method)
    if job.kind == "atp":  # one uniform-sized run per beta of the grid
        from ..atp import atp_beta_grid

        config = ex.run_config(prof, job.spec["method"], prof["main_sparsity"])
        each = ex.gpu_run_seconds(config, gpu, scale) if on_gpu else ex.run_seconds(config)
        # LLaMA-7B's 32 blocks; the embedded model's 30 give a grid as long or one beta shorter
        betas = len(atp_beta_grid(32, prof["main_sparsity"], step=prof["atp_search"]["step"]))
        return "ATP beta choice", each * betas
    if job.kind == "speed":  # on the CPU whatever the profile's device
        return "CPU speed", ex.QUICK_SECONDS["speedup"]
    config = ex.run_config(prof, method=prof["dsa_search"]["method"]) if job.pending else job.config()
    kind = "dense" if config.prune is None else config.prune.method
    if config.zero_shot_tasks is not None:
        kind += " + zero-shot"
    if config.recovery is not None:
        kind += " + LoRA"
    return kind, ex.gpu_run_seconds(config, gpu, scale) if on_gpu else ex.run_seconds(config)


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
        f"profile {prof['name']}, model {prof['model']}: {len(jobs)} jobs ({stored} already stored) "
        f"in {len(PHASES)} phases",
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
            why = "a search's result or ATP's beta (DSA, EvoPress and ATP rows, proxy checks)"
            lines.append(f"  [ waits] {waiting} runs that need {why}")
    return "\n".join(lines)
