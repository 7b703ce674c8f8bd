"""Experiment profiles, run specs, cached runs and dense-statistics analyses for the numbered notebooks.

The notebooks in ``notebooks/`` stay thin: a parameters cell (``profile``, ``model``, output folders),
then calls into this module, :mod:`dlp_lib.reports` (tables) and :mod:`dlp_lib.plots` (figures):

    profile(name) ──► run specs (one per table cell) ──► cached_run: a result record per configuration
    ──► records_frame (pandas) ──► reports.write_table (CSV, Markdown, LaTeX) and plots.plot_*

``cached_run`` keys every record by a hash of the full run configuration, so a later notebook (or an
interrupted ``make reproduce``) reuses what an earlier one computed, and allocation-only analyses
(``dense_statistics``) reuse the dense statistics cached by the pipeline: trying another allocator or
hyper-parameter needs no forward pass.

Example::

    from dlp_lib import experiments as ex, reports
    prof = ex.profile("quick")
    records = ex.run_specs(prof, ex.main_specs(prof), results_dir="results")
    numbers, display, bold = reports.main_table(ex.records_frame(records), prof)  # numbers, strings, bold mask
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import heap, pipeline, rehearsal
from .allocation import DIRECTION, allocate, dlp_unimportance, dsa_value, largest_width, owl_outlier_ratio
from .cache import read_cache, stable_hash, write_json_atomic
from .config import (
    DSA_README_GRAPH,
    REFERENCE_HESSIAN,
    ConfigError,
    PruneConfig,
    hessian_for_device,
    parse_sparsity_type,
)
from .recovery import RecoveryConfig
from .results import config_key, load_record, record_path, save_record
from .search import FitnessSettings, ProxyFitness, SearchConfig, search
from .zeroshot import PAPER_TASKS

log = logging.getLogger(__name__)

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(pipeline.RunConfig) if f.name not in ("prune", "recovery"))
HYPER_FIELDS = ("owl_lambda", "owl_m", "dlp_alpha", "dlp_statistic", "dsa_graph", "dsa_lambda")
ARITHMETIC_FIELDS = ("sparsegpt_sweep", "sparsegpt_hessian")  # SparseGPT's arithmetic (PruneConfig fields)
_FLOAT_FIELDS = ("owl_lambda", "owl_m", "dlp_alpha", "dsa_lambda")  # 5 and 5.0 must hash alike
REHEARSAL_DIR = "{rehearsal}"  # in a profile's paths: the rehearsal's assets (dlp_lib.rehearsal.assets_dir)

# ------------------------------------------------------------------------------------------- profiles
# The defaults are the `quick` profile: sized so that `make reproduce`, every notebook and 3 calibration
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
    # SparseGPT's arithmetic (config.SPARSEGPT_SWEEPS / SPARSEGPT_HESSIANS): "auto" is the reference's on a
    # CPU; on CUDA the Triton sweep (the same weights) and Hessians from the half-precision activations
    sparsegpt_sweep="auto",
    sparsegpt_hessian="auto",
    # experiment grids
    main_sparsity=0.7,
    main_methods=["magnitude", "wanda", "sparsegpt"],
    allocations=["uniform", "owl", "dlp"],
    # single runs on the profile's seed; the 70% points are the main table's (with their seed range)
    sweep={"wanda": [0.6, 0.7, 0.8], "sparsegpt": [0.5, 0.6, 0.7, 0.8]},
    # the sweep's allocations: Uniform against DLP (OWL's curve costs 2.5 min of a 2-core AVX2 CPU here;
    # the paper profile sweeps all of `allocations`)
    sweep_allocations=["uniform", "dlp"],
    # allocation-only sensitivity: densities from the cached dense statistics, no pruning
    hyper_grid={
        "dlp_alpha": [0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
        "owl_lambda": [0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.2],
        "owl_m": [2.0, 3.0, 5.0, 7.0, 10.0],
    },
    # pruned runs for the sensitivity figure (the defaults are shared with the main table)
    hyper_pruned={"method": "wanda", "dlp_alpha": [0.05, 0.15, 0.2], "owl_lambda": [0.08], "owl_m": [5.0]},
    nm={"wanda": {"patterns": ["2:4"], "allocations": ["uniform", "dlp"]}},  # paper: every pruner, 2:4 and 4:8
    # calibration seeds of the claims (main table, zero-shot): each calibration-dependent cell is run
    # once per seed and reported as mean and min-max; runs that read no calibration data (dense,
    # magnitude with uniform allocation) are deterministic and run once
    seeds=[0, 1, 2],
    # float sensitivity (the reproduction tolerance): these cells re-run on seed 0 with the pruning
    # statistics multiplied by (1 + scale * N(0, 1)), `draws` times: the spread a re-run on another
    # machine (other BLAS kernels, other rounding) should expect
    float_sensitivity={
        # DLP too: it prunes some blocks beyond 70%, which makes SparseGPT's runs noisier than Uniform's
        # (σ of ln ppl 0.07 against 0.04 on an Intel Xeon); a cell takes the largest tolerance measured
        # for its pruner and sparsity, so OWL and DSA rows get the larger of the two
        "cells": [
            {"method": "wanda", "allocation": "uniform", "sparsity": 0.7},
            {"method": "wanda", "allocation": "dlp", "sparsity": 0.7},
            {"method": "sparsegpt", "allocation": "uniform", "sparsity": 0.7},
            {"method": "sparsegpt", "allocation": "dlp", "sparsity": 0.7},
            {"method": "wanda", "allocation": "uniform", "sparsity": 0.8},
        ],
        # four: the standard deviation of 3 runs (2 draws) comes out under half the true one one time in
        # five, of 5 runs one in 11 (of 7: one in 25, but 10 more runs: 4.5 min of a 2-core AVX2 CPU);
        # SparseGPT's ±12% from 3 runs missed an Intel CPU's x0.80-x1.23
        "draws": 4,
        # a larger ε samples no wider: 6 draws each at 1e-5, 1e-4 and 1e-3 gave SparseGPT-Uniform 70% a σ
        # of ln ppl of 0.043, 0.044 and 0.026 and Wanda's 0.078, 0.054 and 0.045 (1e-6: 0.048, 0.053)
        "scale": 1e-6,
    },
    # zero-shot accuracy (notebook 07): dense and each pruner x allocation at the main sparsity, on the
    # first `limit` examples of each task (None: whole splits); perplexity is not re-evaluated there
    zero_shot={
        "tasks": list(PAPER_TASKS),
        "limit": 12,
        "batch_size": 16,
        "add_bos_token": False,  # the papers' code passed no special tokens
        "source": "local",  # the shipped task data (dlp_lib.zeroshot); "hub" downloads lm-eval's
        "methods": ["wanda"],
        # Uniform against DLP: 12 examples per task pin an OWL row down too little for its 2.7 min of a
        # 2-core AVX2 CPU (paper: every allocation)
        "allocations": ["uniform", "dlp"],
    },
    # LoRA recovery (notebook 08): each pruner x allocation at the main sparsity on the profile's seed,
    # then a LoRA adapter trained on the calibration side of the data (dlp_lib.recovery.RecoveryConfig
    # fields in "settings"). Quick: 12 steps of 4 x 256 tokens (~100 s of a 2-core CPU) at a 40x larger
    # learning rate than the papers' (their 234 steps of 128 x 1024 tokens take ~12 GPU-hours on LLaMA-7B).
    recovery={
        "methods": ["wanda"],
        "allocations": ["uniform", "dlp"],  # paper: OWL too (here 2.7 min of a 2-core AVX2 CPU)
        "zero_shot": False,  # also measure zero-shot accuracy after recovery (profile's zero_shot settings)
        "settings": {
            "steps": 12,
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
    # against 70% and 2:4 weights in each of `formats` (CSC, 50-300x slower than dense here, is left to
    # make bench-speedup); end to end, the profile's model pruned by magnitude with its linears in CSR
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
    # `seqlen` calibration windows (a proxy of the table's runs, ~6 s a candidate here). `proxy_check`
    # candidates are then also run with the table's settings, to measure how well the proxy ranks them.
    # Other SearchConfig fields (elite, tournament, crossover, mutation, max_pre, max_post) may be set.
    dsa_search={
        "method": "wanda",
        "population": 10,
        "generations": 6,
        "seed": 0,
        "nsamples": 4,
        "seqlen": 128,
        "windows": 8,
        "proxy_check": 8,
    },
)

PROFILES: dict[str, dict] = {
    # CI: every notebook end to end in a few minutes on 2 CPU cores: dense, Wanda x 3 allocations at 70%
    # on 2 seeds, 2 float-sensitivity draws, magnitude 2:4 uniform and DLP, zero-shot on 2 examples per
    # task; the other grids reuse them. Even a tiny window
    # count leaves ~20-60 s per pruned run (sorting 106M weights), and SparseGPT's column sweep costs minutes.
    "smoke": dict(
        _DEFAULTS,
        nsamples=2,
        seqlen=64,
        eval_windows=2,
        batch_size=2,
        eval_batch_size=2,
        main_methods=["wanda"],
        sweep={"wanda": [0.7]},
        hyper_grid={"dlp_alpha": [0.0, 0.05, 0.15, 0.25], "owl_lambda": [0.0, 0.08, 0.16], "owl_m": [3.0, 5.0, 7.0]},
        hyper_pruned={"method": "wanda", "dlp_alpha": [0.15], "owl_lambda": [0.08], "owl_m": [5.0]},
        nm={"magnitude": {"patterns": ["2:4"], "allocations": ["uniform", "dlp"]}},
        zero_shot={**_DEFAULTS["zero_shot"], "limit": 2},
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
        seeds=[0, 1],
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
        seeds=[0, 1, 2, 3, 4],
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
    float_sensitivity={**_PAPER["float_sensitivity"], "draws": 2},
)


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


# --------------------------------------------------------------------------------- labels and naming
METHOD_NAMES = {"dense": "Dense", "magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT"}
ALLOCATION_NAMES = {"none": "–", "uniform": "Uniform", "owl": "OWL", "dlp": "DLP", "dsa": "DSA"}
# the main table's DSA row is the expression our search found (not DSA's published one)
TABLE_NAMES = {**ALLOCATION_NAMES, "dsa": "DSA (searched)"}
ALLOCATION_COLORS = {"uniform": "#7f7f7f", "owl": "#1f77b4", "dlp": "#d62728", "dsa": "#2ca02c"}
HYPER_NAMES = {"dlp_alpha": "DLP α", "owl_lambda": "OWL λ (Lamda)", "owl_m": "OWL M (outlier threshold)"}
HYPER_ALLOCATION = {"dlp_alpha": "dlp", "owl_lambda": "owl", "owl_m": "owl"}
_MODEL_LABELS = {
    "smollm2-135m": ("SmolLM2-135M", "SmolLM2-135M-Instruct (embedded GGUF, dequantised to fp32; not LLaMA)")
}
_SOURCE_LABELS = {
    "wiki-extracts": ("Wikipedia extracts", "English Wikipedia lead sections (embedded; not C4 or WikiText-2)"),
    "c4": ("C4", "C4 (allenai/c4 en, first train shard)"),
    "wikitext2": ("WikiText-2", "WikiText-2 (wikitext-2-raw-v1 test)"),
}


def model_name(prof: dict) -> str:
    """A short display name of the profile's model: ``SmolLM2-135M``, ``Llama-2-7b-hf``."""
    spec = str(prof["model"])
    if spec in _MODEL_LABELS:
        return _MODEL_LABELS[spec][0]
    return Path(spec.rstrip("/")).name.removesuffix(".gguf")


