"""Experiment profiles, cached runs, tables and figures: everything the numbered notebooks call.

The notebooks in ``notebooks/`` stay thin: a parameters cell (``profile``, ``model``, output folders),
then calls into this module. The flow is

    profile(name) ──► run specs (one per table cell) ──► cached_run: a result record per configuration
    ──► records_frame (pandas) ──► write_table (CSV, Markdown, LaTeX) and the plot_* figures

``cached_run`` keys every record by a hash of the full run configuration, so a later notebook (or an
interrupted ``make reproduce``) reuses what an earlier one computed, and allocation-only analyses
(``dense_statistics``) reuse the dense statistics cached by the pipeline: trying another allocator or
hyper-parameter needs no forward pass.

Example::

    from dlp_lib import experiments as ex
    prof = ex.profile("quick")
    records = ex.run_specs(prof, ex.main_specs(prof), results_dir="results")
    numbers, display, bold = ex.main_table(ex.records_frame(records), prof)  # numbers, strings, best-per-pruner mask
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import pipeline
from .allocation import DIRECTION, allocate, dlp_unimportance, dsa_value, largest_width, owl_outlier_ratio
from .cache import stable_hash, write_json_atomic
from .config import ConfigError, PruneConfig, parse_sparsity_type
from .results import config_key, load_record, record_path, save_record

log = logging.getLogger(__name__)

DSA_README_GRAPH = "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(pipeline.RunConfig) if f.name != "prune")
HYPER_FIELDS = ("owl_lambda", "owl_m", "dlp_alpha", "dlp_statistic", "dsa_graph", "dsa_lambda")
_FLOAT_FIELDS = ("owl_lambda", "owl_m", "dlp_alpha", "dsa_lambda")  # 5 and 5.0 must hash alike

# ------------------------------------------------------------------------------------------- profiles
_DEFAULTS = dict(
    # RunConfig fields
    model="smollm2-135m",
    calibration="wiki-extracts",
    eval="wiki-extracts",
    nsamples=16,
    seqlen=512,
    seed=0,
    eval_windows=32,
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
    # experiment grids
    main_sparsity=0.7,
    main_methods=["magnitude", "wanda", "sparsegpt"],
    allocations=["uniform", "owl", "dlp"],
    sweep={"magnitude": [0.5, 0.6, 0.7, 0.8], "wanda": [0.5, 0.6, 0.7, 0.8], "sparsegpt": [0.7]},
    # allocation-only sensitivity: densities from the cached dense statistics, no pruning
    hyper_grid={
        "dlp_alpha": [0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
        "owl_lambda": [0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.2],
        "owl_m": [2.0, 3.0, 5.0, 7.0, 10.0],
    },
    # pruned runs for the sensitivity figure (the defaults are shared with the main table)
    hyper_pruned={"method": "wanda", "dlp_alpha": [0.05, 0.15, 0.2], "owl_lambda": [0.04, 0.08], "owl_m": [5.0]},
    nm={
        "magnitude": {"patterns": ["2:4", "4:8"], "allocations": ["uniform", "dlp"]},
        "wanda": {"patterns": ["2:4", "4:8"], "allocations": ["uniform", "dlp"]},
        "sparsegpt": {"patterns": ["2:4"], "allocations": ["uniform", "dlp"]},
    },
)

PROFILES: dict[str, dict] = {
    # CI: every notebook end to end in a few minutes on 2 CPU cores: six runs in all (dense, Wanda x 3
    # allocations at 70%, magnitude 2:4 uniform and DLP); the other grids reuse them. Even a tiny window
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
    ),
    # default of `make reproduce`: the embedded model and data, about 40 min on a 2-core CPU
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
    ),
}


def profile(name: str, **overrides) -> dict:
    """A copy of experiment profile ``name`` (``smoke``, ``quick``, ``paper``) with ``overrides`` applied.

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
    prof["name"] = name
    return prof


