"""The search's fitness on a model: prune with an expression's allocation, perplexity on calibration-side windows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..allocation import allocate, dsa_value
from ..cache import cache_root, stable_hash, write_json_atomic
from ..config import (
    BY_MODEL,
    DEFAULT_MODEL,
    DSA_README_GRAPH,
    METHODS,
    RUN_DEFAULTS,
    ConfigError,
    PruneConfig,
    check_device,
    check_int,
    default_sources,
    hessian_for_device,
    without_reference_arithmetic,
)
from .candidates import CachedFitness, Candidate
from .expressions import WINDOW_SEED_OFFSET


@dataclass(frozen=True)
class FitnessSettings:
    """What a candidate's fitness measures: the pruned model's perplexity on ``windows`` search windows
    of ``seqlen`` tokens drawn from the calibration side of ``calibration`` (seed ``seed`` +
    WINDOW_SEED_OFFSET; they may overlap the calibration windows, never the evaluation text), after
    pruning with ``method`` at ``sparsity`` (calibration: ``nsamples`` windows, seed ``seed``) with the
    DSA template of width ``dsa_lambda``. The dense statistics come from the same calibration windows.
    ``sparsegpt_sweep``/``sparsegpt_hessian``: SparseGPT's arithmetic, as in PruneConfig."""

    model: str = DEFAULT_MODEL
    method: str = "wanda"
    sparsity: float = 0.7
    dsa_lambda: float = 0.08
    calibration: str = BY_MODEL  # the embedded extracts for the embedded model, else C4 (config.default_sources)
    nsamples: int = RUN_DEFAULTS["nsamples"]
    seqlen: int = RUN_DEFAULTS["seqlen"]
    windows: int = 16
    seed: int = RUN_DEFAULTS["seed"]
    batch_size: int = RUN_DEFAULTS["batch_size"]
    eval_batch_size: int = RUN_DEFAULTS["eval_batch_size"]
    device: str = "cpu"
    dtype: str = RUN_DEFAULTS["dtype"]
    trust_remote_code: bool = False
    sparsegpt_sweep: str = "auto"
    sparsegpt_hessian: str = "auto"

    def __post_init__(self):
        if self.calibration is BY_MODEL:
            object.__setattr__(self, "calibration", default_sources(self.model)[0])
        # the candidates' cache key names the Hessian arithmetic that runs on this device (PruneConfig.on_device)
        object.__setattr__(self, "sparsegpt_hessian", hessian_for_device(self.sparsegpt_hessian, self.device))
        if self.method not in METHODS:
            raise ConfigError(f"unknown prune method {self.method!r}; use one of {', '.join(METHODS)}")
        for name in ("nsamples", "windows", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seqlen", self.seqlen, 2)
        check_int("seed", self.seed, 0)
        check_device(self.device)
        self.prune_config(DSA_README_GRAPH)  # sparsity and lambda checked by PruneConfig

    def prune_config(self, expression: str, allocation: str = "dsa", **hyper) -> PruneConfig:
        """The pruning of a candidate: the DSA ``expression`` (or another ``allocation`` with ``hyper``)."""
        if allocation == "dsa":
            hyper = {"dsa_graph": expression, "dsa_lambda": self.dsa_lambda, **hyper}
        return PruneConfig(
            method=self.method,
            sparsity=self.sparsity,
            allocation=allocation,
            sparsegpt_sweep=self.sparsegpt_sweep,
            sparsegpt_hessian=self.sparsegpt_hessian,
            **hyper,
        )

    def to_dict(self) -> dict:
        """The settings as a dict; SparseGPT's arithmetic by PruneConfig's rule (the sweep never, the Hessian's
        only where a SparseGPT search does not use the reference's), so other searches keep their cache keys."""
        return without_reference_arithmetic(dataclasses.asdict(self))


class ProxyFitness(CachedFitness):
    """The fitness of expressions on a real model: loaded once, its dense linear weights kept to
    restore before each candidate, the dense input norms computed once (pipeline's cache)."""

    def __init__(self, settings: FitnessSettings, progress: bool = True, cache_dir: str | Path | None = None):
        from .. import memory, pipeline
        from ..data import calibration_windows, check_source
        from ..layers import decoder_blocks, linear_sublayers
        from ..models import load_model

        check_source(settings.calibration)
        self.settings = settings
        self.progress = progress
        self.model, tokenizer = load_model(settings.model, settings.dtype, settings.device, settings.trust_remote_code)
        s = settings
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and s.seqlen > positions:
            raise ConfigError(
                f"--seqlen {s.seqlen} is longer than the model's {positions} positions; use {positions} or less"
            )
        memory.check_memory(self.model, max(s.nsamples, s.windows), s.seqlen, s.batch_size, s.method, s.device)
        self.calibration = calibration_windows(s.calibration, tokenizer, s.nsamples, s.seqlen, s.seed)
        self.windows = calibration_windows(s.calibration, tokenizer, s.windows, s.seqlen, s.seed + WINDOW_SEED_OFFSET)
        self.norms, _ = pipeline.cached_dense_norms(self.model, self.calibration, s.batch_size, progress)
        self.linears = [linear_sublayers(block) for block in decoder_blocks(self.model)]
        # the dense weights in CPU memory (not a second copy on the GPU); restored before every candidate
        self.dense = [
            {n: lin.weight.detach().to("cpu", copy=True) for n, lin in linears.items()} for linears in self.linears
        ]
        self.sizes = [sum(w.numel() for w in weights.values()) for weights in self.dense]
        digest = lambda t: hashlib.sha256(t.numpy().tobytes()).hexdigest()  # noqa: E731
        self.context = {
            "settings": {k: v for k, v in settings.to_dict().items() if k not in ("batch_size", "eval_batch_size")},
            "model": pipeline.model_fingerprint(self.model),
            "calibration": digest(self.calibration),
            "windows": digest(self.windows),
        }
        root = Path(cache_dir) if cache_dir is not None else cache_root() / "dsa_search"
        super().__init__(root / stable_hash(self.context))

    @torch.no_grad()
    def _statistics(self, expressions: list[str]) -> dict[str, list[float] | str]:
        """Every expression on every block, block by block: one block's Wanda scores at a time."""
        from ..scores import block_wanda_scores

        values: dict[str, list[float] | str] = {e: [] for e in expressions}
        for index, (weights, norms) in enumerate(zip(self.dense, self.norms)):
            scores = block_wanda_scores(weights, norms).to(torch.float64)
            for expression in expressions:
                if isinstance(values[expression], str):
                    continue
                try:
                    values[expression].append(dsa_value(scores, expression, block=index))
                except ConfigError as err:
                    values[expression] = str(err)
        return values

    def _densities(self, expression: str, statistic: list[float]) -> list[float]:
        prune = self.settings.prune_config(expression)
        return [float(d) for d in allocate(statistic, prune, weights=self.sizes)]

    def restore(self) -> None:
        """Put the dense weights back (pruning works in place)."""
        for linears, weights in zip(self.linears, self.dense):
            for name, linear in linears.items():
                linear.weight.data.copy_(weights[name])

    @torch.no_grad()
    def _run(self, densities: list[float]) -> float:
        from ..evaluation import perplexity
        from ..prune import prune_model

        s = self.settings
        self.restore()
        prune = s.prune_config("", allocation="uniform")  # the per-block targets carry the allocation
        calibration = self.calibration if s.method != "magnitude" else None
        targets = [1.0 - d for d in densities]
        prune_log = logging.getLogger("dlp_lib.prune")
        level = prune_log.level
        prune_log.setLevel(logging.WARNING)  # one "pruned ..." line per candidate would drown the search's log
        try:
            prune_model(self.model, prune, calibration, targets, None, s.batch_size, progress=False)
        finally:
            prune_log.setLevel(level)
        return perplexity(self.model, self.windows, s.eval_batch_size, progress=False)["perplexity"]

    def allocation_fitness(self, allocation: str, **hyper) -> Candidate:
        """The same fitness for a named allocation (``uniform``, ``owl``, ``dlp``; hyper-parameters as
        PruneConfig fields), for comparison with the searched expressions; cached like them."""
        from ..scores import block_statistics

        prune = self.settings.prune_config("", allocation=allocation, **hyper)
        label = f"{allocation}:{json.dumps(hyper, sort_keys=True)}"
        cached = self.cached(label)
        if cached is not None:
            return cached
        statistic = block_statistics(self.dense, self.norms, prune)
        densities = [float(d) for d in allocate(statistic, prune, weights=self.sizes)]
        start = time.perf_counter()
        candidate = Candidate(label, self._run(densities), None, densities, statistic, time.perf_counter() - start)
        write_json_atomic(self._path(label), candidate.to_dict())
        return candidate
