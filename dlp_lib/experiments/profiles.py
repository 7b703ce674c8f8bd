"""Experiment profiles (smoke, quick, paper, rehearsal): every setting of a notebook run, and ``profile()``."""

from __future__ import annotations

import copy
import dataclasses
import logging

from .. import pipeline, rehearsal
from ..config import (
    DSA_README_GRAPH,
    ConfigError,
    PruneConfig,
)
from ..zeroshot import PAPER_TASKS

log = logging.getLogger(__name__)

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(pipeline.RunConfig) if f.name not in ("prune", "recovery"))
HYPER_FIELDS = (
    "owl_lambda", "owl_m", "dlp_alpha", "dlp_statistic", "dsa_graph", "dsa_lambda",
    "alpha_epsilon", "alpha_estimator", "lsa_beta", "lsa_group", "lsa_fraction", "ria_a",
)  # fmt: skip
ARITHMETIC_FIELDS = ("sparsegpt_sweep", "sparsegpt_hessian")  # SparseGPT's arithmetic (PruneConfig fields)
_FLOAT_FIELDS = (
    "owl_lambda",
    "owl_m",
    "dlp_alpha",
    "dsa_lambda",
    "alpha_epsilon",
    "lsa_fraction",
    "ria_a",
    "atp_beta",
)  # 5 and 5.0 must hash alike
REHEARSAL_DIR = "{rehearsal}"  # in a profile's paths: the rehearsal's assets (dlp_lib.rehearsal.assets_dir)

