"""The only orchestrator: the sequential block-by-block pruning loop (docs/methods.md#the-block-by-block-pruning-pass).

For each decoder block: record statistics of its linear layers on inputs produced by the already
pruned blocks 0..l-1 (all sublayers see the dense version of the block, as in the reference code),
prune every linear, then recompute the block's outputs with the pruned weights for the next block.
Calibration runs in batches of windows, not one window at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from tqdm.auto import tqdm

from .config import ConfigError, PruneConfig
from .layers import (
    BlockInputs,
    block_on,
    capture_block_inputs,
    decoder_blocks,
    linear_sublayers,
    offloaded,
    run_block,
)
from .masks import nm_mask, per_row_mask, variant_mask, whole_matrix_mask
from .ria import ria_mask, ria_nm_mask, ria_score
from .scores import magnitude_score, wanda_score
from .sparsegpt import check_no_legacy_environment, sparsegpt_prune, sweep_backend
from .stats import HALF_DTYPES, Hessian, InputNorms, record_inputs

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    """What a pruning run did: per-block targets and achieved sparsities, timings."""

    method: str
    allocation: str
    sparsity_type: str
    target_sparsity: float
    block_targets: list[float]
    block_achieved: list[float]
    linear_achieved: dict[str, float]
    overall_achieved: float
    seconds: dict = field(default_factory=dict)
    # SparseGPT only: the column loop that ran ("c", "torch", "triton") and the Hessian arithmetic applied
    sparsegpt: dict | None = None
    # per-linear targets ("<block>.<linear>"), where the allocation gave them (EvoPress)
    linear_targets: dict[str, float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["linear_targets"] is None:
            d.pop("linear_targets")
        return d


def zero_fraction(tensor: torch.Tensor) -> float:
    return float((tensor == 0).sum()) / tensor.numel()


def decoder_sparsity(model) -> tuple[list[float], dict[str, float], float]:
    """Fraction of exact zeros per block, per linear (``"<block>.<name>"``) and over all decoder
    linears (embeddings and lm_head excluded, like the reference ``check_sparsity``)."""
    per_block, per_linear = [], {}
    zeros_total = numel_total = 0
    for index, block in enumerate(decoder_blocks(model)):
        zeros = numel = 0
        for name, linear in linear_sublayers(block).items():
            z = int((linear.weight == 0).sum())
            per_linear[f"{index}.{name}"] = z / linear.weight.numel()
            zeros += z
            numel += linear.weight.numel()
        per_block.append(zeros / numel)
        zeros_total += zeros
        numel_total += numel
    return per_block, per_linear, zeros_total / numel_total


def _prune_sparsegpt(linears: list, config: PruneConfig, sparsity: float, stat, nm, sweep: str) -> None:
    """SparseGPT on linears that share one Hessian (q/k/v; gate/up; or one linear alone), swept together
    as stacked rows: one column loop instead of one per linear, the same result (``row_groups``)."""
    weights = [linear.weight for linear in linears]
    rows = [w.shape[0] for w in weights]
    stacked = weights[0] if len(weights) == 1 else torch.cat(weights)
    new_weight, _ = sparsegpt_prune(
        stacked, stat.matrix, sparsity, nm, config.blocksize, config.percdamp, row_groups=rows, sweep=sweep
    )
    for weight, part in zip(weights, new_weight.split(rows)):
        # each its own storage: safetensors cannot save views of one stacked tensor
        _replace_weight(weight, part.to(weight.dtype, copy=len(weights) > 1))


def _replace_weight(weight, new):
    """Give the parameter new data instead of writing into the old: from_pretrained memory-maps the
    weights of a safetensors file, and a write into them costs a page fault per 4 KiB page (1-1.5 s of
    a Wanda or SparseGPT run on the embedded model, half of Wanda's pruning phase). The file's pages
    stay mapped, clean, until the kernel reclaims them, so a CPU process's resident size counts both
    copies meanwhile (the embedded model's runs: about 1.5 GB instead of 1.0 GB)."""
    weight.data = new


def _prune_linear(linear, config: PruneConfig, sparsity: float, stat, nm) -> None:
    weight = linear.weight
    if config.method == "magnitude":
        score = magnitude_score(weight)
        mask = nm_mask(score, *nm) if nm else whole_matrix_mask(score, sparsity)
    elif config.method == "ria":
        score = ria_score(weight, stat.mean, config.ria_a)
        mask = ria_nm_mask(score, *nm, reallocation=config.ria_reallocation) if nm else ria_mask(score, sparsity)
    else:
        score = wanda_score(weight, stat.mean)
        if nm:
            mask = nm_mask(score, *nm)
        elif config.use_variant:
            mask = variant_mask(score, sparsity)
        else:
            mask = per_row_mask(score, sparsity)
    _replace_weight(weight, weight.data.masked_fill(mask, 0))


def _check_block_patterns(patterns, blocks, config: PruneConfig) -> None:
    if len(patterns) != len(blocks):
        raise ConfigError(f"got {len(patterns)} N:M patterns for a model with {len(blocks)} blocks")
    if not config.nm:
        return
    for index, (pattern, block) in enumerate(zip(patterns, blocks)):
        n, m = pattern
        if not 0 <= n < m:
            raise ConfigError(f"block {index}: N:M pattern {n}:{m} needs 0 <= N < M")
        for name, linear in linear_sublayers(block).items():
            if linear.in_features % m:
                raise ConfigError(f"block {index} {name}: input size {linear.in_features} is not a multiple of M={m}")


def _check_block_targets(block_targets: list, blocks) -> None:
    """One target per block: a sparsity, or ``{linear name: sparsity}`` naming every linear of the block."""
    if len(block_targets) != len(blocks):
        raise ConfigError(f"got {len(block_targets)} block sparsities for a model with {len(blocks)} blocks")
    bad = []
    for i, (target, block) in enumerate(zip(block_targets, blocks)):
        if isinstance(target, dict):
            names = set(linear_sublayers(block))
            if set(target) != names:
                raise ConfigError(f"block {i}: per-linear sparsities must name exactly its linears {sorted(names)}")
            bad += [(f"{i}.{n}", s) for n, s in target.items() if not 0.0 <= s < 1.0]
        elif not 0.0 <= target < 1.0:
            bad.append((i, target))
    if bad:
        raise ConfigError(f"block sparsities must be in [0, 1); blocks {bad} are not")


def block_mean_target(target, block) -> float:
    """A block's target sparsity: itself, or its linears' targets weighted by their sizes."""
    if not isinstance(target, dict):
        return target
    linears = linear_sublayers(block)
    numel = {n: lin.weight.numel() for n, lin in linears.items()}
    return sum(target[n] * numel[n] for n in linears) / sum(numel.values())


class _InputsComplete(Exception):
    """Raised before the block's last linear runs once every linear has shown its input: without
    outputs to keep, the rest of the forward (the down projection: about a fifth of a LLaMA block's
    work) would be thrown away."""


def _run_with_statistics(block, inputs: BlockInputs, linears: dict, make_stat, keep_outputs: bool):
    """Run ``block`` over every calibration batch and return ``({linear name: statistic}, outputs)``.

    Linears that receive the very same input tensor (q/k/v, gate/up) share one statistic, computed
    once. Inputs are reshaped to (windows, tokens, d_in) with the batch's window count, because some
    layers (OPT's fc1/fc2) receive a flattened (windows * tokens, d_in) tensor. Without
    ``keep_outputs`` each forward stops as soon as every linear has been given its input."""
    stats, windows, seen, shown = {}, [0], {}, set()

    def record(name, x):
        shown.add(name)
        # ``seen`` holds this batch's inputs alive, so an address cannot be reused by another tensor
        key = (x.data_ptr(), tuple(x.shape), x.stride())
        if key in seen:
            stats.setdefault(name, seen[key][1])
        else:
            stat = stats.get(name)
            if stat is None:
                stat = stats[name] = make_stat(x.shape[-1], x.device)
            stat.add(x.reshape(windows[0], -1, x.shape[-1]))
            seen[key] = (x, stat)
        if not keep_outputs and len(shown) == len(linears):
            raise _InputsComplete

    outputs = []
    with record_inputs(linears, record):
        for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
            windows[0] = hidden.shape[0]
            seen.clear()
            shown.clear()
            try:
                out = run_block(block, hidden, kwargs)
            except _InputsComplete:
                continue
            if keep_outputs:
                outputs.append(out)
    seen.clear()
    return stats, outputs


def perturb_statistics(stats: dict, scale: float, seed: int, block_index: int) -> None:
    """The float-sensitivity probe (``PruneConfig.perturb``): every distinct statistic of a block times
    ``1 + scale * noise``, the noise seeded by (seed, block), so a draw is reproducible. Linears that
    share one statistic (q/k/v) share its perturbation too."""
    generator = torch.Generator().manual_seed(seed * 100_003 + block_index)
    distinct = {id(stat): stat for stat in stats.values()}
    for stat in distinct.values():
        stat.perturb(scale, generator)


def _now(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done: CUDA runs asynchronously, so an
    unsynchronised split would charge one phase's kernels to the next."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _prune_block(
    block, inputs: BlockInputs | None, config: PruneConfig, sparsity, nm, seconds, propagate, index=0, sweeps=None
):
    """Statistics on the dense block, prune every linear, then recompute the block's outputs in place.
    ``sparsity``: the block's, or ``{linear name: sparsity}`` (an EvoPress allocation).
    ``sweeps``: SparseGPT's column loop per N:M pattern (None: unstructured), from ``sweep_backend``."""
    linears = linear_sublayers(block)
    device = next(iter(linears.values())).weight.device
    stats = {}
    t0 = _now(device)
    if inputs is not None:
        if config.method == "sparsegpt":
            accumulator = partial(Hessian, half=config.sparsegpt_hessian == "half")
        else:
            accumulator = InputNorms
        stats, _ = _run_with_statistics(block, inputs, linears, accumulator, keep_outputs=False)
        if config.perturb:
            perturb_statistics(stats, config.perturb, config.perturb_seed, index)
    t1 = _now(device)
    if nm is not None and nm[0] == 0:
        pass  # a block given 0:M keeps all its weights
    elif config.method == "sparsegpt":
        shared = {}  # linears grouped by the Hessian they share and their sparsity, in block order
        for name, linear in linears.items():
            target = sparsity[name] if isinstance(sparsity, dict) else sparsity
            shared.setdefault((id(stats[name]), target), (stats[name], target, []))[2].append(linear)
        for stat, target, group in shared.values():
            _prune_sparsegpt(group, config, target, stat, nm, sweeps[nm])
    else:
        for name, linear in linears.items():
            target = sparsity[name] if isinstance(sparsity, dict) else sparsity
            _prune_linear(linear, config, target, stats.get(name), nm)
    stats.clear()  # free Hessians before the next forward
    t2 = _now(device)
    if inputs is not None and propagate:
        inputs.hidden = [run_block(block, h, kw) for h, kw in zip(inputs.hidden, inputs.kwargs)]
    t3 = _now(device)
    seconds["statistics"] += t1 - t0
    seconds["pruning"] += t2 - t1
    seconds["propagation"] += t3 - t2


@torch.no_grad()
def dense_input_norms(
    model, calibration: torch.Tensor, batch_size: int = 8, progress: bool = True, offload_device=None
):
    """One pass over the dense model: the input norms of every linear of every block (Wanda's ``r``),
    with block l fed by the dense blocks 0..l-1. Returns one ``{linear name: r}`` dict per block."""
    result = []
    with offloaded(model, offload_device):
        inputs = capture_block_inputs(model, calibration, batch_size)
        for block in tqdm(decoder_blocks(model), desc="dense statistics", disable=not progress, unit="block"):
            with block_on(block, offload_device):
                stats, inputs.hidden = _run_with_statistics(
                    block, inputs, linear_sublayers(block), InputNorms, keep_outputs=True
                )
            result.append({name: s.mean.cpu() for name, s in stats.items()})
    return result


@torch.no_grad()
def prune_model(
    model,
    config: PruneConfig,
    calibration: torch.Tensor | None = None,
    block_sparsities: list[float] | None = None,
    block_nm: list[tuple[int, int]] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    offload_device=None,
) -> PruneReport:
    """Prune ``model`` in place, block by block.

    Args:
        model: a causal LM of a supported architecture (see layers.ARCHITECTURES).
        config: method, sparsity, pattern and hyper-parameters; SparseGPT's "auto" arithmetic is made
            concrete for the device here (``PruneConfig.on_device``).
        calibration: windows x tokens token ids; needed by Wanda and SparseGPT.
        block_sparsities: one target sparsity per decoder block (an allocation), or per block a dict
            ``{linear name: sparsity}`` (an EvoPress allocation); uniform if None. Ignored for N:M
            sparsity, which uses ``block_nm``.
        block_nm: one (N, M) pattern per block for N:M sparsity; ``config``'s N:M for all if None.
        batch_size: calibration windows per forward call.
        offload_device: if set (e.g. ``"cuda"``), the model stays in CPU memory and one decoder block at
            a time is moved to this device for statistics, pruning and recomputation; calibration
            activations live on the device in the model's dtype.

    Example:
        >>> report = prune_model(model, PruneConfig("wanda", 0.5), calibration_windows(...))
    """
    blocks = decoder_blocks(model)
    targets = list(block_sparsities) if block_sparsities is not None else [config.sparsity] * len(blocks)
    _check_block_targets(targets, blocks)
    linear_targets = None
    if any(isinstance(t, dict) for t in targets):
        if config.nm:
            raise ConfigError("per-linear sparsities (an EvoPress allocation) are unstructured; drop the N:M pattern")
        linear_targets = {
            f"{i}.{n}": float(s) for i, t in enumerate(targets) if isinstance(t, dict) for n, s in t.items()
        }
    patterns = list(block_nm) if block_nm is not None else [config.nm] * len(blocks)
    _check_block_patterns(patterns, blocks, config)
    if config.nm:
        targets = [n / m for n, m in patterns]
    needs_data = config.method != "magnitude"
    if needs_data and calibration is None:
        raise ConfigError(f"{config.method} needs calibration windows")
    device = torch.device(offload_device) if offload_device is not None else next(blocks[0].parameters()).device
    config = config.on_device(device)
    sweeps, arithmetic = None, None
    if config.method == "sparsegpt":  # a loop that cannot run here fails now, before any work
        check_no_legacy_environment()
        pruned = {nm for nm in patterns if not (nm and nm[0] == 0)}  # a 0:M block is left as it is
        sweeps = {nm: sweep_backend(device, config.sparsegpt_sweep, nm) for nm in pruned}
        half = config.sparsegpt_hessian == "half" and next(blocks[0].parameters()).dtype in HALF_DTYPES
        arithmetic = {"sweep": sorted(set(sweeps.values())), "hessian": "half" if half else "fp32"}

    seconds = {"capture": 0.0, "statistics": 0.0, "pruning": 0.0, "propagation": 0.0}
    start = _now(device)
    with offloaded(model, offload_device):
        inputs = capture_block_inputs(model, calibration, batch_size) if needs_data else None
        seconds["capture"] = _now(device) - start
        bar = tqdm(list(enumerate(blocks)), desc=f"pruning ({config.method})", disable=not progress, unit="block")
        for index, block in bar:
            with block_on(block, offload_device):
                _prune_block(
                    block,
                    inputs,
                    config,
                    targets[index],
                    patterns[index],
                    seconds,
                    propagate=index + 1 < len(blocks),
                    index=index,
                    sweeps=sweeps,
                )
    seconds["total"] = _now(device) - start
    per_block, per_linear, overall = decoder_sparsity(model)
    log.info("pruned with %s to %.4f sparsity in %.1f s", config.method, overall, seconds["total"])
    return PruneReport(
        method=config.method,
        allocation=config.allocation,
        sparsity_type=config.sparsity_type,
        target_sparsity=config.sparsity,
        block_targets=[block_mean_target(t, b) for t, b in zip(targets, blocks)],
        block_achieved=per_block,
        linear_achieved=per_linear,
        overall_achieved=overall,
        seconds=seconds,
        sparsegpt=arithmetic,
        linear_targets=linear_targets,
    )
