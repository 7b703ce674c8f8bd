"""The cost model: seconds per run and per search, from measured quick-profile figures or the GPU's."""

from __future__ import annotations

import logging

from .. import pipeline
from .dsa import dsa_search_settings
from .runs import run_config
from .specs import (
    _unique,
    dense_spec,
    float_sensitivity_specs,
    hyper_specs,
    main_specs,
    nm_specs,
    recovery_profile,
    recovery_specs,
    seeded,
    sweep_specs,
    zero_shot_profile,
    zero_shot_specs,
)

log = logging.getLogger(__name__)

# rough seconds per run of the quick profile on a 2-core CPU, for planning only: an Intel Xeon (AVX-512,
# MKL), from the records of a fresh-clone `make reproduce` (2026-12-03); an AMD EPYC with AVX-512 was
# about 1.25x slower, one with AVX2 kernels only 1.9x (the slowest seen: size the profile for it).
# "dense" is one perplexity evaluation; "zero_shot" replaces it in a run that evaluates zero-shot
# accuracy instead (7 tasks, limit 12); "lora_1k_tokens" is LoRA recovery per 1024 training tokens (a
# forward and backward pass; a recovery run also evaluates twice more); "speedup" is notebook 09's live
# measurement; "setup" is the virtual environment plus the notebooks' own time, set so that the
# estimate of that run's profile equals its 34 min 17 s
QUICK_SECONDS = {
    "dense": 8,
    "magnitude": 9,
    "wanda": 12,
    "sparsegpt": 17,
    "zero_shot": 23,
    "lora_1k_tokens": 5.3,
    "dsa_candidate": 3,
    "speedup": 60,
    "setup": 260,
}


def planned_runs(prof: dict) -> list[pipeline.RunConfig]:
    """Every distinct run the notebooks may need (hyper-parameter runs that turn out infeasible are
    skipped at run time), in notebook order: 01-06, the zero-shot runs of 07, the recovery runs of 08."""
    specs = [dense_spec(prof)] + seeded(prof, main_specs(prof)) + float_sensitivity_specs(prof)
    specs += sweep_specs(prof) + hyper_specs(prof) + nm_specs(prof)
    runs = [run_config(prof, **spec) for spec in _unique(prof, specs)]
    zs = zero_shot_profile(prof)
    runs += [run_config(zs, **spec) for spec in seeded(prof, zero_shot_specs(prof))]
    return runs + [run_config(recovery_profile(prof), **spec) for spec in recovery_specs(prof)]


def estimate_seconds(prof: dict, seconds: dict | None = None) -> float:
    """Rough wall time of all planned runs (default: quick-profile seconds per run on 2 CPU cores)."""
    seconds = seconds or QUICK_SECONDS
    total = float(seconds.get("setup", 0.0)) + float(seconds.get("speedup", 0.0))
    total += sum(run_seconds(config, seconds) for config in planned_runs(prof))
    return total + dsa_search_seconds(prof, seconds)


def run_seconds(config: pipeline.RunConfig, seconds: dict | None = None) -> float:
    """Rough wall time of one run (default: quick-profile seconds per run on 2 CPU cores)."""
    seconds = seconds or QUICK_SECONDS
    pruning = 0.0 if config.prune is None else seconds[config.prune.method]
    if config.zero_shot_tasks is None:
        total = seconds["dense"] if config.prune is None else pruning
    else:  # no perplexity evaluation (~35 s of each pruned run's time)
        total = max(pruning - seconds["dense"], 0.0) + seconds["zero_shot"]
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
    rows = sum(seconds[m] for m in prof["main_methods"]) * len(prof["seeds"])
    check = seconds[setting["method"]] * (setting["proxy_check"] - 1)
    return search + rows + check