# ------------------------------------------------------------------------------------------- profiles
# The defaults are the `quick` profile: sized so that `make reproduce`, every notebook and 2 calibration
# seeds of the claims included, fits an hour of a 2-core CPU (about 40 GFLOP/s per core): 8 x 256
# calibration tokens and 16 x 256 evaluation tokens per run, grids cut to what the claims need.
_DEFAULTS = dict(
    # RunConfig fields
    model="smollm2-135m",
    calibration="wiki-extracts",
    eval="wiki-extracts",
    nsamples=8,
    seqlen=256,
    seed=0,
    eval_windows=16,
    batch_size=8,
    eval_batch_size=4,
    device="cpu",
    dtype="auto",
    trust_remote_code=False,
    # the papers' hyper-parameters (OWL/DLP/DSA READMEs)
    owl_lambda=0.08,
    owl_m=5.0,
    dlp_alpha=0.15,
    dlp_statistic="mean",
    dsa_graph=DSA_README_GRAPH,
    dsa_lambda=0.08,
    # the newer allocations' and RIA's settings (their authors'; ATP's beta is chosen by `atp_search`).
    # AlphaPruning: 0.2, as the authors' LLaMA-7B Wanda and SparseGPT scripts; their default 0.3 gives block
    # 10 of the embedded model a sparsity of 1.02 at 70% (refused; the authors would prune it whole)
    alpha_epsilon=0.2,
    alpha_estimator="xmin_peak",
    lsa_beta=None,  # the authors' table by sparsity: 0.15 at 70%
    lsa_group=128,
    lsa_fraction=0.5,
    ria_a=0.5,
    # SparseGPT's arithmetic (config.SPARSEGPT_SWEEPS / SPARSEGPT_HESSIANS): "auto" is the reference's on a
    # CPU; on CUDA the Triton sweep (the same weights) and Hessians from the half-precision activations
    sparsegpt_sweep="auto",
    sparsegpt_hessian="auto",
    # experiment grids
    main_sparsity=0.7,
    main_methods=["magnitude", "wanda", "sparsegpt"],
    allocations=["uniform", "owl", "dlp"],
    # AlphaPruning, ATP and LSA rows of the main table (and notebook 12), for these pruners; RIA beside Wanda
    # (notebook 12) with these allocations
    recent={
        "methods": ["wanda", "sparsegpt"],
        "allocations": ["alphapruning", "atp", "lsa"],
        "ria": ["uniform", "dlp"],
    },
    # ATP's beta per pruner (dlp_lib.atp_beta): the authors' grid from `step` up to the steepest legal beta,
    # each pruned on the profile's seed and scored on `heldout` windows of the calibration side drawn with
    # another seed (never the evaluation windows; "on": "eval" would be the authors' way). Quick: every third
    # beta of the authors' 0.002 grid (0.006, 0.012, 0.018) on 8 windows (5 betas on 16 cost 2.5 more minutes)
    atp_search={"heldout": 8, "step": 0.006, "on": "heldout"},
    # single runs on the profile's seed; the 70% points are the main table's (with their seed range).
    # Uniform, OWL and DLP at 50-80% for both pruners, as the OWL and DLP papers plot them
    sweep={"wanda": [0.5, 0.6, 0.7, 0.8], "sparsegpt": [0.5, 0.6, 0.7, 0.8]},
    sweep_allocations=["uniform", "owl", "dlp"],
    # allocation-only sensitivity: densities from the cached dense statistics, no pruning
    hyper_grid={
        "dlp_alpha": [0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
        "owl_lambda": [0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.2],
        "owl_m": [2.0, 3.0, 5.0, 7.0, 10.0],
    },
    # pruned runs for the sensitivity figure, four values of each (the defaults are shared with the main table;
    # α = 0.2 does not fit the embedded model at 70%: some block's density would leave (0, 1])
    hyper_pruned={
        "method": "wanda",
        "dlp_alpha": [0.025, 0.05, 0.1, 0.15],
        "owl_lambda": [0.04, 0.08, 0.12, 0.16],
        "owl_m": [3.0, 5.0, 7.0, 10.0],
    },
    # both patterns the notebook is titled for (paper: every pruner, and OWL too)
    nm={"wanda": {"patterns": ["2:4", "4:8"], "allocations": ["uniform", "dlp"]}},
    # calibration seeds of the claims (main table, zero-shot): each calibration-dependent cell is run
    # once per seed and reported as mean and min-max; runs that read no calibration data (dense,
    # magnitude with uniform allocation) are deterministic and run once. Quick runs two for Uniform, OWL
    # and DLP (paper: five for every row), to keep the hour; the verdicts rest on the reproduction tolerance
    # below, whose float-level spread is as wide as three calibration draws' (docs/performance.md)
    seeds=[0, 1],
    # the searched and newer rows (DSA, EvoPress, AlphaPruning, ATP, LSA) and RIA: the profile's seed only in
    # quick (3.5 minutes of the hour), compared with the rows above by the reproduction tolerance
    other_seeds=[0],
    # float sensitivity (the reproduction tolerance): these cells re-run on seed 0 with the pruning
    # statistics multiplied by (1 + scale * N(0, 1)), `draws` times: the spread a re-run on another
    # machine (other BLAS kernels, other rounding) should expect
    float_sensitivity={
        # SparseGPT's DLP cell rather than its Uniform one: DLP prunes some blocks beyond 70%, which makes its
        # runs the noisier (σ of ln ppl 0.078 against Uniform's 0.053 at 4bb8fd2); a cell takes the largest
        # tolerance measured for its pruner and sparsity, so the largest is the one to measure (Wanda's DLP
        # cell, ±7.2% against Uniform's ±31% at 3ccf30c, and SparseGPT's Uniform cell, ±25% against DLP's
        # ±39% at 4bb8fd2, never set one and left quick)
        "cells": [
            {"method": "wanda", "allocation": "uniform", "sparsity": 0.7},
            {"method": "sparsegpt", "allocation": "dlp", "sparsity": 0.7},
            {"method": "wanda", "allocation": "uniform", "sparsity": 0.8},
        ],
        # four: the standard deviation of 3 runs (2 draws) comes out under half the true one one time in
        # five, of 5 runs one in 11 (of 7: one in 25, but 10 more runs);
        # SparseGPT's ±12% from 3 runs missed another CPU's moves (tests/fixtures/reproduction/amd_epyc_cfe313b)
        "draws": 4,
        # a larger ε samples no wider: 6 draws each at 1e-5, 1e-4 and 1e-3 gave SparseGPT-Uniform 70% a σ
        # of ln ppl of 0.043, 0.044 and 0.026 and Wanda's 0.078, 0.054 and 0.045 (1e-6: 0.048, 0.053)
        "scale": 1e-6,
    },
    # zero-shot accuracy (notebook 07): dense and each pruner x allocation at the main sparsity, on the
    # first `limit` examples of each task (None: whole splits); perplexity is not re-evaluated there.
    # 100 examples a task put the standard error of the seven tasks' mean accuracy near 2 points; that costs
    # about 1.5 minutes a model on 2 cores, so quick runs the profile's seed only (`seeds`: the calibration
    # seeds of these runs, default the profile's `seeds`)
    zero_shot={
        "tasks": list(PAPER_TASKS),
        "limit": 100,
        "seeds": [0],
        "batch_size": 16,
        "add_bos_token": False,  # the papers' code passed no special tokens
        "source": "local",  # the shipped task data (dlp_lib.zeroshot); "hub" downloads lm-eval's
        "methods": ["wanda"],
        "allocations": ["uniform", "dlp"],  # paper: every allocation
    },
    # LoRA recovery (notebook 08): each pruner x allocation at the main sparsity on the profile's seed,
    # then a LoRA adapter trained on the calibration side of the data (dlp_lib.recovery.RecoveryConfig
    # fields in "settings"). Quick: 8 steps of 4 x 256 tokens at a 40x larger learning rate than the
    # papers' (their 234 steps of 128 x 1024 tokens: bench/results/h200-2026-12-04/lora-cuda.json projects them).
    recovery={
        "methods": ["wanda"],
        "allocations": ["uniform", "dlp"],  # paper: OWL too (here 2.7 min of a 2-core AVX2 CPU)
        "zero_shot": False,  # also measure zero-shot accuracy after recovery (profile's zero_shot settings)
        "settings": {
            "steps": 8,
            "lr": 4e-3,
            "batch_tokens": 1024,
            "seqlen": 256,
            "micro_batch": 4,
            "warmup_steps": 2,
            "heldout_windows": 4,
            "eval_every": 4,
        },
    },
    # what sparse weights buy at inference (notebook 09), measured live on this machine's CPU: y = x W^T at
    # the first `linears` LLaMA-2 linear shapes of `shapes` (or explicit [label, out, in] triples), dense
    # against 70% and 2:4 weights in each of `formats` (CSC, far slower than dense in bench/results/speedup-cpu.md,
    # is left to make bench-speedup); end to end, the profile's model pruned by magnitude with its linears in CSR
    # (prefill `prompt_tokens`, then `decode_tokens` steps)
    speedup={
        "shapes": "7b",
        "linears": 2,
        "formats": ["csr", "coo"],
        "tokens": [1, 16, 128],
        "repeats": 2,
        "end_to_end": True,
        "prompt_tokens": 128,
        "decode_tokens": 8,
    },
    # DSA's allocation search (dlp_lib.search; run by notebook 03 for its DSA rows, shown by notebook 10):
    # evolution over allocation expressions with `method` at the main sparsity; a candidate's fitness is
    # its perplexity on `windows` search windows of the calibration side after pruning with `nsamples` x
    # `seqlen` calibration windows (a proxy of the table's runs; seconds per candidate in
    # tables/dsa_search_candidates.csv). `proxy_check` candidates are then also run with the table's settings,
    # to measure how well the proxy ranks them.
    # Other SearchConfig fields (elite, tournament, crossover, mutation, max_pre, max_post) may be set.
    # Quick: 8 x 5 (10 x 6 and a check of 8 cost 1.5 more minutes; both found DLP-like expressions)
    dsa_search={
        "method": "wanda",
        "population": 8,
        "generations": 5,
        "seed": 0,
        "nsamples": 4,
        "seqlen": 128,
        "windows": 8,
        "proxy_check": 5,
    },
    # EvoPress's search (dlp_lib.search.evopress; run by notebook 03 for its EvoPress rows, shown by notebook
    # 11), once per pruner in `methods`: a level database of every linear (EvoPress's unit) at `num_levels`
    # levels each way of the main sparsity, from the table's calibration windows; KL from the dense model on
    # `windows` calibration-side windows of `window_seqlen` tokens; `offspring` children per generation,
    # `survivors` kept by each selection stage of `tokens` tokens (EvoPress: 64 offspring, 8 -> 2 -> 1 on 2k ->
    # 16k -> 64k tokens, 400 generations). Quick: seconds per generation in tables/evopress_search.csv.
    # `proxy_check` allocations along the search (the Uniform start and the last included) are scored on every
    # window and run with the table's settings. Quick: Wanda's search only, 16 generations (SparseGPT's search
    # and 40 generations each cost 7 more minutes, while the fitness still wandered by +-0.3 nats from one
    # generation to the next at 40); the paper profile searches for both pruners.
    evopress_search={
        "methods": ["wanda"],
        "granularity": "linear",
        "num_levels": 4,
        "windows": 8,
        "window_seqlen": 128,
        "generations": 16,
        "offspring": 8,
        "survivors": [2, 1],
        "tokens": [128, 512],
        "search_seed": 0,
        "proxy_check": 4,
    },
)

PROFILES: dict[str, dict] = {
    # CI: every notebook end to end in a few minutes on 2 CPU cores: dense, Wanda x 3 allocations at 70%
    # on 2 seeds, 2 float-sensitivity draws, magnitude 2:4 uniform and DLP, zero-shot on 2 examples per
    # task; the other grids reuse them. Even a tiny window
    # count leaves a pruned run's sorting of 106M weights, and SparseGPT's column sweep costs minutes.
    "smoke": dict(
        _DEFAULTS,
        nsamples=2,
        seqlen=64,
        eval_windows=2,
        batch_size=2,
        eval_batch_size=2,
        main_methods=["wanda"],
        recent={"methods": ["wanda"], "allocations": ["alphapruning", "atp", "lsa"], "ria": ["uniform"]},
        atp_search={"heldout": 2, "step": 0.01, "on": "heldout"},
        lsa_group=16,  # a 16-column group: the greedy pass costs an eighth of the authors' 128
        sweep={"wanda": [0.7]},
        hyper_grid={"dlp_alpha": [0.0, 0.05, 0.15, 0.25], "owl_lambda": [0.0, 0.08, 0.16], "owl_m": [3.0, 5.0, 7.0]},
        hyper_pruned={"method": "wanda", "dlp_alpha": [0.15], "owl_lambda": [0.08], "owl_m": [5.0]},
        nm={"magnitude": {"patterns": ["2:4"], "allocations": ["uniform", "dlp"]}},
        zero_shot={**_DEFAULTS["zero_shot"], "limit": 2, "seeds": [0, 1]},
        recovery={
            **_DEFAULTS["recovery"],
            "allocations": ["uniform", "dlp"],
            "settings": {
                "steps": 2,
                "lr": 4e-3,
                "batch_tokens": 128,
                "seqlen": 64,
                "micro_batch": 2,
                "warmup_steps": 1,
                "heldout_windows": 2,
                "eval_every": 1,
            },
        },
        dsa_search={
            "method": "wanda",
            "population": 4,
            "generations": 2,
            "seed": 0,
            "nsamples": 2,
            "seqlen": 64,
            "windows": 2,
            "proxy_check": 3,
        },
        speedup={
            "shapes": [["256 x 256", 256, 256]],
            "linears": 1,
            "formats": ["csr", "csc", "coo"],
            "tokens": [1, 16],
            "repeats": 2,
            "end_to_end": True,
            "prompt_tokens": 16,
            "decode_tokens": 2,
        },
        evopress_search={
            "methods": ["wanda"],
            "granularity": "linear",
            "num_levels": 2,
            "windows": 2,
            "window_seqlen": 64,
            "generations": 2,
            "offspring": 2,
            "survivors": [2, 1],
            "tokens": [64, 128],
            "search_seed": 0,
            "proxy_check": 2,
        },
        seeds=[0, 1],
        other_seeds=[0, 1],
        float_sensitivity={
            "cells": [{"method": "wanda", "allocation": "uniform", "sparsity": 0.7}],
            "draws": 2,
            "scale": 1e-6,
        },
    ),
    # default of `make reproduce`: the embedded model and data, under an hour on a 2-core CPU
    "quick": dict(_DEFAULTS),
    # the papers' protocol: 128 x 2048 C4 calibration windows, seed 0, WikiText-2 test perplexity, GPU
    "paper": dict(
        _DEFAULTS,
        model="meta-llama/Llama-2-7b-hf",
        calibration="c4",
        eval="wikitext2",
        nsamples=128,
        seqlen=2048,
        eval_windows=None,
        device="cuda",
        sweep={m: [0.5, 0.6, 0.7, 0.8] for m in ("magnitude", "wanda", "sparsegpt")},
        sweep_allocations=["uniform", "owl", "dlp"],
        hyper_pruned={
            "method": "wanda",
            "dlp_alpha": [0.05, 0.1, 0.15, 0.2, 0.25],
            "owl_lambda": [0.02, 0.04, 0.08, 0.12, 0.16],
            "owl_m": [3.0, 5.0, 7.0, 10.0],
        },
        nm={
            m: {"patterns": ["2:4", "4:8"], "allocations": ["uniform", "owl", "dlp"]}
            for m in ("magnitude", "wanda", "sparsegpt")
        },
        zero_shot={
            **_DEFAULTS["zero_shot"],
            "limit": None,
            "seeds": [0, 1, 2, 3, 4],
            "source": "hub",
            "methods": ["wanda", "sparsegpt"],
            "allocations": ["uniform", "owl", "dlp"],
        },
        # Wanda's lora_ft recipe: RecoveryConfig's defaults (234 steps of 128 x 1024 C4 tokens, lr 1e-4)
        recovery={
            "methods": ["wanda", "sparsegpt"],
            "allocations": ["uniform", "owl", "dlp"],
            "zero_shot": True,
            "settings": {"seqlen": 1024, "data": "c4"},
        },
        # the live part stays on the CPU (a 7B model's end to end there is bench/speedup.py's on CUDA)
        speedup={
            "shapes": "7b",
            "linears": 3,
            "formats": ["csr", "csc", "coo"],
            "tokens": [1, 16, 128, 512],
            "repeats": 5,
            "end_to_end": False,
            "prompt_tokens": 128,
            "decode_tokens": 16,
        },
        # DSA's own scale is population 100 x 2000 iterations; here 20 x 15 (~4 GPU-hours on LLaMA-2-7B)
        dsa_search={
            "method": "wanda",
            "population": 20,
            "generations": 15,
            "seed": 0,
            "nsamples": 32,
            "seqlen": 2048,
            "windows": 16,
            "proxy_check": 10,
        },
        # EvoPress's own scale is 400 generations of 64 offspring on 8192-token windows, its SparseGPT database
        # at 8 levels each way; here 150 x 32 on 2048-token windows and 3 levels each way (LLaMA-2-7B's fp16
        # SparseGPT database: 7 levels x 13.5 GB in host memory)
        evopress_search={
            "methods": ["wanda", "sparsegpt"],
            "granularity": "linear",
            "num_levels": 3,
            "windows": 32,
            "window_seqlen": 2048,
            "generations": 150,
            "offspring": 32,
            "survivors": [4, 1],
            "tokens": [4096, 32768],
            "search_seed": 0,
            "proxy_check": 6,
        },
        seeds=[0, 1, 2, 3, 4],
        other_seeds=[0, 1, 2, 3, 4],
        atp_search={"heldout": 16, "step": 0.002, "on": "heldout"},  # the authors' grid
        float_sensitivity={
            "cells": [
                {"method": m, "allocation": a, "sparsity": s}
                for m in ("wanda", "sparsegpt")
                for a, s in (("uniform", 0.7), ("dlp", 0.7), ("uniform", 0.8))
            ],
            "draws": 5,
            "scale": 1e-6,
        },
    ),
}

# The paper protocol rehearsed offline (dlp_lib.rehearsal builds what it reads): the `paper` profile with
# every list kept (pruners, allocations, sparsities, N:M patterns, seeds, tasks, recovery, search,
# float-sensitivity cells) and its loaders' local forms (C4's shard, WikiText-2's test parquet, the zero-shot
# tasks' hub files); only counts are cut (windows, examples, steps, generations, draws, repeats). On a CPU
# with the tiny random LLaMA the assets include, every notebook takes a few minutes; the numbers say nothing.
_PAPER = PROFILES["paper"]
PROFILES["rehearsal"] = dict(
    _PAPER,
    model=f"{REHEARSAL_DIR}/{rehearsal.MODEL_DIR}",
    calibration=f"c4:{REHEARSAL_DIR}/{rehearsal.C4_FILE}",
    eval=f"wikitext2:{REHEARSAL_DIR}/{rehearsal.WIKITEXT2_FILE}",
    nsamples=2,
    eval_batch_size=1,
    device="cpu",  # the GPU rehearsal (bench/rehearse_gpu.py) sets "cuda"
    zero_shot={**_PAPER["zero_shot"], "limit": 2, "source": f"hub:{REHEARSAL_DIR}/{rehearsal.ZERO_SHOT_DIR}"},
    recovery={
        **_PAPER["recovery"],
        "settings": {
            **_PAPER["recovery"]["settings"],
            "data": f"c4:{REHEARSAL_DIR}/{rehearsal.C4_FILE}",
            "steps": 2,
            "batch_tokens": 2 * 1024,
            "micro_batch": 2,
            "warmup_steps": 1,
            "heldout_windows": 1,
            "eval_every": 1,
        },
    },
    speedup={**_PAPER["speedup"], "linears": 1, "repeats": 1, "tokens": [1, 16]},
    dsa_search={
        **_PAPER["dsa_search"],
        "population": 4,
        "generations": 2,
        "nsamples": 2,
        "windows": 1,
        "proxy_check": 2,
    },
    evopress_search={
        **_PAPER["evopress_search"],
        "windows": 2,
        "generations": 2,
        "offspring": 4,
        "survivors": [2, 1],
        "tokens": [2048, 4096],
        "proxy_check": 2,
    },
    float_sensitivity={**_PAPER["float_sensitivity"], "draws": 2},
    recent={**_PAPER["recent"], "methods": ["wanda"], "ria": ["uniform"]},
    atp_search={**_PAPER["atp_search"], "heldout": 2, "step": 0.05},  # 6 blocks at 70%: betas 0.05 and 0.1
)


# the profile settings a search shares with the runs it stands for: the model, the calibration source and
# seed, the device and SparseGPT's arithmetic (DSA's FitnessSettings and EvoPress's settings take them alike)
SEARCH_RUN_FIELDS = ("model", "calibration", "seed", "batch_size", "device", "dtype", "trust_remote_code")


def search_run_settings(prof: dict) -> dict:
    """``prof``'s values of SEARCH_RUN_FIELDS and ARITHMETIC_FIELDS, as a search's settings take them."""
    return {name: prof[name] for name in SEARCH_RUN_FIELDS + ARITHMETIC_FIELDS}


def _fill_assets_dir(value, root: str):
    """``value`` with REHEARSAL_DIR in its strings replaced by ``root`` (profiles hold nested dicts and lists)."""
    if isinstance(value, str):
        return value.replace(REHEARSAL_DIR, root)
    if isinstance(value, dict):
        return {k: _fill_assets_dir(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_assets_dir(v, root) for v in value]
    return value


def profile(name: str, **overrides) -> dict:
    """A copy of experiment profile ``name`` (``smoke``, ``quick``, ``paper``, ``rehearsal``) with
    ``overrides`` applied; ``{rehearsal}`` in its paths is the rehearsal's assets directory.

    Overrides whose value is None are ignored, so a notebook's ``model=None`` parameter means "the
    profile's model". Unknown keys are an error (a typo would otherwise be silently ignored).
    """
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}")
    prof = copy.deepcopy(PROFILES[name])
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in prof:
            raise ConfigError(f"unknown profile setting {key!r}; known: {', '.join(sorted(prof))}")
        prof[key] = value
    PruneConfig(**{field: prof[field] for field in ARITHMETIC_FIELDS})  # an unknown choice fails here, not in a run
    prof = _fill_assets_dir(prof, str(rehearsal.assets_dir()))
    prof["name"] = name
    return prof
