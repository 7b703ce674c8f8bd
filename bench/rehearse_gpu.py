"""The paper protocol's GPU slice, in minutes: what ``make reproduce PROFILE=paper`` would cost, measured.

    make rehearse-gpu                                    # on a GPU machine; ARGS="--budget 420"
    PYTHONPATH=. python bench/rehearse_gpu.py --budget 420 --out bench/results

1. The rehearsal's local data (``dlp_lib.rehearsal``: C4's shard, WikiText-2's test parquet, the zero-shot
   tasks' hub files), built unless ``$DLP_REHEARSAL_DIR`` holds them.
2. A random LLaMA-2-7B (the published shape, vocabulary 32000, fp16) built on the GPU with the rehearsal's
   tokenizer and saved as a hub checkpoint, so every job loads it from disk as a user's would.
3. The slice, each job through the grid's job runner (``dlp_lib.grid.run_job``) in this process: the dense
   statistics, one run per pruner x allocation at 128 x 2048 with WikiText-2 evaluation, zero-shot on a few
   examples per task, 2 LoRA steps of 128 x 1024 tokens, 2 generations of DSA's search and of EvoPress's (Wanda's
   database), then the DSA and EvoPress rows.
   Jobs are taken in that order while the budget lasts; ``rehearsal-gpu.json`` is rewritten after each.
4. Per-job seconds (from each record's own timings) and peak GPU memory, and from them a projection of
   the whole ``paper`` profile in GPU-hours per notebook, beside ``python -m dlp_lib.grid --profile paper
   --dry-run``'s estimate. A part not measured (out of budget) is projected from that estimate's figures.

Needs CUDA and the rehearsal's files (built here from the asset packages, or carried: ``$DLP_REHEARSAL_DIR``);
zero-shot needs lm-eval and datasets (a GPU image without them takes them as wheels, ``pip install
--no-deps``; without lm-eval the zero-shot jobs are left out and projected from the estimate). On a CPU it
runs the same slice on the rehearsal's tiny model when asked (``--device cpu --shape tiny --nsamples 2``):
the tests do that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dlp_lib import experiments as ex, grid, rehearsal
from dlp_lib.memory import llama2_config
from dlp_lib.results import config_key
from dlp_lib.zeroshot import TASKS

log = logging.getLogger("rehearse_gpu")

HERE = Path(__file__).resolve().parent
NOTEBOOKS = {
    "01": "01 dense baseline",
    "03": "03 main table (5 seeds, float sensitivity, DSA rows)",
    "04": "04 sparsity sweep",
    "05": "05 hyper-parameters",
    "06": "06 N:M sparsity",
    "07": "07 zero-shot",
    "08": "08 LoRA recovery",
    "09": "09 speed (its CPU measurement)",
    "10": "10 DSA search",
    "11": "11 EvoPress search",
    "12": "12 newer allocations (AlphaPruning, ATP, LSA; RIA)",
}
ALLOCATIONS = ("uniform", "owl", "dlp")
METHODS = ("magnitude", "wanda", "sparsegpt", "ria")


# ------------------------------------------------------------------------------------------ the model
def model_shape(name: str) -> dict:
    if name == "tiny":
        return dict(rehearsal.TINY_LLAMA)
    shape = {k: v for k, v in llama2_config(name).items() if k != "model_type"}
    return {**shape, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}


def build_model(directory: Path, shape: dict, device: str) -> float:
    """A random LLaMA of ``shape`` made on ``device`` in fp16 and saved with the rehearsal's tokenizer;
    returns the seconds it took."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(rehearsal.paths()["model"])  # the rehearsal's BPE tokenizer
    config = LlamaConfig(**{"vocab_size": len(tokenizer), **shape}, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.float16).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ the slice
