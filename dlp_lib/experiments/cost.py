"""The cost model: seconds per run and per search, from measured quick-profile figures or the GPU's."""

from __future__ import annotations

import logging

from .. import pipeline
from ..results import config_key
from .dsa import dsa_search_settings
from .evopress import evopress_settings
from .runs import run_config
from .specs import notebook_specs, other_seeds

log = logging.getLogger(__name__)

# rough seconds per run of the quick profile on a 2-core CPU, for planning only: an Intel Xeon (AVX-512,
# MKL), read from the timings of run records such as the committed ones in records/; slower CPUs (AVX2
# kernels only) take up to about twice as long: size the profile for them.
# "dense" is one perplexity evaluation; "zero_shot" replaces it in a run that evaluates zero-shot
# accuracy instead (7 tasks, limit 12); "lora_1k_tokens" is LoRA recovery per 1024 training tokens (a
# forward and backward pass; a recovery run also evaluates twice more); "speedup" is notebook 09's live
# measurement; "setup" is the virtual environment plus the notebooks' own time, set so that the quick
# profile's estimate comes near a measured fresh-clone run (bench/results/reproduce-quick-*.md)
QUICK_SECONDS = {
    "dense": 8,
    "magnitude": 9,
    "wanda": 12,
    "sparsegpt": 17,
    "ria": 12,  # Wanda's statistics, a whole-matrix threshold
    "lsa_statistics": 20,  # LSA's greedy errors of every linear, once per calibration seed
    # zero-shot: a fixed part (task files, lm-eval's set-up, the first batch) and each example of the seven
    # tasks (its `limit`): 13.2 s at 4, 29.9 s at 24, 53.3 s at 40 examples a task (batch 16; 8 and 4 were
    # slower), 120 s at 100; about 11% less since lm-eval gets logits only where continuations are read
    "zero_shot": 10,
    "zero_shot_example": 1.0,
    "lora_1k_tokens": 5.3,
    "dsa_candidate": 3,
    # EvoPress: a forward and KL per 1024 search tokens; building a pruner's database (loading, dense logits,
    # statistics and every level)
    "kl_1k_tokens": 1.75,
    "evopress_database": {"wanda": 25, "sparsegpt": 50},
    "speedup": 60,
    "setup": 260,
}


def planned_runs(prof: dict) -> list[pipeline.RunConfig]:
    """Every distinct run the notebooks may need (hyper-parameter runs that turn out infeasible are
    skipped at run time), in notebook order: 01-06, the zero-shot runs of 07, the recovery runs of 08."""
    runs, seen = [], set()
    for run_prof, spec in notebook_specs(prof):
        config = run_config(run_prof, **spec)
        key = config_key(config.to_dict())
        if key not in seen:
            seen.add(key)
            runs.append(config)
    return runs


def estimate_seconds(prof: dict, seconds: dict | None = None) -> float:
    """Rough wall time of all planned runs (default: quick-profile seconds per run on 2 CPU cores)."""
    seconds = seconds or QUICK_SECONDS
    total = float(seconds.get("setup", 0.0)) + float(seconds.get("speedup", 0.0))
    total += sum(run_seconds(config, seconds) for config in planned_runs(prof))
    total += dsa_search_seconds(prof, seconds) + evopress_seconds(prof, seconds) + atp_seconds(prof, seconds)
    lsa_seeds = {c.seed for c in planned_runs(prof) if c.prune is not None and c.prune.allocation == "lsa"}
    return total + seconds["lsa_statistics"] * len(lsa_seeds)


def atp_seconds(prof: dict, seconds: dict | None = None) -> float:
    """Rough wall time of ATP's beta choices (a run per beta of the grid, per pruner) and its rows."""
    from ..atp import atp_beta_grid

    seconds = seconds or QUICK_SECONDS
    if "atp" not in prof["recent"]["allocations"]:
        return 0.0
    betas = len(atp_beta_grid(30, prof["main_sparsity"], step=prof["atp_search"]["step"]))
    return sum(seconds[m] * (betas + len(other_seeds(prof))) for m in prof["recent"]["methods"])


def run_seconds(config: pipeline.RunConfig, seconds: dict | None = None) -> float:
    """Rough wall time of one run (default: quick-profile seconds per run on 2 CPU cores)."""
    seconds = seconds or QUICK_SECONDS
    pruning = 0.0 if config.prune is None else seconds[config.prune.method]
    if config.zero_shot_tasks is None:
        total = seconds["dense"] if config.prune is None else pruning
    else:  # no perplexity evaluation (~35 s of each pruned run's time)
        limit = 1000 if config.zero_shot_limit is None else config.zero_shot_limit  # whole splits: ~1000
        share = len(config.zero_shot_tasks) / 7
        total = max(pruning - seconds["dense"], 0.0) + seconds["zero_shot"]
        total += seconds.get("zero_shot_example", 0.0) * limit * share
    if config.recovery is not None:  # training, and the adapter's and the merged model's perplexity
        tokens = config.recovery.steps * config.recovery.batch_tokens
        total += seconds["lora_1k_tokens"] * tokens / 1024 + 2 * seconds["dense"]
    return total


