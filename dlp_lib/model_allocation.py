"""Per-block allocations computed on a loaded model: the dense statistics they read (cached on disk,
keyed by the model's weights and the calibration windows), then one density per block.

What each allocation reads (``config.DENSE_STATISTIC_ALLOCATIONS``, ``config.WEIGHT_ALLOCATIONS``): OWL,
DLP and DSA the dense input norms of every linear, LSA every linear's greedy reconstruction error from
the dense Hessians (:mod:`dlp_lib.lsa`), AlphaPruning the weights' spectra (:mod:`dlp_lib.alpha_hill`),
ATP only the number of blocks (:mod:`dlp_lib.atp`), EvoPress a saved search.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .allocation import allocate, clip_and_redistribute
from .cache import atomic_path, cache_root, load_tensors, read_cache, stable_hash
from .config import ConfigError, PruneConfig
from .layers import block_on, capture_block_inputs, decoder_blocks, linear_sublayers, offloaded
from .lsa import LSA_FRACTION, LSA_GROUP, check_lsa_settings, lsa_error
from .prune import _run_with_statistics, dense_input_norms
from .scores import block_statistics
from .stats import Hessian


def model_fingerprint(model) -> str:
    """Identifies a model's weights cheaply: its config, and per decoder linear a few rows plus the
    sum and sum of squares of all weights (in float64), so any change to a weight changes it."""
    h = hashlib.sha256(model.config.to_json_string().encode())
    for block in decoder_blocks(model):
        for linear in linear_sublayers(block).values():
            w = linear.weight.detach()
            moments = torch.stack([w.double().sum(), w.double().square().sum()])
            h.update(w[:4].float().cpu().numpy().tobytes() + moments.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_norms(path: Path, model) -> list[dict[str, torch.Tensor]]:
    """Cached dense input norms, checked against the model: one dict per block, one vector per linear."""
    norms = load_tensors(path)
    blocks = decoder_blocks(model)
    if not isinstance(norms, list) or len(norms) != len(blocks):
        raise ValueError(f"expected a list of {len(blocks)} blocks' norms")
    for block, block_norms in zip(blocks, norms):
        for name, linear in linear_sublayers(block).items():
            vector = block_norms.get(name) if isinstance(block_norms, dict) else None
            if not isinstance(vector, torch.Tensor) or vector.shape != (linear.in_features,):
                raise ValueError(f"no {linear.in_features}-vector for {name}")
    return norms


def dense_norms_path(model, calibration: torch.Tensor) -> Path:
    """The cache file of the dense input norms of (model, calibration windows)."""
    key = stable_hash([model_fingerprint(model), hashlib.sha256(calibration.numpy().tobytes()).hexdigest()])
    return cache_root() / "dense_stats" / f"{key}.pt"


def cached_dense_norms(model, calibration: torch.Tensor, batch_size: int, progress: bool = True, offload_device=None):
    """Per-block dense input norms, computed once per (model, calibration windows) and kept on disk,
    so trying another allocator or hyper-parameter needs no forward pass."""
    path = dense_norms_path(model, calibration)
    norms = read_cache(path, lambda p: _load_norms(p, model), "dense statistics cache")
    if norms is not None:
        return norms, 0.0
    start = time.perf_counter()
    norms = dense_input_norms(model, calibration, batch_size, progress, offload_device)
    seconds = time.perf_counter() - start
    with atomic_path(path) as tmp:
        torch.save(norms, tmp)
    return norms, seconds


def lsa_errors_path(model, calibration: torch.Tensor, config: PruneConfig) -> Path:
    """The cache file of LSA's per-linear errors of (model, calibration windows, group, fraction)."""
    key = stable_hash(
        [model_fingerprint(model), hashlib.sha256(calibration.numpy().tobytes()).hexdigest(), config.lsa_group,
         config.lsa_fraction]
    )  # fmt: skip
    return cache_root() / "lsa_errors" / f"{key}.pt"