def source_name(source: str | None, long: bool = False) -> str:
    if source is None:
        return "none"
    kind = source.split(":", 1)[0]
    if kind in _SOURCE_LABELS:
        return _SOURCE_LABELS[kind][int(long)]
    return Path(source).name


def calibration_name(source: str) -> str:
    """The long name of a calibration source, with how C4's windows are drawn."""
    sampler = ", documents drawn by the papers' sampler" if source.split(":", 1)[0] == "c4" else ""
    return source_name(source, long=True) + sampler


def training_name(source: str) -> str:
    """The long name of a LoRA training source, with how C4's windows are made."""
    grouping = (
        ", its documents in file order, concatenated (run_clm's grouping)" if source.split(":", 1)[0] == "c4" else ""
    )
    return source_name(source, long=True) + grouping


def data_tag(prof: dict) -> str:
    """One line for figure titles: what model and data the numbers come from."""
    return f"{model_name(prof)} · eval: {source_name(prof['eval'])} · profile {prof.get('name', '?')}"


def describe(prof: dict) -> str:
    """Markdown bullet list saying exactly what model, data and settings a profile uses."""
    model = _MODEL_LABELS.get(prof["model"], (None, prof["model"]))[1]
    windows = "all non-overlapping" if prof["eval_windows"] is None else f"the first {prof['eval_windows']}"
    lines = [
        f"- **profile** `{prof.get('name', '?')}`",
        f"- **model**: {model}",
        f"- **calibration**: {prof['nsamples']} windows × {prof['seqlen']} tokens of "
        f"{calibration_name(prof['calibration'])}, seed {prof['seed']}",
        f"- **evaluation**: perplexity over {windows} {prof['seqlen']}-token windows of "
        f"{source_name(prof['eval'], long=True)}",
        f"- **device**: {prof['device']}, dtype {prof['dtype']}",
    ]
    if _arithmetic_worth_saying(prof):
        lines.append(f"- **SparseGPT**: {sparsegpt_arithmetic(prof)}")
    return "\n".join(lines)


