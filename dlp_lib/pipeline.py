"""One run end to end: load the model and data, allocate, prune, evaluate, and return a result record.

This is what the CLI and the notebooks call. Everything is validated before the model is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .allocation import nm_per_block
from .cache import cache_root, check_cache_root
from .config import (
    BY_MODEL,
    RUN_DEFAULTS,
    WEIGHT_ALLOCATIONS,
    ConfigError,
    PruneConfig,
    check_device,
    check_int,
    default_sources,
    is_embedded_model,
)
from .data import (
    calibration_windows,
    check_default_sources,
    check_source,
    check_training_source,
    evaluation_windows,
    training_windows,
)
from .evaluation import perplexity
from .layers import decoder_blocks, linear_sublayers
from .memory import check_memory
from .model_allocation import (  # noqa: F401  (cached_dense_norms, evopress_block_targets: used as pipeline.*)
    block_allocation,
    cached_dense_norms,
    dense_norms_path,
    dense_statistics,
    evopress_allocation,
    evopress_block_targets,
    model_fingerprint,
)
from .models import DEFAULT_MODEL, check_model_spec, load_model
from .prune import decoder_sparsity, prune_model
from .recovery import RecoveryConfig, check_recovery, merge_masked, recover
from .results import hardware, package_versions
from .sparsegpt import check_no_legacy_environment, sweep_backend

log = logging.getLogger(__name__)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result. ``prune=None`` evaluates the dense model.

    ``calibration`` and ``eval`` (``None``: no perplexity) not given are the model's defaults
    (``config.default_sources``): the embedded extracts for the embedded model, the papers' C4 and
    WikiText-2 test for any other. The instance holds the source it resolved to, so its ``to_dict``
    (a record's key) is the one the same sources given explicitly make."""

    model: str = DEFAULT_MODEL
    prune: PruneConfig | None = field(default_factory=PruneConfig)
    calibration: str = BY_MODEL
    nsamples: int = RUN_DEFAULTS["nsamples"]
    seqlen: int = RUN_DEFAULTS["seqlen"]
    seed: int = RUN_DEFAULTS["seed"]
    eval: str | None = BY_MODEL
    eval_windows: int | None = None
    batch_size: int = RUN_DEFAULTS["batch_size"]
    eval_batch_size: int = RUN_DEFAULTS["eval_batch_size"]
    device: str = "cpu"
    dtype: str = RUN_DEFAULTS["dtype"]
    trust_remote_code: bool = False
    # keep the model in CPU memory; blocks visit ``device`` one at a time (does not change results)
    offload: bool = False
    # spread the model over several GPUs with accelerate (one of DEVICE_MAPS); None = ``device``
    device_map: str | None = None
    # zero-shot accuracy with lm-eval (dlp_lib.zeroshot) on the pruned in-memory model; None = skip
    zero_shot_tasks: tuple[str, ...] | None = None
    zero_shot_limit: int | None = None
    zero_shot_batch_size: int = 8
    zero_shot_bos: bool = False
    zero_shot_source: str = "local"
    # LoRA recovery after pruning (dlp_lib.recovery); None = none. With it, ``perplexity`` is still the
    # pruned model's, the ``recovery`` section has the adapter's and the merged model's, and zero-shot
    # accuracy is measured after recovery (adapter unmerged)
    recovery: RecoveryConfig | None = None

    def __post_init__(self):
        self._check_types()
        defaults = dict(zip(("calibration", "eval"), default_sources(self.model)))
        defaulted = tuple(name for name in defaults if getattr(self, name) is BY_MODEL)
        for name in defaulted:
            object.__setattr__(self, name, defaults[name])
        object.__setattr__(self, "_defaulted", defaulted)  # not a field: no part of the record's key
        if self.prune is not None:  # the record's key names the Hessian arithmetic that runs on this device
            object.__setattr__(self, "prune", self.prune.on_device(self.device))
        for name in ("nsamples", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seqlen", self.seqlen, 2)
        check_int("seed", self.seed, 0)
        if self.eval_windows is not None:
            check_int("eval_windows", self.eval_windows, 1, hint=" (or None for all)")
        check_device(self.device)
        if self.zero_shot_limit is not None:
            check_int("zero_shot_limit", self.zero_shot_limit, 1, hint=" (examples per task, or None for all)")
        check_int("zero_shot_batch_size", self.zero_shot_batch_size, 1)
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise ConfigError(f"unknown device_map {self.device_map!r}; use one of {', '.join(DEVICE_MAPS)}")
        if self.device_map is not None and self.offload:
            raise ConfigError("use either --offload (one GPU, model in CPU memory) or --device_map (several GPUs)")
        if self.offload and self.zero_shot_tasks is not None:
            raise ConfigError("zero-shot evaluation needs the whole model on one device; drop --offload for it")
        if self.recovery is not None:
            if self.prune is None:
                raise ConfigError("LoRA recovery needs a pruned model; pick a --prune_method (not dense)")
            if self.offload or self.device_map is not None:
                raise ConfigError("LoRA recovery trains the whole model on one device; drop --offload/--device_map")
        if self.zero_shot_tasks is not None:
            tasks = self.zero_shot_tasks
            object.__setattr__(self, "zero_shot_tasks", tuple(tasks.split(",") if isinstance(tasks, str) else tasks))

    def _check_types(self) -> None:
        """The fields whose wrong type would fail later with an unrelated error (a method name given as
        ``prune``, a number as a source, ...)."""
        if self.prune is not None and not isinstance(self.prune, PruneConfig):
            example = f"PruneConfig(method={self.prune!r})" if isinstance(self.prune, str) else "PruneConfig(...)"
            raise ConfigError(f"prune must be a PruneConfig or None (dense); got {self.prune!r}: pass {example}")
        if self.recovery is not None and not isinstance(self.recovery, RecoveryConfig):
            raise ConfigError(f"recovery must be a RecoveryConfig or None; got {self.recovery!r}")
        for name in ("model", "calibration", "eval", "dtype", "zero_shot_source"):
            value = getattr(self, name)
            if not isinstance(value, str) and value is not BY_MODEL and not (name == "eval" and value is None):
                raise ConfigError(f"{name} must be a string; got {value!r}")
        tasks = self.zero_shot_tasks
        names = isinstance(tasks, (list, tuple)) and all(isinstance(t, str) for t in tasks)
        if tasks is not None and not (isinstance(tasks, str) or names):
            raise ConfigError(f"zero_shot_tasks must be task names (e.g. ('boolq', 'piqa')); got {tasks!r}")
        for name in ("trust_remote_code", "offload", "zero_shot_bos"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False; got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """The settings as a dict. The zero-shot fields appear only when zero-shot evaluation is on, so
        the records (and record hashes) of runs without it stay as they were before those fields."""
        d = dataclasses.asdict(self)
        if self.prune is not None:
            d["prune"] = self.prune.to_dict()  # its own rules for which fields appear
        if not self.offload:
            d.pop("offload")  # an execution option: records without it keep their hashes
        if self.device_map is None:
            d.pop("device_map")
        if self.zero_shot_tasks is None:
            for name in ZERO_SHOT_FIELDS:
                d.pop(name)
        else:
            d["zero_shot_tasks"] = list(self.zero_shot_tasks)
        if self.recovery is None:
            d.pop("recovery")
        else:
            d["recovery"] = self.recovery.to_dict()
        return d

    @property
    def reads_calibration(self) -> bool:
        """Whether the run reads calibration windows: to prune (not magnitude with a uniform allocation),
        or to train a recovery without its own ``data``."""
        prune = self.prune
        pruning = prune is not None and (prune.method != "magnitude" or prune.needs_dense_statistics)
        return pruning or (self.recovery is not None and not self.recovery.data)

    @property
    def defaulted_sources(self) -> dict[str, str]:
        """``--calibration`` / ``--eval`` -> the source the model's default gave it, for those the run
        reads and was not given (a RunConfig made by ``dataclasses.replace`` counts its sources as given)."""
        flags = {"calibration": "--calibration", "eval": "--eval"}
        read = {"calibration": self.reads_calibration, "eval": self.eval is not None}
        return {flags[name]: getattr(self, name) for name in getattr(self, "_defaulted", ()) if read[name]}

    @property
    def recovery_source(self) -> str | None:
        """The text the recovery trains on: its own ``data``, else the calibration source."""
        if self.recovery is None:
            return None
        return self.recovery.data or self.calibration


ZERO_SHOT_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name.startswith("zero_shot_"))


def gpu_count() -> int:
    """CUDA devices visible to this process (a function, so tests can run the device_map path on a CPU)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def validate(config: RunConfig) -> None:
    """Check the device, the model and data sources (a hub one: in the cache or reachable; one a model other
    than the embedded one reads by default: reachable, not in offline mode) before any model work. (A RunConfig
    for CUDA can be made without a GPU: the grid plans GPU jobs on a login node.)"""
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but CUDA is not available; use --device cpu")
    if config.device_map is not None and gpu_count() == 0:
        raise ConfigError(f"--device_map {config.device_map} spreads the model over GPUs; this machine has none")
    if config.prune is not None and config.prune.method == "sparsegpt":
        check_no_legacy_environment()
        sweep_backend(config.device, config.prune.sparsegpt_sweep, config.prune.nm)  # one that cannot run here
    check_cache_root()  # windows, statistics and converted models are cached as they are made
    check_model_spec(config.model, network=True)
    defaulted = config.defaulted_sources
    check_default_sources(config.model, defaulted)  # the papers' data from the hub: offline, refused here
    if config.prune is not None and (config.prune.method != "magnitude" or config.prune.needs_dense_statistics):
        check_source(config.calibration, network="--calibration" not in defaulted)  # a default: checked above
    if config.eval:
        check_source(config.eval, network="--eval" not in defaulted)
    if config.recovery is not None:
        check_training_source(config.recovery_source, config.eval)
    if config.zero_shot_tasks is not None:
        from .zeroshot import check_zero_shot

        check_zero_shot(
            config.zero_shot_tasks, config.zero_shot_source, config.zero_shot_limit, config.zero_shot_batch_size
        )


def check_model_fit(model, config: RunConfig) -> None:
    """Checks that need the loaded model, before any data or pruning work: windows within the model's
    positions, and an N:M group size M that divides every decoder linear's input size."""
    prune = config.prune
    windows = (
        config.eval is not None
        or (prune is not None and (prune.method != "magnitude" or prune.needs_dense_statistics))
        or (config.recovery is not None and not config.recovery.seqlen)
    )  # whether any window of ``seqlen`` tokens is read (magnitude with zero-shot only reads none)
    positions = getattr(model.config, "max_position_embeddings", None)
    if windows and isinstance(positions, int) and config.seqlen > positions:
        raise ConfigError(
            f"--seqlen {config.seqlen} is longer than the model's {positions} positions; use --seqlen {positions} "
            "or less (the papers use 2048 on LLaMA)"
        )
    if prune is not None and (prune.method != "magnitude" or prune.needs_dense_statistics):
        # with a device_map the calibration activations live where the first block does
        device = config.device if config.device_map is None else next(decoder_blocks(model)[0].parameters()).device
        check_memory(model, config.nsamples, config.seqlen, config.batch_size, prune.method, device, config.offload)
    if prune is not None and prune.allocation == "evopress":
        evopress_allocation(model, prune)  # searched on this model's linears, before any data work
    if prune is not None and prune.allocation == "lsa":
        check_lsa_fit(model, prune)
    nm = config.prune.nm if config.prune is not None else None
    if nm:
        n, m = nm
        sizes = sorted({lin.in_features for b in decoder_blocks(model) for lin in linear_sublayers(b).values()})
        if any(size % m for size in sizes):
            fits = " or ".join(f"{k // 2}:{k}" for k in (4, 8, 16) if all(size % k == 0 for size in sizes))
            raise ConfigError(
                f"{n}:{m} sparsity needs every decoder linear's input size to be a multiple of M={m}; this model's are "
                f"{', '.join(map(str, sizes))}: use a pattern whose M divides them (e.g. {fits or 'unstructured'})"
            )


def check_lsa_fit(model, prune: PruneConfig) -> None:
    """LSA removes ``int(group * fraction)`` columns from every group, the last one too: it must have them."""
    per_group = int(prune.lsa_group * prune.lsa_fraction)
    for size in sorted({lin.in_features for b in decoder_blocks(model) for lin in linear_sublayers(b).values()}):
        if 0 < size % prune.lsa_group < per_group:
            raise ConfigError(
                f"LSA: a {size}-column linear's last group of {size % prune.lsa_group} columns is narrower than the "
                f"{per_group} removed per group; choose --lsa_group dividing {size}"
            )


def run(config: RunConfig, progress: bool = True, save_model: str | Path | None = None) -> dict:
    """Run one configuration and return its result record (a JSON-serialisable dict)."""
    validate(config)
    defaulted = ", ".join(f"{flag} {source}" for flag, source in config.defaulted_sources.items())
    if defaulted and not is_embedded_model(config.model):
        log.info("no data given for %s: the papers' %s", config.model, defaulted)
    timings = {}
    start = time.perf_counter()
    home = "cpu" if config.offload else config.device
    offload_device = config.device if config.offload else None
    model, tokenizer = load_model(config.model, config.dtype, home, config.trust_remote_code, config.device_map)
    timings["load_model"] = time.perf_counter() - start
    check_model_fit(model, config)
    training = None
    if config.recovery is not None:  # targets, window length and the training text: before pruning
        check_recovery(model, config.recovery, config.recovery.seqlen or config.seqlen)
        training = recovery_windows(tokenizer, config)
    record = {"config": config.to_dict(), "versions": package_versions(), "hardware": hardware()}

    prune = config.prune
    if prune is not None:
        block_sparsities, block_nm, allocation = None, None, None
        if prune.allocation in WEIGHT_ALLOCATIONS:  # from the weights alone: refused or done before any data
            t = time.perf_counter()
            allocation = block_allocation(model, prune)
            timings["allocation"] = time.perf_counter() - t
        calibration = None
        if prune.method != "magnitude" or prune.needs_dense_statistics:
            t = time.perf_counter()
            calibration = calibration_windows(
                config.calibration, tokenizer, config.nsamples, config.seqlen, config.seed
            )
            timings["calibration_data"] = time.perf_counter() - t
        if prune.needs_dense_statistics:
            dense, timings["dense_statistics"] = dense_statistics(
                model, prune, calibration, config.batch_size, progress, offload_device
            )
            t = time.perf_counter()
            try:
                allocation = block_allocation(model, prune, dense)
            except ConfigError as err:  # a width that leaves (0, 1]: known only from the statistics
                raise ConfigError(
                    f"{err}; the dense statistics are cached ({cache_root()}), so a re-run with "
                    "another value starts without their forward pass"
                ) from err
            timings["allocation"] = time.perf_counter() - t
        if allocation is not None:
            if prune.nm:
                n, m = prune.nm
                block_nm = [(k, m) for k in nm_per_block(allocation["densities"], n, m)]
                allocation["block_nm"] = block_nm
            else:
                block_sparsities = [1.0 - d for d in allocation["densities"]]
        elif prune.allocation == "evopress":
            block_sparsities, allocation = evopress_allocation(model, prune)
        report = prune_model(
            model, prune, calibration, block_sparsities, block_nm, config.batch_size, progress, offload_device
        )
        timings["prune"] = report.seconds["total"]
        record["allocation"] = allocation
        record["pruning"] = report.to_dict()
    else:
        per_block, _, overall = decoder_sparsity(model)
        record["pruning"] = {"block_achieved": per_block, "overall_achieved": overall}

    windows = None
    if config.eval:
        t = time.perf_counter()
        windows = evaluation_windows(config.eval, tokenizer, config.seqlen, config.eval_windows)
        timings["eval_data"] = time.perf_counter() - t
        record["perplexity"] = perplexity(model, windows, config.eval_batch_size, progress, offload_device)
    if config.recovery is not None:
        t = time.perf_counter()
        adapted, record["recovery"] = _recover(model, training, config, windows, record, progress)
        timings["recovery"] = time.perf_counter() - t
        model = adapted  # zero-shot accuracy and --save_model after recovery: base + unmerged adapter
    if config.zero_shot_tasks is not None:
        from .zeroshot import zero_shot

        t = time.perf_counter()
        record["zero_shot"] = zero_shot(
            model,
            tokenizer,
            tasks=config.zero_shot_tasks,
            limit=config.zero_shot_limit,
            batch_size=config.zero_shot_batch_size,
            add_bos_token=config.zero_shot_bos,
            source=config.zero_shot_source,
        )
        if config.recovery is not None:
            record["zero_shot"]["model"] = "after LoRA recovery, adapter unmerged"
        timings["zero_shot"] = time.perf_counter() - t
    if save_model:
        from .saving import save_pruned_model

        save_pruned_model(model, tokenizer, save_model, record)
    if config.recovery is not None:
        t = time.perf_counter()
        _merged_evaluation(model, config, windows, record["recovery"], progress)
        timings["merged_evaluation"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    record["timings"] = timings
    return record


def recovery_windows(tokenizer, config: RunConfig) -> torch.Tensor:
    """The recovery's training and held-out windows, read before pruning so that a text too short for
    them is refused before the pruning work (the last ``heldout_windows`` are held out)."""
    settings = config.recovery
    seqlen = settings.seqlen or config.seqlen
    needed = settings.steps * settings.windows_per_step(seqlen) + settings.heldout_windows
    text = training_windows(config.recovery_source, tokenizer, seqlen, needed)
    if text.shape[0] <= settings.heldout_windows:
        raise ConfigError(
            f"the recovery's training text {config.recovery_source!r} has {text.shape[0]} windows of {seqlen} tokens, "
            f"not more than the {settings.heldout_windows} held out; use fewer --lora_heldout windows or more text"
        )
    return text


def _recover(model, text: torch.Tensor, config: RunConfig, windows, record: dict, progress: bool):
    """LoRA recovery of the pruned ``model`` on ``text`` (:func:`recovery_windows`), and the adapter
    model's perplexity on the run's evaluation windows."""
    settings = config.recovery
    split = text.shape[0] - settings.heldout_windows  # the last windows are held out, never trained on
    seed = config.seed if settings.seed is None else settings.seed
    adapted, report = recover(model, settings, text[:split], text[split:], seed=seed, progress=progress)
    report["data"] = config.recovery_source
    report["perplexity"] = {"before": (record.get("perplexity") or {}).get("perplexity")}
    if windows is not None:
        after = perplexity(adapted, windows, config.eval_batch_size, progress)
        report["perplexity"]["adapter"] = after["perplexity"]
        report["perplexity"]["seconds"] = after["seconds"]
    return adapted, report


def _merged_evaluation(adapted, config: RunConfig, windows, report: dict, progress: bool) -> None:
    """Merge the adapter into the base with the pruning mask applied again (``recovery.merge_masked``)
    and measure the plain sparse model: ``report["perplexity"]["merged"]`` and ``merged_sparsity``."""
    merged = merge_masked(adapted)
    report["merged_sparsity"] = decoder_sparsity(merged)[2]
    if windows is not None:
        report["perplexity"]["merged"] = perplexity(merged, windows, config.eval_batch_size, progress)["perplexity"]