def _load_errors(path: Path, model) -> list[dict[str, float]]:
    errors = torch.load(path, weights_only=True)
    names = [list(linear_sublayers(block)) for block in decoder_blocks(model)]
    if not isinstance(errors, list) or [list(e) if isinstance(e, dict) else None for e in errors] != names:
        raise ValueError(f"expected one error per linear of {len(names)} blocks")
    return errors


def dense_lsa_errors(model, calibration: torch.Tensor, batch_size: int = 8, group: int = LSA_GROUP,
                     fraction: float = LSA_FRACTION, progress: bool = True, offload_device=None):  # fmt: skip
    """One pass over the dense model: every linear's :func:`lsa_error` from its Hessian, block ``l`` fed by
    the dense blocks ``0..l-1``. One ``{linear name: error}`` dict per block; each block's Hessians are
    freed before the next block's are formed."""
    check_lsa_settings(group, fraction)
    result = []
    with offloaded(model, offload_device):
        inputs = capture_block_inputs(model, calibration, batch_size)
        for block in tqdm(decoder_blocks(model), desc="LSA statistics", disable=not progress, unit="block"):
            with block_on(block, offload_device):
                linears = linear_sublayers(block)
                stats, inputs.hidden = _run_with_statistics(block, inputs, linears, Hessian, keep_outputs=True)
                result.append(
                    {name: lsa_error(lin.weight, stats[name].matrix, group, fraction) for name, lin in linears.items()}
                )
            del stats
    return result


def cached_lsa_errors(model, calibration, config: PruneConfig, batch_size: int, progress=True, offload_device=None):
    """LSA's per-linear errors (:func:`dense_lsa_errors`), computed once per (model, windows,
    group, fraction) and kept on disk; with the seconds spent (0 when read)."""
    path = lsa_errors_path(model, calibration, config)
    errors = read_cache(path, lambda p: _load_errors(p, model), "LSA statistics cache")
    if errors is not None:
        return errors, 0.0
    start = time.perf_counter()
    errors = dense_lsa_errors(
        model, calibration, batch_size, config.lsa_group, config.lsa_fraction, progress, offload_device
    )
    seconds = time.perf_counter() - start
    with atomic_path(path) as tmp:
        torch.save(errors, tmp)
    return errors, seconds


def _load_alphas(path: Path, model) -> tuple[list[float], dict[str, float]]:
    stored = torch.load(path, weights_only=True)
    names = [f"{i}.{n}" for i, block in enumerate(decoder_blocks(model)) for n in linear_sublayers(block)]
    scores, alphas = stored["scores"], stored["alphas"]
    if len(scores) != len(decoder_blocks(model)) or list(alphas) != names:
        raise ValueError(f"expected {len(decoder_blocks(model))} block scores and one alpha per linear")
    return [float(s) for s in scores], {n: float(a) for n, a in alphas.items()}


def cached_block_alphas(model, estimator: str) -> tuple[list[float], dict[str, float]]:
    """AlphaPruning's block scores and per-linear exponents (``"block.linear"``) of the model's weights,
    computed once per (weights, estimator) and kept on disk: every run of a model reads the same spectra."""
    from .alpha_hill import block_alpha

    path = cache_root() / "alpha_hill" / f"{stable_hash([model_fingerprint(model), estimator])}.pt"
    stored = read_cache(path, lambda p: _load_alphas(p, model), "AlphaPruning exponents cache")
    if stored is not None:
        return stored
    scores, alphas = [], {}
    for index, block in enumerate(decoder_blocks(model)):
        score, per_linear = block_alpha({n: lin.weight for n, lin in linear_sublayers(block).items()}, estimator)
        scores.append(score)
        alphas.update({f"{index}.{name}": alpha for name, alpha in per_linear.items()})
    with atomic_path(path) as tmp:
        torch.save({"scores": scores, "alphas": alphas}, tmp)
    return scores, alphas