_HESSIAN_WORDS = {
    "fp32": "Hessians in the reference's fp32 arithmetic",
    "half": "Hessians from the bf16/fp16 activations as they are (exact products, fp32 sums; tensor cores on CUDA)",
}


def sparsegpt_arithmetic(prof: dict) -> str:
    """SparseGPT's arithmetic in a profile, in words (the Hessian's as it runs on the profile's device)."""
    hessian = hessian_for_device(prof["sparsegpt_hessian"], prof["device"])
    return f"{_HESSIAN_WORDS[hessian]}; column loop `{prof['sparsegpt_sweep']}`"


def _arithmetic_worth_saying(prof: dict) -> bool:
    """Whether ``describe`` names SparseGPT's arithmetic: off the defaults, or on a device where "auto" is
    not the reference's."""
    chosen = any(prof[name] != "auto" for name in ARITHMETIC_FIELDS)
    return chosen or hessian_for_device("auto", prof["device"]) != REFERENCE_HESSIAN


def percent(sparsity: float) -> str:
    return f"{100 * sparsity:g}%"


# ------------------------------------------------------------------------------------- runs and cache
def run_config(
    prof: dict,
    method: str | None = None,
    sparsity: float | None = None,
    allocation: str = "uniform",
    sparsity_type: str = "unstructured",
    clip_densities: bool = False,
    seed: int | None = None,
    perturb: float = 0.0,
    perturb_seed: int = 0,
    recovery: bool = False,
    **hyper,
) -> pipeline.RunConfig:
    """The RunConfig of one table cell: the profile's model/data settings plus a pruning setup.

    ``method=None`` is the dense model. Hyper-parameters default to the profile's (the papers'); for
    N:M patterns the sparsity is N/M. Numbers are normalised to float so equal settings hash alike.
    ``seed`` (default: the profile's) draws the calibration windows; ``perturb``/``perturb_seed`` are
    the float-sensitivity probe (``PruneConfig.perturb``). ``recovery=True`` adds LoRA recovery with
    the profile's ``recovery["settings"]`` (notebook 08).
    """
    settings = {name: prof[name] for name in RUN_FIELDS if name in prof}  # zero_shot_*: optional
    if seed is not None:
        settings["seed"] = int(seed)
    if method is None or method == "dense":
        return pipeline.RunConfig(prune=None, **settings)
    params = {name: prof[name] for name in HYPER_FIELDS + ARITHMETIC_FIELDS}
    unknown = set(hyper) - set(HYPER_FIELDS)
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s) {sorted(unknown)}; known: {', '.join(HYPER_FIELDS)}")
    params.update(hyper)
    params = {k: float(v) if k in _FLOAT_FIELDS else v for k, v in params.items()}
    nm = parse_sparsity_type(sparsity_type)
    if nm:
        sparsity = nm[0] / nm[1]
    if sparsity is None:
        sparsity = prof["main_sparsity"]
    if clip_densities:
        params["clip_densities"] = True  # only set when used, so other runs keep their record hashes
    if perturb:
        params.update(perturb=float(perturb), perturb_seed=int(perturb_seed))
    prune = PruneConfig(
        method=method, sparsity=float(sparsity), sparsity_type=sparsity_type, allocation=allocation, **params
    )
    if recovery:
        settings["recovery"] = RecoveryConfig(**prof["recovery"]["settings"])
    return pipeline.RunConfig(prune=prune, **settings)


def run_label(config: pipeline.RunConfig) -> str:
    """``wanda · DLP (α=0.15) · 70% unstructured``, or ``dense``; unique per run in a profile's grid, so
    a DSA run's label names its expression (the proxy check runs several at the same λ and seed)."""
    p = config.prune
    if p is None:
        return "dense"
    alloc = {
        "uniform": "Uniform",
        "owl": f"OWL (λ={p.owl_lambda:g}, M={p.owl_m:g})",
        "dlp": f"DLP (α={p.dlp_alpha:g})",
        "dsa": f"DSA {p.dsa_graph} (λ={p.dsa_lambda:g})",
    }[p.allocation]
    pattern = p.sparsity_type if p.nm else f"{percent(p.sparsity)} unstructured"
    clipped = " · clipped" if p.clip_densities else ""
    perturbed = f" · statistics × (1 + {p.perturb:g}·noise #{p.perturb_seed})" if p.perturb else ""
    seed = f" · seed {config.seed}" if uses_calibration(p.method, p.allocation) else ""
    recovered = f" · LoRA {config.recovery.steps} steps" if config.recovery is not None else ""
    arithmetic = f" · {p.sparsegpt_hessian} Hessian" if "sparsegpt_hessian" in p.to_dict() else ""  # off the reference
    return f"{p.method} · {alloc} · {pattern}{clipped}{seed}{perturbed}{arithmetic}{recovered}"