def slice_profile(model_dir: Path, device: str, nsamples: int, lora_batch_tokens: int) -> dict:
    """The rehearsal profile cut to one seed and one run per pruner x allocation at ``nsamples`` x 2048."""
    paper = ex.profile("paper")
    return ex.profile(
        "rehearsal",
        model=str(model_dir),
        device=device,
        nsamples=nsamples,
        seeds=[0],
        sweep={},
        hyper_pruned={"method": "wanda"},
        nm={"sparsegpt": {"patterns": ["2:4"], "allocations": ["uniform"]}},
        float_sensitivity={**paper["float_sensitivity"], "cells": []},
        zero_shot={
            **ex.profile("rehearsal")["zero_shot"],
            "methods": ["wanda"],
            "allocations": ["uniform"],
            "limit": 4,
        },
        recovery={
            **ex.profile("rehearsal")["recovery"],
            "methods": ["wanda"],
            "allocations": ["uniform"],
            "settings": {
                **ex.profile("rehearsal")["recovery"]["settings"],
                "steps": 2,
                "batch_tokens": lora_batch_tokens,
                "micro_batch": 8,
                "heldout_windows": 2,
            },
        },
        dsa_search={
            **paper["dsa_search"],
            "population": 3,
            "generations": 2,
            "nsamples": min(nsamples, 32),
            "windows": 2,
            "proxy_check": 1,
        },  # fmt: skip
        # Wanda's database only: SparseGPT's holds every level of a 7B model in host memory (its cost is the
        # dry run's estimate)
        evopress_search={
            **paper["evopress_search"],
            "methods": ["wanda"],
            "windows": 2,
            "generations": 2,
            "offspring": 4,
            "survivors": [2, 1],
            "tokens": [2048, 4096],
            "proxy_check": 2,
        },
    )


def job_order(jobs: list[grid.GridJob]) -> list[grid.GridJob]:
    """Statistics; each pruner's Uniform run; Wanda's OWL and DLP; zero-shot; LoRA; the search; the
    other pruner x allocation runs (the ones the budget may leave out come last)."""

    def rank(job: grid.GridJob) -> tuple:
        if job.kind == "statistics":
            return (0,)
        if job.kind in ("search", "evopress", "atp"):  # ATP's beta choice: a run per beta, like a search
            return (5, job.kind)
        config = job.config()
        method = "dense" if config.prune is None else config.prune.method
        allocation = None if config.prune is None else config.prune.allocation
        if config.recovery is not None:
            return (4,)
        if config.zero_shot_tasks is not None:
            return (3, method != "dense")
        if method == "dense" or allocation == "uniform" and not config.prune.nm:
            return (1, method)
        if method == "wanda":
            return (2, allocation)
        return (6, method, allocation)

    return sorted(jobs, key=rank)


def describe_job(job: grid.GridJob) -> dict:
    if job.kind != "run":
        return {"kind": job.kind}
    config = job.config()
    prune = config.prune
    return {
        "kind": "run",
        "method": "dense" if prune is None else prune.method,
        "allocation": None if prune is None else prune.allocation,
        "pattern": None if prune is None or not prune.nm else f"{prune.nm[0]}:{prune.nm[1]}",
        "zero_shot": config.zero_shot_tasks is not None,
        "lora": config.recovery is not None,
    }


def measured_parts(job: grid.GridJob, results_dir: str, seconds: float) -> dict:
    """The parts of a finished job's time that the projection scales, from its stored output."""
    if job.kind == "statistics":
        return {"statistics": seconds}
    if job.kind == "search":
        result = ex.stored_dsa_search(job.profile, results_dir)
        evaluated = len(result.get("candidates", [])) + len(result.get("references", []))  # the same proxy each
        return {"search": seconds, "candidates": evaluated}
    if job.kind == "evopress":
        result = ex.stored_evopress(job.profile, job.spec["method"], results_dir)
        return {"evopress": seconds, "generations": len(result.get("history", []))}
    if job.kind == "atp":
        result = ex.stored_atp_choice(job.profile, job.spec["method"], results_dir)
        return {"atp": seconds, "betas": len(result.get("betas", []))}
    _, record = ex.stored_spec(job.profile, job.spec, results_dir)
    timings = record.get("timings", {})
    parts = {"load": timings.get("load_model"), "prune": timings.get("prune")}
    if record.get("perplexity"):
        parts["eval"] = record["perplexity"]["seconds"]
        parts["eval_tokens"] = record["perplexity"]["tokens"]
    if record.get("zero_shot"):
        tasks = record["zero_shot"]["tasks"]
        parts["zero_shot"] = timings.get("zero_shot")
        parts["zero_shot_examples"] = sum(t.get("n") or 0 for t in tasks.values())
    if record.get("recovery"):
        train = record["recovery"].get("seconds", {})
        parts["lora_train"] = train.get("train")
        parts["lora_steps"] = job.config().recovery.steps
    return parts