# --------------------------------------------------------------------------------- labels and naming
METHOD_NAMES = {"dense": "Dense", "magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT"}
ALLOCATION_NAMES = {"none": "–", "uniform": "Uniform", "owl": "OWL", "dlp": "DLP", "dsa": "DSA"}
ALLOCATION_COLORS = {"uniform": "#7f7f7f", "owl": "#1f77b4", "dlp": "#d62728", "dsa": "#2ca02c"}
HYPER_NAMES = {"dlp_alpha": "DLP α", "owl_lambda": "OWL λ (Lamda)", "owl_m": "OWL M (outlier threshold)"}
HYPER_ALLOCATION = {"dlp_alpha": "dlp", "owl_lambda": "owl", "owl_m": "owl"}
_MODEL_LABELS = {
    "smollm2-135m": ("SmolLM2-135M", "SmolLM2-135M-Instruct (embedded GGUF, dequantised to fp32; not LLaMA)")
}
_SOURCE_LABELS = {
    "wiki-extracts": ("Wikipedia extracts", "English Wikipedia lead sections (embedded; not C4 or WikiText-2)"),
    "c4": ("C4", "C4 (allenai/c4 en, first train shard, the papers' sampler)"),
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


def data_tag(prof: dict) -> str:
    """One line for figure titles: what model and data the numbers come from."""
    return f"{model_name(prof)} · eval: {source_name(prof['eval'])} · profile {prof.get('name', '?')}"


def describe(prof: dict) -> str:
    """Markdown bullet list saying exactly what model, data and settings a profile uses."""
    model = _MODEL_LABELS.get(prof["model"], (None, prof["model"]))[1]
    windows = "all non-overlapping" if prof["eval_windows"] is None else f"the first {prof['eval_windows']}"
    return "\n".join(
        [
            f"- **profile** `{prof.get('name', '?')}`",
            f"- **model**: {model}",
            f"- **calibration**: {prof['nsamples']} windows × {prof['seqlen']} tokens of "
            f"{source_name(prof['calibration'], long=True)}, seed {prof['seed']}",
            f"- **evaluation**: perplexity over {windows} {prof['seqlen']}-token windows of "
            f"{source_name(prof['eval'], long=True)}",
            f"- **device**: {prof['device']}, dtype {prof['dtype']}",
        ]
    )


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
    **hyper,
) -> pipeline.RunConfig:
    """The RunConfig of one table cell: the profile's model/data settings plus a pruning setup.

    ``method=None`` is the dense model. Hyper-parameters default to the profile's (the papers'); for
    N:M patterns the sparsity is N/M. Numbers are normalised to float so equal settings hash alike.
    """
    settings = {name: prof[name] for name in RUN_FIELDS if name in prof}  # zero_shot_*: optional
    if method is None or method == "dense":
        return pipeline.RunConfig(prune=None, **settings)
    params = {name: prof[name] for name in HYPER_FIELDS}
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
    prune = PruneConfig(
        method=method, sparsity=float(sparsity), sparsity_type=sparsity_type, allocation=allocation, **params
    )
    return pipeline.RunConfig(prune=prune, **settings)


def run_label(config: pipeline.RunConfig) -> str:
    """``wanda · DLP (α=0.15) · 70% unstructured``, or ``dense``."""
    p = config.prune
    if p is None:
        return "dense"
    alloc = {
        "uniform": "Uniform",
        "owl": f"OWL (λ={p.owl_lambda:g}, M={p.owl_m:g})",
        "dlp": f"DLP (α={p.dlp_alpha:g})",
        "dsa": f"DSA (λ={p.dsa_lambda:g})",
    }[p.allocation]
    pattern = p.sparsity_type if p.nm else f"{percent(p.sparsity)} unstructured"
    clipped = " · clipped" if p.clip_densities else ""
    return f"{p.method} · {alloc} · {pattern}{clipped}"


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
    record = pipeline.run(config, progress=progress)
    save_record(path, record)
    return record