def _json_object(path: Path) -> dict:
    obj = json.loads(path.read_text())
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
    return obj


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _stored_record(path: Path, config: pipeline.RunConfig) -> dict | None:
    """The record at ``path`` if it is readable and belongs to ``config``; None otherwise."""
    if not path.is_file():
        return None
    try:
        record = load_record(path)
    except (OSError, ValueError) as err:  # e.g. binary garbage: UnicodeDecodeError
        log.warning("ignoring unreadable record %s (%s); re-running", path, err)
        return None
    if not isinstance(record, dict) or record.get("config") != _jsonable(config.to_dict()):
        log.warning("ignoring corrupt or mismatched record %s; re-running", path)
        return None
    return record


# ``make render`` / DLP_RECORDS_ONLY=1: notebooks read what the grid (or an earlier reproduction) stored
# and refuse to compute anything, so a missing record is an error instead of hours of unplanned work
RECORDS_ONLY_ENV = "DLP_RECORDS_ONLY"


def records_only() -> bool:
    return os.environ.get(RECORDS_ONLY_ENV, "") not in ("", "0")


def before_computing(what: str) -> None:
    """Called where a result is missing and is about to be computed (a run, the DSA search, the dense
    statistics): raise ConfigError if computing is switched off (``DLP_RECORDS_ONLY=1``; ``what`` says
    what is missing); else keep freed memory in the process heap (``dlp_lib.heap``), as ``make`` does for
    the notebooks it runs, so a notebook opened in Jupyter gets the same behaviour."""
    if records_only():
        raise ConfigError(
            f"{what}, and {RECORDS_ONLY_ENV}=1 forbids computing it; run the grid first "
            "(python -m dlp_lib.grid, or make grid) or unset the variable"
        )
    heap.keep_freed_memory()


def cached_run(config: pipeline.RunConfig, results_dir: str | os.PathLike = "results", progress: bool = True) -> dict:
    """The result record of ``config``: read from ``results_dir`` if present, else run and save it.

    Records are keyed by a hash of the full configuration and written atomically, so an interrupted
    reproduction resumes where it stopped and never leaves a half-written record. An unreadable or
    mismatched file counts as missing and is replaced.
    """
    path = record_path(results_dir, config.to_dict())
    record = _stored_record(path, config)
    if record is not None:
        return record
    before_computing(f"no record of {run_label(config)} in {path.parent}")
    record = pipeline.run(config, progress=progress)
    save_record(path, record)
    return record


def stored_spec(prof: dict, spec: dict, results_dir) -> tuple[pipeline.RunConfig, dict | None]:
    """``(config, stored record or None)`` for a spec. If the spec's own record is missing but a
    clipped one exists (this setting was refused before and run clipped), that one is returned."""
    config = run_config(prof, **spec)
    record = _stored_record(record_path(results_dir, config.to_dict()), config)
    if record is None and config.prune is not None and not config.prune.clip_densities:
        clipped = run_config(prof, **spec, clip_densities=True)
        clipped_record = _stored_record(record_path(results_dir, clipped.to_dict()), clipped)
        if clipped_record is not None:
            return clipped, clipped_record
    return config, record


def run_spec(
    prof: dict, spec: dict, results_dir: str | os.PathLike = "results", progress: bool = False
) -> tuple[pipeline.RunConfig, dict, bool]:
    """``(config, record, cached)`` of one spec (keyword arguments of ``run_config``): the stored record,
    or a new run. An allocation that leaves (0, 1] for this sparsity is run with clipped densities
    instead (so a sweep still has the point), and ``config`` is then the clipped one."""
    config, record = stored_spec(prof, spec, results_dir)
    if record is not None:
        return config, record, True
    try:
        return config, cached_run(config, results_dir, progress), False
    except ConfigError as err:
        if "outside (0, 1]" not in str(err) or spec.get("clip_densities"):
            raise
        log.warning("%s: %s; running it with clipped densities", run_label(config), err)
        config = run_config(prof, **spec, clip_densities=True)
        return config, cached_run(config, results_dir, progress), False


def run_specs(
    prof: dict, specs: list[dict], results_dir: str | os.PathLike = "results", progress: bool = False
) -> list[dict]:
    """``run_spec`` for each spec, logging one line per run."""
    records = []
    for index, spec in enumerate(specs, 1):
        start = time.perf_counter()
        config, record, cached = run_spec(prof, spec, results_dir, progress)
        how = "cached" if cached else f"ran in {time.perf_counter() - start:.0f} s"
        log.info("[%d/%d] %s: %s (%s)", index, len(specs), run_label(config), headline(record), how)
        records.append(record)
    return records


def headline(record: dict) -> str:
    """``perplexity 12.3`` (``perplexity 586.6 -> 130.9 after LoRA recovery``) and/or ``mean zero-shot
    acc 0.412``: what a run measured."""
    parts = []
    if record.get("perplexity"):
        parts.append(f"perplexity {record['perplexity']['perplexity']:.4g}")
    recovered = (record.get("recovery") or {}).get("perplexity") or {}
    if recovered.get("adapter") is not None:
        parts[-1] += f" -> {recovered['adapter']:.4g} after LoRA recovery"
    if record.get("zero_shot"):
        parts.append(f"mean zero-shot acc {record['zero_shot']['mean_acc']:.3f}")
    return ", ".join(parts) or "no evaluation"


