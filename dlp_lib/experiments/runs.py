"""Runs and their cache: a run configuration from a profile and a spec, one record per configuration."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from .. import heap, pipeline
from ..config import (
    ConfigError,
    PruneConfig,
    pattern_sparsity,
)
from ..recovery import RecoveryConfig
from ..results import load_record, record_path, save_record
from .labels import percent
from .profiles import _FLOAT_FIELDS, ARITHMETIC_FIELDS, HYPER_FIELDS, RUN_FIELDS

log = logging.getLogger(__name__)


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
    # evopress: a search result file, atp_beta: a searched slope; neither is a profile setting
    unknown = set(hyper) - set(HYPER_FIELDS) - {"evopress", "atp_beta"}
    if unknown:
        known = ", ".join(HYPER_FIELDS)
        raise ConfigError(f"unknown hyper-parameter(s) {sorted(unknown)}; known: {known}, evopress, atp_beta")
    params.update(hyper)
    params = {k: float(v) if k in _FLOAT_FIELDS and v is not None else v for k, v in params.items()}
    sparsity = pattern_sparsity(sparsity_type, sparsity)
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
        "evopress": f"EvoPress {p.to_dict()['evopress'] if p.allocation == 'evopress' else ''}",
        "alphapruning": f"AlphaPruning (ε={p.alpha_epsilon:g}, {p.alpha_estimator})",
        "atp": f"ATP (β={p.atp_beta:g})" if p.atp_beta is not None else "ATP",
        "lsa": f"LSA (β={p.width:g})" if p.allocation == "lsa" else "LSA",
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


class RunList(list):
    """The records of ``run_specs``, in order, with ``runs``: one row per record saying which
    configuration it is, where its record lies and whether it was computed now or read from that file
    (``frames.runs_table`` shows them)."""

    def __init__(self, records: list[dict], runs: list[dict]):
        super().__init__(records)
        self.runs = runs


def run_specs(
    prof: dict, specs: list[dict], results_dir: str | os.PathLike = "results", progress: bool = False
) -> RunList:
    """``run_spec`` for each spec. A run that is computed logs one line when it ends (someone is
    waiting); a record read from ``results_dir`` logs nothing: the returned list's ``runs`` says which
    was which."""
    records, runs = [], []
    for index, spec in enumerate(specs, 1):
        start = time.perf_counter()
        config, record, cached = run_spec(prof, spec, results_dir, progress)
        path = record_path(results_dir, config.to_dict())
        if not cached:
            seconds = time.perf_counter() - start
            log.info("[%d/%d] %s: %s (ran in %.0f s)", index, len(specs), run_label(config), headline(record), seconds)
        runs.append({"run": run_label(config), "record": path.name, "computed": not cached})
        records.append(record)
    return RunList(records, runs)


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


def uses_calibration(method: str | None, allocation: str | None) -> bool:
    """Whether a run's result depends on the calibration windows (and so on the seed): every pruner
    but magnitude with a uniform allocation (the dense model reads none either)."""
    if method in (None, "dense"):
        return False
    return method != "magnitude" or allocation not in (None, "uniform")