# ----------------------------------------------------------------------------------------- projection
def notebook_of(prof: dict) -> dict[str, str]:
    """Record key -> the notebook that first needs the run (in the grid's order)."""
    zs, rp = ex.zero_shot_profile(prof), ex.recovery_profile(prof)
    families = [
        ("01", [(prof, ex.dense_spec(prof))]),
        ("03", [(prof, s) for s in ex.seeded(prof, ex.main_specs(prof, recent=True))]),
        ("03", [(prof, s) for s in ex.float_sensitivity_specs(prof)]),
        ("12", [(prof, s) for s in ex.seeded(prof, ex.ria_specs(prof))]),
        ("04", [(prof, s) for s in ex.sweep_specs(prof)]),
        ("05", [(prof, s) for s in ex.hyper_specs(prof)]),
        ("06", [(prof, s) for s in ex.nm_specs(prof)]),
        ("07", [(zs, s) for s in ex.seeded(prof, ex.zero_shot_specs(prof))]),
        ("08", [(rp, s) for s in ex.recovery_specs(prof)]),
    ]
    owner = {}
    for notebook, pairs in families:
        for p, spec in pairs:
            owner.setdefault(config_key(ex.run_config(p, **spec).to_dict()), notebook)
    return owner


def _median(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def unit_costs(measured: list[dict]) -> dict:
    """Per-unit seconds from the measured jobs: loading, statistics, pruning per pruner, evaluation per
    token, zero-shot per example, a LoRA step, a search candidate."""
    runs = [m for m in measured if m["job"]["kind"] == "run"]
    parts = [m["parts"] for m in runs]
    units = {
        "load": _median(p.get("load") for p in parts),
        "statistics": _median(m["parts"]["statistics"] for m in measured if m["job"]["kind"] == "statistics"),
        "eval_per_token": _median(
            p["eval"] / p["eval_tokens"] for p in parts if p.get("eval") and p.get("eval_tokens")
        ),
        "zero_shot_per_example": _median(
            p["zero_shot"] / p["zero_shot_examples"]
            for p in parts
            if p.get("zero_shot") and p.get("zero_shot_examples")
        ),
        "lora_step": _median(p["lora_train"] / p["lora_steps"] for p in parts if p.get("lora_train")),
        "search_candidate": _median(
            m["parts"]["search"] / m["parts"]["candidates"]
            for m in measured
            if m["job"]["kind"] == "search" and m["parts"].get("candidates")
        ),
    }
    for method in METHODS:
        units[f"prune_{method}"] = _median(
            m["parts"].get("prune") for m in runs if m["job"].get("method") == method and not m["job"].get("pattern")
        )
    return units


def estimate_units(gpu: dict, scale: float) -> dict:
    """The same units from the grid's estimate figures (for what the budget left unmeasured)."""
    forward_per_token = gpu["floor"] / (128 * 2048)
    return {
        "load": gpu["load"] * scale,
        "statistics": (gpu["load"] + gpu["dense_statistics"]) * scale,
        "eval_per_token": forward_per_token / 0.94 * scale,
        "zero_shot_per_example": forward_per_token * 4 * 200 * 3 * scale,
        "lora_step": forward_per_token * 128 * 1024 * 3 * scale,
        "search_candidate": None,
        **{f"prune_{m}": gpu[m] * scale for m in METHODS},
    }


def project(paper: dict, units: dict, fallback: dict, nsamples: int) -> dict:
    """GPU seconds of each paper notebook (and dry-run estimate beside it), per job, from ``units``."""
    with tempfile.TemporaryDirectory() as empty:  # nothing stored: every job of the profile
        jobs = grid.plan(paper, results_dir=empty)
    gpu, _ = grid.gpu_seconds_7b()
    scale = grid.model_parameters(str(paper["model"])) / grid.LLAMA2_7B_PARAMS
    owner = notebook_of(paper)
    unit = {k: (units.get(k) if units.get(k) is not None else fallback.get(k)) for k in fallback}
    calibration = paper["nsamples"] / nsamples  # the slice pruned with `nsamples` windows of 2048
    rows: dict[str, dict] = {
        k: {"notebook": v, "jobs": 0, "projected": 0.0, "dry_run": 0.0} for k, v in NOTEBOOKS.items()
    }
    zero_shot_rows = sum(TASKS[t].rows for t in paper["zero_shot"]["tasks"])
    for job in jobs:
        _, dry = grid.job_seconds(job, paper, scale, gpu)
        if job.kind == "statistics":
            notebook, seconds = "01", unit["statistics"] * calibration
        elif job.kind == "evopress":
            notebook, seconds = "11", dry  # the cost model's: the slice runs 2 generations of Wanda's only
        elif job.kind == "speed":
            notebook, seconds = "09", dry  # notebook 09's measurement runs on the CPU: the cost model's
        elif job.kind == "atp":
            notebook, seconds = "03", dry  # a run per beta of ATP's grid: the cost model's
        elif job.kind == "search" or job.pending:
            notebook = "10"
            if job.kind == "search":
                evaluations = ex.dsa_search_settings(paper)[1].evaluations()
                candidate = unit["search_candidate"]
                seconds = unit["load"] + evaluations * candidate if candidate is not None else dry
            else:
                seconds = (
                    unit["load"]
                    + unit["prune_wanda"] * calibration
                    + unit["eval_per_token"] * grid.WIKITEXT2_TEST_TOKENS
                )
        else:
            config = job.config()
            notebook = owner.get(config_key(config.to_dict()), "03")
            seconds = unit["load"]
            if config.prune is not None:
                seconds += unit[f"prune_{config.prune.method}"] * calibration
            if config.eval:
                seconds += unit["eval_per_token"] * grid.WIKITEXT2_TEST_TOKENS
            if config.zero_shot_tasks is not None:
                seconds += unit["zero_shot_per_example"] * zero_shot_rows
            if config.recovery is not None:  # training, then the adapter's and the merged model's perplexity
                seconds += (
                    unit["lora_step"] * config.recovery.steps + 2 * unit["eval_per_token"] * grid.WIKITEXT2_TEST_TOKENS
                )
        row = rows[notebook]
        row["jobs"] += 1
        row["projected"] += seconds
        row["dry_run"] += dry
    for row in rows.values():
        row["projected_hours"] = row.pop("projected") / 3600
        row["dry_run_hours"] = row.pop("dry_run") / 3600
    return {"notebooks": list(rows.values()), "units": unit, "measured_units": units}


# ----------------------------------------------------------------------------------------------- main
def hardware(device: str) -> dict:
    info = {"device": device, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_markdown(path: Path, result: dict) -> None:
    lines = [
        "# The paper protocol's GPU slice (make rehearse-gpu)",
        "",
        f"{result['hardware'].get('gpu', result['hardware']['device'])}; model: random LLaMA "
        f"{result['shape']} in fp16 ({result['model_seconds']:.0f} s to build and save); "
        f"calibration {result['nsamples']} x 2048; budget {result['budget']:.0f} s, used {result['seconds']:.0f} s.",
        "",
        "| job | seconds | load | prune | peak GPU GiB |",
        "|---|---|---|---|---|",
    ]
    for m in result["jobs"]:
        peak = "" if m["peak_gib"] is None else f"{m['peak_gib']:.1f}"
        parts = m["parts"]
        load = "" if parts.get("load") is None else f"{parts['load']:.1f}"
        prune = "" if parts.get("prune") is None else f"{parts['prune']:.1f}"
        state = "" if m["state"] == "done" else f" ({m['state']}: {m.get('error', '')})"
        lines.append(f"| {m['label']}{state} | {m['seconds']:.1f} | {load} | {prune} | {peak} |")
    if result.get("missing"):
        lines += ["", f"Not run: {result['missing']}."]
    if result.get("skipped"):
        lines += [
            "",
            f"Left out for the budget: {len(result['skipped'])} jobs ({', '.join(result['skipped'][:6])}, ...).",
        ]
    lines += [
        "",
        "## The paper profile projected (GPU-hours on this GPU)",
        "",
        "| notebook | jobs | projected from this slice | `grid --dry-run` estimate |",
        "|---|---|---|---|",
    ]
    total = [0, 0.0, 0.0]
    for row in result["projection"]["notebooks"]:
        lines.append(
            f"| {row['notebook']} | {row['jobs']} | {row['projected_hours']:.2f} | {row['dry_run_hours']:.2f} |"
        )
        total = [total[0] + row["jobs"], total[1] + row["projected_hours"], total[2] + row["dry_run_hours"]]
    lines.append(f"| **all** | **{total[0]}** | **{total[1]:.1f}** | **{total[2]:.1f}** |")
    missing = [k for k, v in result["projection"]["measured_units"].items() if v is None]
    lines += [
        "",
        "Projected: each paper job's loading, pruning (scaled to 128 calibration windows), WikiText-2 evaluation "
        "(per token, 338,535 tokens), zero-shot (per example, whole splits), LoRA (per step, 234 steps) and search "
        "(per candidate) seconds as measured here."
        + (f" Not measured (the estimate's figures instead): {', '.join(missing)}." if missing else ""),
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (the tests' rehearsal of this script)")
    p.add_argument("--shape", default="7b", help="7b (default), 13b or tiny (the rehearsal's own tiny LLaMA)")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows of 2048 tokens (default 128)")
    p.add_argument(
        "--lora_batch_tokens", type=int, default=128 * 1024, help="tokens per LoRA step (default 128 x 1024)"
    )
    p.add_argument("--budget", type=float, default=420, help="seconds; no job starts after (default 420)")
    p.add_argument("--work", default=None, help="where the model and records go (default: a folder under /tmp)")
    p.add_argument("--out", default=str(HERE / "results"), help="where rehearsal-gpu.{json,md} go")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("rehearse_gpu: no CUDA device here; nothing to do (run on a GPU machine)")
        return 0
    ex.setup_logging()
    start = time.perf_counter()
    work = Path(args.work or f"/tmp/dlp-rehearse-gpu-{args.shape}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rehearsal.build_assets()
    model_dir = work / "model"
    model_seconds = 0.0
    if not (model_dir / "config.json").is_file():
        model_seconds = build_model(model_dir, model_shape(args.shape), args.device)
    prof = slice_profile(model_dir, args.device, args.nsamples, args.lora_batch_tokens)
    results_dir = str(work / "results")
    result = {
        "hardware": hardware(args.device),
        "shape": args.shape,
        "nsamples": args.nsamples,
        "budget": args.budget,
        "model_seconds": model_seconds,
        "jobs": [],
        "skipped": [],
    }

    def save() -> None:
        result["seconds"] = time.perf_counter() - start
        tmp = out / ".rehearsal-gpu.json.tmp"
        tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        os.replace(tmp, out / "rehearsal-gpu.json")

    zero_shot = importlib.util.find_spec("lm_eval") is not None
    if not zero_shot:
        result["missing"] = "lm-eval is not installed: no zero-shot jobs (their projection is the estimate's)"
        log.warning(result["missing"])
    for phase in (1, 2, 3):  # a later phase's jobs are known once the earlier phases are stored
        jobs = job_order([j for j in grid.plan(prof, results_dir) if j.phase == phase and not j.pending])
        for job in jobs:
            if job.done(results_dir) or (not zero_shot and job.kind == "run" and job.config().zero_shot_tasks):
                continue
            if time.perf_counter() - start > args.budget:
                result["skipped"].append(job.label)
                continue
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            entry = {"label": job.label, "job": describe_job(job), "state": "done"}
            try:
                grid.run_job(job, results_dir)
            except Exception as err:  # noqa: BLE001 - a failure is a finding: record it, go on
                entry.update(state="failed", error=f"{type(err).__name__}: {err}"[:300])
                log.exception("%s failed", job.label)
            seconds = time.perf_counter() - t
            peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
            entry.update(seconds=seconds, peak_gib=peak)
            entry["parts"] = measured_parts(job, results_dir, seconds) if entry["state"] == "done" else {}
            result["jobs"].append(entry)
            save()
    paper = ex.profile("paper")
    scale = grid.model_parameters(str(paper["model"])) / grid.LLAMA2_7B_PARAMS
    result["projection"] = project(
        paper, unit_costs(result["jobs"]), estimate_units(grid.gpu_seconds_7b()[0], scale), args.nsamples
    )
    save()
    write_markdown(out / "rehearsal-gpu.md", result)
    print((out / "rehearsal-gpu.md").read_text())
    return 1 if any(m["state"] != "done" for m in result["jobs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