def stored_runs(prof: dict, specs: list[dict], results_dir: str | os.PathLike = "results") -> list[dict]:
    """The records of ``specs`` that are already in ``results_dir`` (clipped ones included); runs nothing."""
    stored = (stored_spec(prof, spec, results_dir)[1] for spec in specs)
    return [record for record in stored if record is not None]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a notebook's, a test's captured one)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """One log line per run on stderr (shown in executed notebooks and by ``papermill --log-output``);
    silences the per-file weight-loading bars of transformers."""
    logger = logging.getLogger("dlp_lib")
    if not any(getattr(h, "_dlp_experiments", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._dlp_experiments = True
        logger.addHandler(handler)
    logger.setLevel(level)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# ---------------------------------------------------------------------------------- experiment specs
def dense_spec(prof: dict) -> dict:
    return {"method": None}


def main_specs(
    prof: dict, methods: list[str] | None = None, dsa_graph: str | None = None, allocations: list[str] | None = None
) -> list[dict]:
    """Dense, then every pruner (default: the profile's main methods) x allocation (default: the
    profile's) at the main sparsity (unstructured); with ``dsa_graph`` (the searched expression,
    ``dsa_search``) each pruner also gets a DSA row."""
    s = prof["main_sparsity"]
    methods = prof["main_methods"] if methods is None else methods
    allocations = prof["allocations"] if allocations is None else allocations
    specs = [dense_spec(prof)]
    for m in methods:
        specs += [{"method": m, "sparsity": s, "allocation": a} for a in allocations]
        if dsa_graph is not None:
            specs.append({"method": m, "sparsity": s, "allocation": "dsa", "dsa_graph": dsa_graph})
    return specs


def table_allocations(prof: dict) -> list[str]:
    """The allocations of the main table, in order: the profile's, then DSA (the searched expression)."""
    return [*prof["allocations"], "dsa"]


def uses_calibration(method: str | None, allocation: str | None) -> bool:
    """Whether a run's result depends on the calibration windows (and so on the seed): every pruner
    but magnitude with a uniform allocation (the dense model reads none either)."""
    if method in (None, "dense"):
        return False
    return method != "magnitude" or allocation not in (None, "uniform")


def seeded(prof: dict, specs: list[dict]) -> list[dict]:
    """Each spec once per calibration seed of the profile (``prof["seeds"]``); specs that read no
    calibration data once, on the profile's seed (another seed would give the very same run)."""
    out = []
    for spec in specs:
        if uses_calibration(spec.get("method"), spec.get("allocation", "uniform")):
            out += [{**spec, "seed": seed} for seed in prof["seeds"]]
        else:
            out.append(spec)
    return out


def float_sensitivity_specs(prof: dict) -> list[dict]:
    """For each cell of ``prof["float_sensitivity"]``: the normal run (profile seed) and ``draws`` runs
    with the pruning statistics perturbed at float-rounding level (``PruneConfig.perturb``)."""
    setting = prof["float_sensitivity"]
    specs = []
    for cell in setting["cells"]:
        specs.append(dict(cell))
        specs += [{**cell, "perturb": setting["scale"], "perturb_seed": d} for d in range(1, setting["draws"] + 1)]
    return specs


def sweep_specs(prof: dict) -> list[dict]:
    """Each sweep pruner x sweep allocation x sparsity (single runs on the profile seed)."""
    return [
        {"method": m, "sparsity": s, "allocation": a}
        for m, sparsities in prof["sweep"].items()
        for a in prof.get("sweep_allocations", prof["allocations"])
        for s in sparsities
    ]


def hyper_specs(prof: dict) -> list[dict]:
    """Pruned runs of the sensitivity study: one hyper-parameter varied, the others at the defaults."""
    grid = prof["hyper_pruned"]
    specs = [
        {"method": grid["method"], "sparsity": prof["main_sparsity"], "allocation": HYPER_ALLOCATION[name], name: v}
        for name in HYPER_ALLOCATION
        for v in grid.get(name, [])
    ]
    return _unique(prof, specs)


def _unique(prof: dict, specs: list[dict]) -> list[dict]:
    """Specs without repeats of the same run (e.g. OWL at the default λ and at the default M)."""
    seen, unique = set(), []
    for spec in specs:
        key = config_key(run_config(prof, **spec).to_dict())
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def nm_specs(prof: dict) -> list[dict]:
    return [
        {"method": m, "sparsity_type": pattern, "allocation": a}
        for m, grid in prof["nm"].items()
        for pattern in grid["patterns"]
        for a in grid["allocations"]
    ]


def recovery_specs(prof: dict) -> list[dict]:
    """Each recovery pruner x allocation at the main sparsity, with LoRA recovery (profile seed)."""
    setting = prof["recovery"]
    return [
        {"method": m, "sparsity": prof["main_sparsity"], "allocation": a, "recovery": True}
        for m in setting["methods"]
        for a in setting["allocations"]
    ]


def recovery_profile(prof: dict) -> dict:
    """The profile notebook 08 runs with: perplexity always, zero-shot accuracy (measured after recovery)
    too where ``prof["recovery"]["zero_shot"]``: one run per cell gives both."""
    if not prof["recovery"].get("zero_shot"):
        return prof
    return {**zero_shot_profile(prof), "eval": prof["eval"]}


def zero_shot_profile(prof: dict) -> dict:
    """``prof`` with zero-shot evaluation switched on (``prof["zero_shot"]``) and perplexity off, for
    ``run_config``/``run_specs``: its records are separate from the perplexity runs'."""
    zs = prof["zero_shot"]
    return {
        **prof,
        "eval": None,
        "zero_shot_tasks": tuple(zs["tasks"]),
        "zero_shot_limit": zs["limit"],
        "zero_shot_batch_size": zs["batch_size"],
        "zero_shot_bos": zs["add_bos_token"],
        "zero_shot_source": zs["source"],
    }


def zero_shot_specs(prof: dict) -> list[dict]:
    """Dense, then each zero-shot pruner x allocation at the main sparsity (run with zero_shot_profile)."""
    zs = prof["zero_shot"]
    return main_specs(prof, zs["methods"], allocations=zs.get("allocations", prof["allocations"]))


# ------------------------------------------------------------------------------- DSA's allocation search
SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchConfig))
_ALLOCATION_HYPER = {"uniform": (), "owl": ("owl_lambda", "owl_m"), "dlp": ("dlp_alpha", "dlp_statistic")}