def run_specs(
    prof: dict, specs: list[dict], results_dir: str | os.PathLike = "results", progress: bool = False
) -> list[dict]:
    """``cached_run`` for each spec (keyword arguments of ``run_config``), logging one line per run."""
    records = []
    for index, spec in enumerate(specs, 1):
        config = run_config(prof, **spec)
        stored = lambda c: _stored_record(record_path(results_dir, c.to_dict()), c) is not None  # noqa: E731
        cached = stored(config)
        if not cached and config.prune is not None and not config.prune.clip_densities:
            # a clipped record exists only because this setting was refused before: use it directly
            clipped = run_config(prof, **spec, clip_densities=True)
            if stored(clipped):
                config, cached = clipped, True
        start = time.perf_counter()
        try:
            record = cached_run(config, results_dir, progress)
        except ConfigError as err:
            # a width too large for this sparsity (a block density outside (0, 1]): clip and
            # redistribute instead, so a sweep still has the point, and say so
            if "outside (0, 1]" not in str(err) or spec.get("clip_densities"):
                raise
            log.warning("%s: %s; running it with clipped densities", run_label(config), err)
            config = run_config(prof, **spec, clip_densities=True)
            record = cached_run(config, results_dir, progress)
        ppl = record.get("perplexity", {}).get("perplexity", float("nan"))
        how = "cached" if cached else f"ran in {time.perf_counter() - start:.0f} s"
        log.info("[%d/%d] %s: perplexity %.4g (%s)", index, len(specs), run_label(config), ppl, how)
        records.append(record)
    return records


def setup_logging(level: int = logging.INFO) -> None:
    """One log line per run on stderr (shown in executed notebooks and by ``papermill --log-output``);
    silences the per-file weight-loading bars of transformers."""
    logger = logging.getLogger("dlp_lib")
    if not any(getattr(h, "_dlp_experiments", False) for h in logger.handlers):
        handler = logging.StreamHandler()
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


def main_specs(prof: dict) -> list[dict]:
    """Dense, then every pruner x allocation at the main sparsity (unstructured)."""
    s = prof["main_sparsity"]
    specs = [dense_spec(prof)]
    specs += [{"method": m, "sparsity": s, "allocation": a} for m in prof["main_methods"] for a in prof["allocations"]]
    return specs