def dsa_search_seconds(prof: dict, seconds: dict | None = None) -> float:
    """Rough wall time of the DSA search and the runs it adds: every candidate (an upper bound: some
    share densities and cost nothing), the DSA row of each main pruner on every seed, and the proxy check
    (its best candidate is the DSA row's run on the profile seed)."""
    seconds = seconds or QUICK_SECONDS
    setting = prof["dsa_search"]
    _, config = dsa_search_settings(prof)
    search = seconds["dsa_candidate"] * config.evaluations()
    rows = sum(seconds[m] for m in prof["main_methods"]) * len(other_seeds(prof))
    check = seconds[setting["method"]] * (setting["proxy_check"] - 1)
    return search + rows + check


def evopress_tokens(prof: dict, method: str) -> tuple[int, int]:
    """``(search tokens scored per generation, tokens of the final check)`` of ``prof``'s EvoPress search."""
    settings, config = evopress_settings(prof, method)
    candidates = [config.offspring, *config.survivors[:-1]]
    candidates[-1] += 1  # the parent joins the last stage
    per_generation = sum(c * t for c, t in zip(candidates, config.tokens))
    check = prof["evopress_search"]["proxy_check"] * settings.windows * settings.window_seqlen
    return per_generation, check


def evopress_search_seconds(prof: dict, method: str, seconds: dict | None = None) -> float:
    """Rough wall time of one EvoPress search (database, generations, final check) on the quick CPU figures."""
    seconds = seconds or QUICK_SECONDS
    per_generation, check = evopress_tokens(prof, method)
    tokens = prof["evopress_search"]["generations"] * per_generation + check
    return seconds["evopress_database"][method] + seconds["kl_1k_tokens"] * tokens / 1024


def evopress_seconds(prof: dict, seconds: dict | None = None) -> float:
    """Rough wall time of the EvoPress searches and the runs they add: each searched pruner's row on every
    seed and the check's runs along the search (its start and end are the Uniform and EvoPress rows)."""
    seconds = seconds or QUICK_SECONDS
    setting = prof["evopress_search"]
    total = 0.0
    for method in setting["methods"]:
        total += evopress_search_seconds(prof, method, seconds)
        total += seconds[method] * (len(other_seeds(prof)) + max(setting["proxy_check"] - 2, 0))
    return total


# ------------------------------------------------------------------------------------------ on a GPU
# GPU seconds on one H200 for the LLaMA-2-7B shape (bf16, 128 x 2048 calibration), from the bench/gpu.py
# run of 2026-12-04 (bench/results/h200-2026-12-04/gpu-7b*.json); bench/results/gpu-7b.json (make bench-gpu)
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
    "ria": 14.5,  # Wanda's statistics and one sort per matrix instead of per row (estimate, not measured)
}
WIKITEXT2_TEST_TOKENS = 338_535  # LLaMA tokenizer
ZERO_SHOT_TOKENS = 6.5e6  # the 7 tasks' full splits, every choice scored (approximate)
LLAMA2_7B_PARAMS = 6.74e9


def gpu_run_seconds(config: pipeline.RunConfig, gpu: dict, scale: float) -> float:
    """Rough GPU wall time of one run: ``gpu``'s per-step seconds of the LLaMA-2-7B shape (keys of
    ``GPU_7B_SECONDS``) times ``scale`` (the model's parameters / 6.74e9)."""
    method = "dense" if config.prune is None else config.prune.method
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
    return total * scale


def gpu_statistics_seconds(prof: dict, gpu: dict, scale: float) -> float:
    """Rough GPU wall time of one dense-statistics pass of ``prof``'s calibration."""
    windows = prof["nsamples"] * prof["seqlen"] / (128 * 2048)
    return (gpu["load"] + gpu["dense_statistics"] * windows) * scale


def gpu_search_seconds(prof: dict, gpu: dict, scale: float) -> float:
    """Rough GPU wall time of ``prof``'s DSA search (every candidate evaluated)."""
    setting = prof["dsa_search"]
    calibration = setting["nsamples"] * setting["seqlen"] / (128 * 2048)
    evaluation = setting["windows"] * setting["seqlen"] / (128 * 2048)
    candidate = gpu[setting["method"]] * calibration + gpu["floor"] * evaluation
    return (gpu["load"] + candidate * dsa_search_settings(prof)[1].evaluations()) * scale


def gpu_evopress_seconds(prof: dict, method: str, gpu: dict, scale: float) -> float:
    """Rough GPU wall time of ``prof``'s EvoPress search for ``method``: loading, the database (Wanda: one
    pruning's worth of scores and sorts; SparseGPT: one solve per level on the dense Hessians), the dense
    logits, every candidate's forward (about the floor per token, with the KL on top) and the final check."""
    settings, config = evopress_settings(prof, method)
    per_token = gpu["floor"] / (128 * 2048)
    calibration = settings.nsamples * settings.seqlen / (128 * 2048)
    levels = 2 * settings.num_levels + 1
    database = gpu["dense_statistics"] * calibration + gpu[method] * calibration * (
        levels if method == "sparsegpt" else 1
    )
    per_generation, check = evopress_tokens(prof, method)
    logits = settings.windows * settings.window_seqlen
    searched = config.generations * per_generation * 1.2  # the KL over the vocabulary: about a fifth more
    return (gpu["load"] + database + per_token * (logits + searched + check)) * scale