def dsa_search_settings(prof: dict) -> tuple[FitnessSettings, SearchConfig]:
    """The fitness and the evolution of ``prof["dsa_search"]``: the profile's model, calibration source,
    seed, DSA width and main sparsity; the search's own (smaller) windows."""
    setting = prof["dsa_search"]
    fitness = FitnessSettings(
        model=prof["model"],
        method=setting["method"],
        sparsity=float(prof["main_sparsity"]),
        dsa_lambda=float(prof["dsa_lambda"]),
        calibration=prof["calibration"],
        nsamples=setting["nsamples"],
        seqlen=setting["seqlen"],
        windows=setting["windows"],
        seed=prof["seed"],
        batch_size=prof["batch_size"],
        eval_batch_size=prof["eval_batch_size"],
        device=prof["device"],
        dtype=prof["dtype"],
        trust_remote_code=prof["trust_remote_code"],
        **{name: prof[name] for name in ARITHMETIC_FIELDS},
    )
    return fitness, SearchConfig(**{k: v for k, v in setting.items() if k in SEARCH_FIELDS})


def dsa_search_path(prof: dict, results_dir: str | os.PathLike = "results") -> Path:
    """Where the profile's DSA search result is kept: ``results_dir/dsa_search/<settings hash>.json``."""
    fitness_settings, config = dsa_search_settings(prof)
    key = stable_hash({"fitness": fitness_settings.to_dict(), "search": config.to_dict()})
    return Path(results_dir) / "dsa_search" / f"{key}.json"


def stored_dsa_search(prof: dict, results_dir: str | os.PathLike = "results") -> dict | None:
    """The profile's stored DSA search result, or None (missing, unreadable or for other settings)."""
    fitness_settings, config = dsa_search_settings(prof)
    path = dsa_search_path(prof, results_dir)
    stored = read_cache(path, _json_object, "DSA search result")  # None: search (cached candidates are reused)
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