def sweep_specs(prof: dict) -> list[dict]:
    return [
        {"method": m, "sparsity": s, "allocation": a}
        for m, sparsities in prof["sweep"].items()
        for a in prof["allocations"]
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


# rough CPU seconds per run of the quick profile (2 cores), for planning only
QUICK_SECONDS = {"dense": 35, "magnitude": 35, "wanda": 60, "sparsegpt": 150}


def planned_runs(prof: dict) -> list[pipeline.RunConfig]:
    """Every distinct run the six notebooks may need (hyper-parameter runs that turn out infeasible
    are skipped at run time), in notebook order."""
    specs = [dense_spec(prof)] + main_specs(prof) + sweep_specs(prof) + hyper_specs(prof) + nm_specs(prof)
    return [run_config(prof, **spec) for spec in _unique(prof, specs)]


def estimate_seconds(prof: dict, seconds: dict | None = None) -> float:
    """Rough wall time of all planned runs (default: quick-profile seconds per run on 2 CPU cores)."""
    seconds = seconds or QUICK_SECONDS
    return float(sum(seconds["dense" if c.prune is None else c.prune.method] for c in planned_runs(prof)))


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


def owl_column(m: float) -> str:
    return f"owl_outlier_ratio_m{float(m):g}"


def dense_statistics(
    prof: dict, owl_ms=None, progress: bool = False, results_dir: str | os.PathLike | None = None
) -> DenseStatistics:
    """Load the model and calibration windows, take the dense input norms from the pipeline's cache
    (one forward pass the first time), and compute every block's allocation statistics: OWL's outlier
    ratio for each M in ``owl_ms`` (default: the profile's M and its sensitivity grid), DLP's |mean|
    and |median| Wanda score, and the DSA expression (NaN, with ``dsa_error`` set, if not finite).

    With ``results_dir`` the result is also kept there (``dense_statistics/<key>.json``, keyed like the
    run records by the settings), so later notebooks need not load the model again."""
    if owl_ms is None:
        owl_ms = [prof["owl_m"], *prof["hyper_grid"].get("owl_m", [])]
    owl_ms = sorted({float(m) for m in owl_ms})
    path = None
    if results_dir is not None:
        settings = {k: prof[k] for k in ("model", "calibration", "nsamples", "seqlen", "seed", "device", "dtype")}
        key = stable_hash({"settings": settings, "owl_ms": owl_ms, "dsa_graph": prof["dsa_graph"]})
        path = Path(results_dir) / "dense_statistics" / f"{key}.json"
        try:
            stored = json.loads(path.read_text())
            blocks = pd.DataFrame(stored["blocks"])
            return DenseStatistics(stored["facts"], blocks, stored["dsa_error"], stored["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or unreadable: compute
    stats = _compute_dense_statistics(prof, owl_ms, progress)
    if path is not None:
        blocks = stats.blocks.to_dict("list")
        write_json_atomic(
            path, {"facts": stats.facts, "blocks": blocks, "dsa_error": stats.dsa_error, "seconds": stats.seconds}
        )
    return stats


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
        f"{source_name(prof['calibration'], long=True)}",
        "dsa_graph": prof["dsa_graph"],
    }
    del model
    return DenseStatistics(facts=facts, blocks=blocks, dsa_error=dsa_error, seconds=time.perf_counter() - start)


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


# ------------------------------------------------------------------------------------------- tables
def format_perplexity(value) -> str:
    """``12.35``; ``4.92e4`` from 1000 up (the DLP README's compact style); ``–`` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    if abs(value) < 1000:
        return f"{value:.2f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub pipe table of the frame's cells as strings (``bold``: same-shape boolean mask)."""
    cells = frame.map(_format_cell)
    if bold is not None:
        cells = cells.where(~bold.reindex_like(cells).fillna(False).astype(bool), "**" + cells + "**")
    escape = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(escape(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text)).replace("α", r"$\alpha$").replace("λ", r"$\lambda$")


def _looks_numeric(column: pd.Series) -> bool:
    """Numbers or formatted numbers (``4.92e4``, ``–`` for missing): right-aligned in LaTeX."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    try:
        [float(v) for v in column if str(v) not in ("–", "")]
    except ValueError:
        return False
    return True


def to_latex(frame: pd.DataFrame, bold: pd.DataFrame | None = None, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (numbers right-aligned) of the frame's cells; ``bold`` as in to_markdown."""
    cells = frame.map(lambda v: _latex_escape(_format_cell(v)))
    if bold is not None:
        cells = cells.where(~bold.reindex_like(cells).fillna(False).astype(bool), r"\textbf{" + cells + "}")
    align = "".join("r" if _looks_numeric(frame[c]) else "l" for c in frame.columns)
    lines = [f"% {caption}"] if caption else []
    lines += [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(_latex_escape(c) for c in frame.columns) + r" \\",
    ]
    lines.append(r"\midrule")
    lines += [" & ".join(row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame,
    tables_dir: str | os.PathLike,
    name: str,
    formats=("csv", "md"),
    display: pd.DataFrame | None = None,
    bold: pd.DataFrame | None = None,
    caption: str | None = None,
) -> list[Path]:
    """Write ``frame`` as ``<name>.csv`` (raw numbers) and ``display`` (default: ``frame``; formatted
    strings) as ``<name>.md`` / ``<name>.tex``, each written atomically. Returns the paths."""
    from .cache import atomic_path

    display = frame if display is None else display
    out = Path(tables_dir)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            text = frame.to_csv(index=False)
        elif fmt == "md":
            text = (f"{caption}\n\n" if caption else "") + to_markdown(display, bold)
        elif fmt == "tex":
            text = to_latex(display, bold, caption)
        else:
            raise ValueError(f"unknown table format {fmt!r}; use csv, md or tex")
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        paths.append(path)
    return paths


def _ordered(frame: pd.DataFrame, column: str, order) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    return frame.assign(_rank=frame[column].map(rank)).sort_values(["_rank"], kind="stable").drop(columns="_rank")


def main_table(frame: pd.DataFrame, prof: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The DLP README layout: Dense, then each pruner with its allocations (Uniform, OWL, DLP).

    Returns ``(numbers, display, bold)``: numeric table (CSV), formatted strings (Markdown/LaTeX) and
    the mask of each pruner's best (lowest) perplexity.
    """
    frame = frame[(frame["sparsity_type"].isin(["dense", "unstructured"]))]
    rows = []
    dense = frame[frame["method"] == "dense"]
    for _, r in dense.head(1).iterrows():
        rows.append({**dict(r), "method": "dense", "allocation": "none"})
    for method in prof["main_methods"]:
        sub = frame[(frame["method"] == method) & (frame["sparsity"] == prof["main_sparsity"])]
        sub = _ordered(sub, "allocation", prof["allocations"]).drop_duplicates("allocation")
        rows += [dict(r) for _, r in sub.iterrows()]
    numbers = pd.DataFrame(rows)[
        ["method", "allocation", "perplexity", "achieved_sparsity", "prune_seconds", "total_seconds", "key"]
    ].reset_index(drop=True)
    best = numbers.groupby("method")["perplexity"].transform("min")
    is_best = (numbers["perplexity"] == best) & (numbers["method"] != "dense") & numbers["perplexity"].notna()
    previous = numbers["method"].shift()
    display = pd.DataFrame(
        {
            "Method": [METHOD_NAMES[m] if m != p else "" for m, p in zip(numbers["method"], previous)],
            "Layerwise": [ALLOCATION_NAMES[a] for a in numbers["allocation"]],
            model_name(prof): [format_perplexity(v) for v in numbers["perplexity"]],
            "Sparsity (%)": [f"{100 * v:.2f}" for v in numbers["achieved_sparsity"]],
            "Pruning (s)": ["–" if pd.isna(v) else f"{v:.1f}" for v in numbers["prune_seconds"]],
        }
    )
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold[model_name(prof)] = is_best.values
    return numbers, display, bold


def main_table_caption(prof: dict) -> str:
    return (
        f"Perplexity (lower is better) at {percent(prof['main_sparsity'])} unstructured sparsity of the decoder "
        f"linears; best allocation per pruner in bold. Model {model_name(prof)}, evaluation on "
        f"{source_name(prof['eval'], long=True)}, calibration {prof['nsamples']}×{prof['seqlen']} tokens of "
        f"{source_name(prof['calibration'])}; profile '{prof.get('name')}'. Sparsity = achieved; Pruning = "
        "seconds of the pruning pass."
    )


def write_main_table_json(path: str | os.PathLike, numbers: pd.DataFrame, records: list[dict], prof: dict) -> None:
    """Numbers plus the full run configurations, per-block densities and timings, for later notebooks."""
    by_key = {config_key(r["config"]): r for r in records}
    rows = []
    for row in numbers.to_dict("records"):
        record = by_key[row["key"]]
        allocation = record.get("allocation") or {}
        rows.append(
            {
                **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()},
                "block_densities": allocation.get("densities"),
                "config": record["config"],
                "timings": record.get("timings"),
                "versions": record.get("versions"),
                "hardware": record.get("hardware"),
            }
        )
    payload = {
        "caption": main_table_caption(prof),
        "profile": {k: v for k, v in prof.items()},
        "rows": rows,
    }
    write_json_atomic(path, payload)


def sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[frame["sparsity_type"] == "unstructured"]
    columns = ["method", "allocation", "sparsity", "achieved_sparsity", "perplexity", "prune_seconds", "key"]
    return frame.sort_values(["method", "allocation", "sparsity"])[columns].reset_index(drop=True)


def nm_table(records: list[dict]) -> pd.DataFrame:
    """One row per N:M run, with the range of per-block N (zeros per group) the allocation chose."""
    rows = []
    for record in records:
        row = record_row(record)
        allocation = record.get("allocation") or {}
        ns = [n for n, _ in allocation.get("block_nm") or []]
        row["block_n_range"] = f"{min(ns)}–{max(ns)}" if ns else "uniform"
        rows.append(row)
    columns = ["method", "allocation", "sparsity_type", "block_n_range", "achieved_sparsity", "perplexity"]
    frame = pd.DataFrame(rows)
    return frame[columns + ["prune_seconds", "key"]].reset_index(drop=True)


def nm_caption(prof: dict) -> str:
    return (
        "Perplexity (lower is better) with N:M sparsity (N zeros in every group of M weights along the input "
        "dimension). Allocated: each block gets an integer N chosen from the allocation's densities, with mean "
        f"exactly N over the blocks. Model {model_name(prof)}, evaluation on {source_name(prof['eval'], long=True)}; "
        f"profile '{prof.get('name')}'."
    )


def nm_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Pattern": table["sparsity_type"],
            "Method": [METHOD_NAMES[m] for m in table["method"]],
            "Layerwise": [ALLOCATION_NAMES[a] for a in table["allocation"]],
            "N per block": table["block_n_range"],
            "Sparsity (%)": [f"{100 * v:.2f}" for v in table["achieved_sparsity"]],
            "Perplexity": [format_perplexity(v) for v in table["perplexity"]],
        }
    )


# ------------------------------------------------------------------------------------------ figures
def _style():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def save_figure(fig, figures_dir: str | os.PathLike, name: str, formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.pdf``, atomically."""
    from .cache import atomic_path

    paths = []
    for fmt in formats:
        path = Path(figures_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _ppl_axis(ax, dense: float | None = None):
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale, lower is better)")
    if dense is not None:
        ax.axhline(dense, color="black", linestyle="--", linewidth=1, label=f"dense ({dense:.2f})")


def _finish_axes(fig, block_axes=()):
    """Readable ticks: integer block indices; plain numbers on log axes spanning less than ~a decade
    (instead of 1.07x10^2 style minor labels)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    for ax in block_axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in fig.axes:
        if ax.get_yscale() != "log":
            continue
        low, high = ax.get_ylim()
        if low > 0 and high / low < 20:
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())


def _headroom(ax, values, factor: float = 4.0):
    """Room above the tallest bar of a log axis for its label."""
    values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if values:
        ax.set_ylim(top=max(values) * factor)


def _legend_outside(ax, title: str):
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plot_dense_block_statistics(stats: DenseStatistics, prof: dict):
    """Per-block OWL outlier ratio and DLP |mean Wanda score| of the dense model."""
    import matplotlib.pyplot as plt

    _style()
    blocks = stats.blocks
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    column = owl_column(prof["owl_m"])
    axes[0].bar(blocks["block"], blocks[column], color=ALLOCATION_COLORS["owl"])
    axes[0].set_ylabel(f"outlier ratio (%)\nscores > {prof['owl_m']:g}× block mean")
    axes[0].set_title("OWL statistic (more outliers → denser block)")
    stat = prof["dlp_statistic"]
    axes[1].bar(blocks["block"], blocks[f"dlp_abs_{stat}"], color=ALLOCATION_COLORS["dlp"])
    axes[1].set_ylabel(f"|{stat}| Wanda score")
    axes[1].set_title("DLP statistic (larger → less important → sparser block)")
    axes[1].set_xlabel("decoder block index")
    fig.suptitle(f"Dense per-block allocation statistics — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig, block_axes=axes)
    fig.tight_layout()
    return fig


def plot_allocation(frame: pd.DataFrame, prof: dict, sparsity: float | None = None):
    """Per-block sparsity of each allocation (lines) above the per-block outlier ratio (bars)."""
    import matplotlib.pyplot as plt

    _style()
    sparsity = prof["main_sparsity"] if sparsity is None else sparsity
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for allocation in ["uniform", "owl", "dlp", "dsa"]:
        column = f"sparsity_{allocation}"
        if column in frame:
            style = dict(marker="o", markersize=3.5) if allocation != "uniform" else dict(linestyle="--")
            top.plot(
                frame["block"],
                100 * frame[column],
                color=ALLOCATION_COLORS[allocation],
                label=ALLOCATION_NAMES[allocation],
                **style,
            )
    top.set_ylabel("block sparsity (%)")
    top.set_title(f"Layer-wise sparsity at {percent(sparsity)} overall")
    top.legend(title="allocation", ncol=4, loc="best")
    bottom.bar(frame["block"], frame["owl_outlier_ratio"], color="#9ecae1")
    bottom.set_ylabel(f"outlier ratio (%)\n(M = {prof['owl_m']:g})")
    bottom.set_xlabel("decoder block index")
    fig.suptitle(data_tag(prof), fontsize=10)
    _finish_axes(fig, block_axes=[top, bottom])
    fig.tight_layout()
    return fig


def plot_main_table(numbers: pd.DataFrame, prof: dict):
    """Grouped bars: perplexity per pruner (groups) and allocation (colours), log scale, dense line."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    data = numbers[numbers["method"] != "dense"].assign(
        Pruner=lambda d: d["method"].map(METHOD_NAMES), Allocation=lambda d: d["allocation"].map(ALLOCATION_NAMES)
    )
    dense = numbers.loc[numbers["method"] == "dense", "perplexity"]
    fig, ax = plt.subplots(figsize=(9, 5))
    palette = {ALLOCATION_NAMES[a]: ALLOCATION_COLORS[a] for a in prof["allocations"]}
    sns.barplot(data=data, x="Pruner", y="perplexity", hue="Allocation", palette=palette, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, labels=[format_perplexity(b.get_height()) for b in container], fontsize=8, padding=2)
    _ppl_axis(ax, float(dense.iloc[0]) if len(dense) else None)
    _headroom(ax, data["perplexity"].tolist())
    ax.set_xlabel("")
    ax.set_title(
        f"Perplexity at {percent(prof['main_sparsity'])} unstructured sparsity — {data_tag(prof)}", fontsize=11
    )
    _legend_outside(ax, "allocation")
    _finish_axes(fig)
    fig.tight_layout()
    return fig


def plot_sparsity_sweep(table: pd.DataFrame, prof: dict, dense: float | None = None):
    """Perplexity vs target sparsity, one panel per pruner, one line per allocation, log y."""
    import matplotlib.pyplot as plt

    _style()
    methods = [m for m in prof["sweep"] if m in set(table["method"])]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 4.5), sharey=True, squeeze=False)
    ticks = sorted({100 * s for s in table["sparsity"]})
    for ax, method in zip(axes[0], methods):
        ax.set_xticks(ticks)
        ax.set_xlim(min(ticks) - 5, max(ticks) + 5)
        for allocation in prof["allocations"]:
            sub = table[(table["method"] == method) & (table["allocation"] == allocation)].sort_values("sparsity")
            if len(sub):
                ax.plot(
                    100 * sub["sparsity"],
                    sub["perplexity"],
                    marker="o",
                    color=ALLOCATION_COLORS[allocation],
                    label=ALLOCATION_NAMES[allocation],
                )
        _ppl_axis(ax, dense)
        ax.set_title(METHOD_NAMES[method])
        ax.set_xlabel("target sparsity of decoder linears (%)")
    _legend_outside(axes[0][-1], "allocation")
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.suptitle(f"Perplexity vs sparsity — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig)
    fig.tight_layout()
    return fig


def plot_hyperparameters(summary: pd.DataFrame, blocks: pd.DataFrame, table: pd.DataFrame, prof: dict):
    """Top row: per-block sparsity for each value of DLP α, OWL λ and OWL M (allocation only).
    Bottom row: perplexity of the pruned runs against the same value."""
    import matplotlib.pyplot as plt
    from matplotlib import cm

    _style()
    names = [n for n in HYPER_ALLOCATION if n in prof["hyper_grid"]]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 8), squeeze=False)
    method = prof["hyper_pruned"].get("method", "wanda")
    for col, name in enumerate(names):
        top, bottom = axes[0][col], axes[1][col]
        sub = blocks[blocks["parameter"] == name] if len(blocks) else blocks
        values = sorted(set(sub["value"])) if len(sub) else []
        colors = cm.viridis([i / max(1, len(values) - 1) for i in range(len(values))])
        for color, value in zip(colors, values):
            curve = sub[sub["value"] == value]
            width = 2.5 if math.isclose(value, prof[name]) else 1.2
            top.plot(curve["block"], 100 * curve["sparsity"], color=color, linewidth=width, label=f"{value:g}")
        infeasible = summary[(summary["parameter"] == name) & ~summary["feasible"].astype(bool)]["value"]
        title = f"{HYPER_NAMES[name]} (thick line: default {prof[name]:g})"
        if len(infeasible):
            title += f"\nimpossible (a block outside (0, 1]): {', '.join(f'{v:g}' for v in infeasible)}"
        top.set_title(title, fontsize=10)
        top.set_xlabel("decoder block index")
        top.set_ylabel("block sparsity (%)")
        top.legend(title=HYPER_NAMES[name].split(" (")[0], fontsize=7, ncol=2)
        pruned = table[(table["parameter"] == name) & table["perplexity"].notna()].sort_values("value")
        grid = prof["hyper_grid"][name]
        pad = 0.05 * (max(grid) - min(grid) or 1.0)
        bottom.set_xlim(min(grid) - pad, max(grid) + pad)
        for value, ppl in zip(pruned["value"], pruned["perplexity"]):
            bottom.annotate(
                format_perplexity(ppl), (value, ppl), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
            )
        if len(pruned):
            bottom.plot(
                pruned["value"], pruned["perplexity"], marker="o", color=ALLOCATION_COLORS[HYPER_ALLOCATION[name]]
            )
            bottom.set_yscale("log")
        else:
            bottom.text(
                0.5, 0.5, "no pruned runs in this profile", ha="center", va="center", transform=bottom.transAxes
            )
        bottom.set_xlabel(HYPER_NAMES[name])
        bottom.set_ylabel(f"{METHOD_NAMES.get(method, method)} perplexity (log)")
        bottom.set_title(f"{METHOD_NAMES.get(method, method)} at {percent(prof['main_sparsity'])}", fontsize=10)
    fig.suptitle(f"Hyper-parameter sensitivity at {percent(prof['main_sparsity'])} — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig, block_axes=axes[0])
    fig.tight_layout()
    return fig


def plot_nm(table: pd.DataFrame, prof: dict, dense: float | None = None):
    """Grouped bars: N:M perplexity per pruner (panels), pattern (groups) and allocation (colours)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    methods = [m for m in prof["nm"] if m in set(table["method"])]
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods) + 2, 4.5), sharey=True, squeeze=False)
    allocations = [a for a in ALLOCATION_NAMES if a in set(table["allocation"])]
    palette = {ALLOCATION_NAMES[a]: ALLOCATION_COLORS[a] for a in allocations}
    for ax, method in zip(axes[0], methods):
        sub = table[table["method"] == method].assign(Allocation=lambda d: d["allocation"].map(ALLOCATION_NAMES))
        sns.barplot(
            data=sub,
            x="sparsity_type",
            y="perplexity",
            hue="Allocation",
            palette=palette,
            ax=ax,
            hue_order=[ALLOCATION_NAMES[a] for a in allocations],
        )
        for container in ax.containers:
            ax.bar_label(container, labels=[format_perplexity(b.get_height()) for b in container], fontsize=8)
        _ppl_axis(ax, dense)
        _headroom(ax, table["perplexity"].tolist())
        ax.set_title(METHOD_NAMES[method])
        ax.set_xlabel("N:M pattern (N zeros in every M weights)")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    _legend_outside(axes[0][-1], "allocation")
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.suptitle(f"N:M semi-structured sparsity — {data_tag(prof)}", fontsize=11)
    _finish_axes(fig)
    fig.tight_layout()
    return fig