def dense_statistics(model, config: PruneConfig, calibration, batch_size: int, progress=True, offload_device=None):
    """What ``config.allocation`` reads from the dense model's calibration pass, cached: LSA's per-linear
    errors, or every other allocation's input norms; with the seconds spent."""
    if config.allocation == "lsa":
        return cached_lsa_errors(model, calibration, config, batch_size, progress, offload_device)
    return cached_dense_norms(model, calibration, batch_size, progress, offload_device)


def _weights_only(model, config: PruneConfig, sizes: list[int]) -> tuple[list, torch.Tensor, dict]:
    """(statistic, densities, extra record fields) of an allocation that reads no data."""
    if config.allocation == "atp":
        from .atp import atp_densities

        weights = None if len(set(sizes)) == 1 else sizes  # equal blocks: the reference's arithmetic
        statistic = list(range(len(sizes)))  # the block's depth
        return statistic, atp_densities(len(sizes), config.sparsity, config.atp_beta, weights), {}
    from .alpha_hill import alpha_sparsities

    scores, alphas = cached_block_alphas(model, config.alpha_estimator)
    if config.clip_densities:
        raw = 1.0 - alpha_sparsities(scores, config.sparsity, config.alpha_epsilon, sizes, check=False)
        densities = clip_and_redistribute(raw, config.sparsity, sizes)
    else:
        densities = 1.0 - alpha_sparsities(scores, config.sparsity, config.alpha_epsilon, sizes)
    return scores, densities, {"linear_alphas": alphas}


def block_allocation(model, config: PruneConfig, dense=None) -> dict:
    """Per-block statistic and density for ``config.allocation``: from ``dense``, what
    :func:`dense_statistics` gave (OWL, DLP, DSA, LSA), or from the model alone (AlphaPruning, ATP)."""
    blocks = decoder_blocks(model)
    weights = [{n: lin.weight for n, lin in linear_sublayers(b).items()} for b in blocks]
    sizes = [sum(w.numel() for w in ws.values()) for ws in weights]
    extra = {}
    if config.allocation in ("alphapruning", "atp"):
        statistic, densities, extra = _weights_only(model, config, sizes)
    elif config.allocation == "lsa":
        from .lsa import lsa_block_statistic

        statistic = [lsa_block_statistic(errors) for errors in dense]
        densities = allocate(statistic, config, weights=sizes)
        extra = {"width": config.width}
    else:
        statistic = block_statistics(weights, dense, config)
        densities = allocate(statistic, config, weights=sizes)
    record = {"statistic": [float(x) for x in statistic], "densities": [float(d) for d in densities]}
    return {**record, "block_sizes": sizes, **extra}


def evopress_block_targets(result: dict, model) -> list[dict[str, float]]:
    """The per-linear sparsities of a saved search as ``prune_model`` takes them (one dict per block),
    checked against ``model``: the same blocks, linears and sizes."""
    sparsities, sizes = result["linear_sparsities"], result["linear_sizes"]
    targets, seen = [], set()
    for index, block in enumerate(decoder_blocks(model)):
        targets.append({})
        for name, linear in linear_sublayers(block).items():
            key = f"{index}.{name}"
            if key not in sparsities or sizes.get(key) != linear.weight.numel():
                raise ConfigError(
                    f"the EvoPress allocation was searched on another model ({result['settings']['model']}): it has "
                    f"no linear {key} of {linear.weight.numel()} weights; search on this model first"
                )
            targets[-1][name] = float(sparsities[key])
            seen.add(key)
    if seen != set(sparsities):
        raise ConfigError(
            f"the EvoPress allocation has {len(sparsities)} linears, this model {len(seen)}: search on it"
        )
    return targets


def evopress_allocation(model, config: PruneConfig) -> tuple[list[dict[str, float]], dict]:
    """Per-block ``{linear: sparsity}`` targets of a saved EvoPress search, and what the record says of it."""
    from .evopress_file import allocation_record, read_allocation

    result = read_allocation(config.evopress)
    return evopress_block_targets(result, model), allocation_record(result)