# --------------------------------------------------------------------------------- records -> frames
def record_row(record: dict) -> dict:
    """One flat row of a result record: setup, achieved sparsity, perplexity, timings."""
    config = record["config"]
    prune = config.get("prune") or {}
    pruning = record.get("pruning") or {}
    timings = record.get("timings") or {}
    ppl = record.get("perplexity") or {}
    allocation = prune.get("allocation", "none")
    return {
        "method": prune.get("method", "dense"),
        "allocation": allocation,
        "sparsity": prune.get("sparsity", 0.0),
        "sparsity_type": prune.get("sparsity_type", "dense"),
        "owl_lambda": prune.get("owl_lambda") if allocation == "owl" else None,
        "owl_m": prune.get("owl_m") if allocation == "owl" else None,
        "dlp_alpha": prune.get("dlp_alpha") if allocation == "dlp" else None,
        "seed": config.get("seed"),
        "perturb": prune.get("perturb", 0.0),
        "perturb_seed": prune.get("perturb_seed"),
        "uses_calibration": uses_calibration(prune.get("method"), allocation),
        "achieved_sparsity": pruning.get("overall_achieved"),
        "perplexity": ppl.get("perplexity"),
        "prune_seconds": (pruning.get("seconds") or {}).get("total"),
        "eval_seconds": ppl.get("seconds"),
        "total_seconds": timings.get("total"),
        "model": config.get("model"),
        "key": config_key(config),
    }


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record (see ``record_row``)."""
    return pd.DataFrame([record_row(r) for r in records])


def blocks_frame(record: dict) -> pd.DataFrame:
    """Per-block target and achieved sparsity (and allocation statistic) of one pruned record."""
    pruning = record["pruning"]
    frame = pd.DataFrame({"block": range(len(pruning["block_achieved"])), "achieved": pruning["block_achieved"]})
    if pruning.get("block_targets") is not None:
        frame["target"] = pruning["block_targets"]
    allocation = record.get("allocation")
    if allocation:
        frame["statistic"] = allocation["statistic"]
        frame["density"] = allocation["densities"]
        if allocation.get("block_nm"):
            frame["nm"] = [f"{n}:{m}" for n, m in allocation["block_nm"]]
    return frame


def block_sparsity_frame(records: list[dict]) -> pd.DataFrame:
    """Achieved sparsity per decoder block (rows) of each pruned record (columns ``method/allocation``
    plus the pattern or sparsity), to check an allocation was applied as planned."""
    columns = {}
    for record in records:
        row = record_row(record)
        if row["method"] == "dense":
            continue
        pattern = row["sparsity_type"] if row["sparsity_type"] != "unstructured" else percent(row["sparsity"])
        columns[f"{row['method']}/{row['allocation']} {pattern}"] = record["pruning"]["block_achieved"]
    frame = pd.DataFrame(columns)
    frame.index.name = "block"
    return frame


def dense_perplexity(frame: pd.DataFrame) -> float | None:
    if "method" not in frame:  # no records at all
        return None
    dense = frame[frame["method"] == "dense"]
    return float(dense["perplexity"].iloc[0]) if len(dense) else None


# ------------------------------------------------------------------------------- dense statistics
@dataclass
class DenseStatistics:
    """Per-block allocation statistics of the dense model (from the pipeline's cached dense pass)
    and facts about the model and data. ``densities`` gives any allocation without pruning."""

    facts: dict
    blocks: pd.DataFrame  # block, params, owl_outlier_ratio_m<M>, dlp_abs_mean, dlp_abs_median, dsa_value
    dsa_error: str | None
    seconds: float
    norms_cache: str | None = None  # the dense input norms file the statistics were computed from

    def statistic(self, prune: PruneConfig) -> list[float]:
        if prune.allocation == "uniform":
            return [0.0] * len(self.blocks)
        if prune.allocation == "owl":
            column = owl_column(prune.owl_m)
            if column not in self.blocks:
                raise ConfigError(f"OWL statistic for M={prune.owl_m:g} was not computed; pass it in owl_ms")
            return self.blocks[column].tolist()
        if prune.allocation == "dlp":
            return self.blocks[f"dlp_abs_{prune.dlp_statistic}"].tolist()
        if self.dsa_error:
            raise ConfigError(self.dsa_error)
        if prune.dsa_graph != self.facts["dsa_graph"]:
            raise ConfigError(f"DSA statistic computed for {self.facts['dsa_graph']!r}, not {prune.dsa_graph!r}")
        return self.blocks["dsa_value"].tolist()

    def densities(self, prune: PruneConfig) -> list[float]:
        """Per-block densities of an allocation (the same functions the pipeline uses); raises
        ConfigError when the allocation is not possible (e.g. a block density outside (0, 1])."""
        weights = self.blocks["params"].tolist()
        return [float(d) for d in allocate(self.statistic(prune), prune, weights=weights)]

    def largest_width(self, prune: PruneConfig) -> float:
        """The largest α/λ that keeps every block's density in (0, 1] for ``prune``'s allocation."""
        weights = self.blocks["params"].tolist()
        return largest_width(self.statistic(prune), prune.sparsity, DIRECTION[prune.allocation], weights)


def load_dense_statistics(path: Path) -> DenseStatistics:
    """The dense statistics table that ``dense_statistics`` kept at ``path`` (read it through
    ``cache.read_cache``, which rebuilds an unreadable file)."""
    stored = _json_object(path)
    blocks = pd.DataFrame(stored["blocks"])
    return DenseStatistics(stored["facts"], blocks, stored["dsa_error"], stored["seconds"], stored.get("norms_cache"))


def owl_column(m: float) -> str:
    return f"owl_outlier_ratio_m{float(m):g}"


def dense_statistics(
    prof: dict,
    owl_ms=None,
    progress: bool = False,
    results_dir: str | os.PathLike | None = None,
    refresh: bool = False,
) -> DenseStatistics:
    """Load the model and calibration windows, take the dense input norms from the pipeline's cache
    (one forward pass the first time), and compute every block's allocation statistics: OWL's outlier
    ratio for each M in ``owl_ms`` (default: the profile's M and its sensitivity grid), DLP's |mean|
    and |median| Wanda score, and the DSA expression (NaN, with ``dsa_error`` set, if not finite).

    With ``results_dir`` the result is also kept there (``dense_statistics/<key>.json``, keyed like the
    run records by the settings), so later notebooks need not load the model again; ``refresh=True``
    computes it again (the grid does when the norms file it names has gone)."""
    path = None
    if results_dir is not None:
        path = dense_statistics_path(prof, owl_ms, results_dir)
        stored = None if refresh else read_cache(path, load_dense_statistics, "dense statistics table")
        if stored is not None:
            return stored
        before_computing(f"no dense statistics table in {path}")
    stats = _compute_dense_statistics(prof, _owl_ms(prof, owl_ms), progress)
    if path is not None:
        blocks = stats.blocks.to_dict("list")
        table = {"facts": stats.facts, "blocks": blocks, "dsa_error": stats.dsa_error, "seconds": stats.seconds}
        write_json_atomic(path, {**table, "norms_cache": stats.norms_cache})
    return stats


def _owl_ms(prof: dict, owl_ms=None) -> list[float]:
    if owl_ms is None:
        owl_ms = [prof["owl_m"], *prof["hyper_grid"].get("owl_m", [])]
    return sorted({float(m) for m in owl_ms})


def dense_statistics_path(prof: dict, owl_ms=None, results_dir: str | os.PathLike = "results") -> Path:
    """Where ``dense_statistics`` keeps its table: ``results_dir/dense_statistics/<settings hash>.json``."""
    settings = {k: prof[k] for k in ("model", "calibration", "nsamples", "seqlen", "seed", "device", "dtype")}
    key = stable_hash({"settings": settings, "owl_ms": _owl_ms(prof, owl_ms), "dsa_graph": prof["dsa_graph"]})
    return Path(results_dir) / "dense_statistics" / f"{key}.json"


def stored_norms_cache(prof: dict, results_dir: str | os.PathLike = "results") -> Path | None:
    """The dense input norms file (``$DLP_CACHE_DIR/dense_stats``) that the stored dense statistics
    table of ``prof`` was computed from, if both exist; None otherwise. The grid's statistics jobs are
    done when this is not None."""
    path = dense_statistics_path(prof, None, results_dir)
    try:
        norms = json.loads(path.read_text()).get("norms_cache")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(norms) if norms and Path(norms).is_file() else None


def _compute_dense_statistics(prof: dict, owl_ms: list[float], progress: bool) -> DenseStatistics:
    import torch

    from .data import calibration_windows
    from .layers import decoder_blocks, linear_sublayers
    from .models import load_model
    from .scores import block_wanda_scores

    start = time.perf_counter()
    model, tokenizer = load_model(prof["model"], prof["dtype"], prof["device"], prof["trust_remote_code"])
    calibration = calibration_windows(prof["calibration"], tokenizer, prof["nsamples"], prof["seqlen"], prof["seed"])
    norms, _ = pipeline.cached_dense_norms(model, calibration, prof["batch_size"], progress)
    norms_cache = str(pipeline.dense_norms_path(model, calibration))
    rows, dsa_error = [], None
    with torch.no_grad():
        for index, block in enumerate(decoder_blocks(model)):
            weights = {name: lin.weight for name, lin in linear_sublayers(block).items()}
            scores = block_wanda_scores(weights, norms[index])
            row = {"block": index, "params": sum(w.numel() for w in weights.values())}
            for m in owl_ms:
                row[owl_column(m)] = owl_outlier_ratio(scores, m)
            row["dlp_abs_mean"] = dlp_unimportance(scores, "mean")
            row["dlp_abs_median"] = dlp_unimportance(scores, "median")
            try:
                row["dsa_value"] = dsa_value(scores, prof["dsa_graph"], block=index)
            except ConfigError as err:
                row["dsa_value"] = float("nan")
                dsa_error = dsa_error or str(err)
            rows.append(row)
    blocks = pd.DataFrame(rows)
    config = model.config
    facts = {
        "model": prof["model"],
        "architecture": config.model_type,
        "decoder blocks": len(blocks),
        "hidden size": getattr(config, "hidden_size", None),
        "vocabulary": getattr(config, "vocab_size", None),
        "parameters (all)": sum(p.numel() for p in model.parameters()),
        "parameters pruned (decoder linears)": int(blocks["params"].sum()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "calibration": f"{calibration.shape[0]} windows × {calibration.shape[1]} tokens of "
        f"{calibration_name(prof['calibration'])}",
        "dsa_graph": prof["dsa_graph"],
    }
    del model
    seconds = time.perf_counter() - start
    return DenseStatistics(facts=facts, blocks=blocks, dsa_error=dsa_error, seconds=seconds, norms_cache=norms_cache)


def dense_facts_table(stats: DenseStatistics, dense_record: dict) -> pd.DataFrame:
    """Two columns, quantity and value: model and data facts, dense perplexity, evaluation time."""
    facts = {k: v for k, v in stats.facts.items() if k != "dsa_graph"}
    ppl = dense_record.get("perplexity") or {}
    facts["evaluation"] = f"{ppl.get('windows')} windows, {ppl.get('tokens')} tokens"
    facts["dense perplexity"] = round(float(ppl.get("perplexity", float("nan"))), 4)
    facts["evaluation seconds"] = round(float(ppl.get("seconds", float("nan"))), 1)
    facts["achieved sparsity of decoder linears (dense)"] = round(float(dense_record["pruning"]["overall_achieved"]), 6)
    return pd.DataFrame({"quantity": list(facts), "value": [str(v) for v in facts.values()]})


def allocation_frame(stats: DenseStatistics, prof: dict, sparsity: float | None = None, allocations=None):
    """Per-block sparsity of each allocation at ``sparsity`` (default: the main sparsity) from the
    dense statistics, next to the statistics. Returns ``(wide frame, notes)``; an allocation that is
    not possible on this model (e.g. a non-finite DSA expression) is left out and explained in notes."""
    sparsity = prof["main_sparsity"] if sparsity is None else sparsity
    allocations = allocations or ["uniform", "owl", "dlp", "dsa"]
    frame = stats.blocks[["block", "params"]].copy()
    frame["owl_outlier_ratio"] = stats.blocks[owl_column(prof["owl_m"])]
    frame[f"dlp_abs_{prof['dlp_statistic']}"] = stats.blocks[f"dlp_abs_{prof['dlp_statistic']}"]
    frame["dsa_value"] = stats.blocks["dsa_value"]
    notes = []
    for allocation in allocations:
        prune = run_config(prof, "wanda", sparsity, allocation).prune
        try:
            densities = stats.densities(prune)
        except ConfigError as err:
            notes.append(f"{ALLOCATION_NAMES[allocation]} is skipped: {err}")
            continue
        frame[f"sparsity_{allocation}"] = [1.0 - d for d in densities]
    return frame, notes


def hyperparameter_allocations(stats: DenseStatistics, prof: dict, sparsity: float | None = None):
    """Allocation-only sensitivity: for every value in ``prof["hyper_grid"]`` the per-block sparsity
    (no pruning). Returns ``(summary, blocks)``: one row per value (feasible or not, min/max/std of
    block sparsity, the largest allowed width), and one row per value x block."""
    sparsity = prof["main_sparsity"] if sparsity is None else sparsity
    summary, blocks = [], []
    for name, values in prof["hyper_grid"].items():
        allocation = HYPER_ALLOCATION[name]
        for value in values:
            prune = run_config(prof, "wanda", sparsity, allocation, **{name: value}).prune
            row = {"parameter": name, "value": float(value), "allocation": allocation, "sparsity": sparsity}
            try:
                block_sparsity = [1.0 - d for d in stats.densities(prune)]
                row.update(
                    feasible=True,
                    min_block_sparsity=min(block_sparsity),
                    max_block_sparsity=max(block_sparsity),
                    block_sparsity_std=float(pd.Series(block_sparsity).std()),
                    note="",
                )
                blocks += [
                    {"parameter": name, "value": float(value), "block": i, "sparsity": s}
                    for i, s in enumerate(block_sparsity)
                ]
            except ConfigError as err:
                row.update(feasible=False, note=str(err))
            row["largest_width"] = stats.largest_width(prune) if name != "owl_m" else float("nan")
            summary.append(row)
    return pd.DataFrame(summary), pd.DataFrame(blocks)


def feasible_hyper_specs(stats: DenseStatistics, prof: dict) -> tuple[list[dict], list[str]]:
    """``hyper_specs`` without the settings whose allocation is impossible (explained in the notes)."""
    specs, notes = [], []
    for spec in hyper_specs(prof):
        try:
            stats.densities(run_config(prof, **spec).prune)
            specs.append(spec)
        except ConfigError as err:
            notes.append(f"skipped {run_label(run_config(prof, **spec))}: {err}")
    return specs, notes


def hyperparameter_table(summary: pd.DataFrame, records: list[dict], prof: dict) -> pd.DataFrame:
    """The allocation-only summary with the perplexity of the pruned runs merged in (NaN where the
    value was not pruned in this profile)."""
    rows = []
    for record in records:
        row = record_row(record)
        for name in HYPER_ALLOCATION:
            if HYPER_ALLOCATION[name] != row["allocation"]:
                continue
            value = row[name]
            others = [n for n in HYPER_ALLOCATION if HYPER_ALLOCATION[n] == row["allocation"] and n != name]
            if all(math.isclose(row[o], prof[o]) for o in others):  # the other hyper-parameter at its default
                rows.append(
                    {
                        "parameter": name,
                        "value": float(value),
                        "method": row["method"],
                        "perplexity": row["perplexity"],
                        "achieved_sparsity": row["achieved_sparsity"],
                    }
                )
    pruned = pd.DataFrame(rows, columns=["parameter", "value", "method", "perplexity", "achieved_sparsity"])
    pruned = pruned.drop_duplicates(["parameter", "value"])
    table = summary.merge(pruned, on=["parameter", "value"], how="outer")
    return table.sort_values(["parameter", "value"]).reset_index(drop=True)
