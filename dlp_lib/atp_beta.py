"""Choosing ATP's beta without looking at the test set.

ATP's authors have no default beta: their search script prunes with every beta of a grid and keeps the one
with the lowest WikiText-2 *test* perplexity, the number their tables then report (docs/methods.md#atp).
:func:`choose_atp_beta` runs the same search on the text it is told to: ``on="heldout"`` (the default)
scores each beta on windows of the *calibration* source drawn with another seed, so the evaluation windows
are never seen; ``on="eval"`` scores on the run's evaluation windows, the authors' way, and every table
that uses it says so. The model is loaded once and its dense weights restored before each beta.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch
from tqdm.auto import tqdm

from .atp import ATP_BETA_STEP, atp_beta_grid
from .config import ConfigError
from .data import calibration_windows, evaluation_windows
from .evaluation import perplexity
from .layers import decoder_blocks, linear_sublayers
from .model_allocation import block_allocation

log = logging.getLogger(__name__)

SELECTIONS = {
    "heldout": "held-out calibration text (windows of the calibration source drawn with seed + 1)",
    "eval": "the evaluation windows (the authors' way: tuned on the test data)",
}
HELDOUT_SEED_OFFSET = 1


def heldout_windows(config, tokenizer, count: int) -> torch.Tensor:
    """``count`` windows of the calibration source drawn with another seed than the calibration windows:
    text of the calibration distribution, never the evaluation text (they may share a passage with a
    calibration window, as any two random draws may)."""
    return calibration_windows(config.calibration, tokenizer, count, config.seqlen, config.seed + HELDOUT_SEED_OFFSET)


def _check(config, on: str, heldout: int) -> None:
    if config.prune is None:
        raise ConfigError("choose_atp_beta needs a pruning configuration (method and sparsity)")
    if on not in SELECTIONS:
        raise ConfigError(f"unknown beta selection {on!r}; use one of {', '.join(SELECTIONS)}")
    if on == "eval" and not config.eval:
        raise ConfigError("on='eval' scores the betas on the evaluation windows: the run has no --eval source")
    if config.prune.nm:
        raise ConfigError("choose_atp_beta searches unstructured sparsity; ATP's N:M blocks follow its densities")
    if isinstance(heldout, bool) or not isinstance(heldout, int) or heldout < 1:
        raise ConfigError(f"heldout must be a positive number of windows; got {heldout!r}")


def choose_atp_beta(
    config, betas=None, on: str = "heldout", heldout: int = 16, progress: bool = True, step: float = ATP_BETA_STEP
) -> dict:
    """Prune ``config.model`` with ATP at each beta (``config.prune``'s method and sparsity) and return the
    beta with the lowest perplexity on the ``on`` windows, with every beta's perplexity.

    ``betas``: default the authors' grid for this model and sparsity (:func:`dlp_lib.atp.atp_beta_grid`,
    spaced by ``step``).
    Returns ``{"best", "betas", "perplexity", "on", "selection", "windows"}``.
    """
    from .models import load_model
    from .prune import prune_model

    _check(config, on, heldout)
    start = time.perf_counter()
    model, tokenizer = load_model(config.model, config.dtype, config.device, config.trust_remote_code)
    blocks = decoder_blocks(model)
    if betas is None:
        betas = atp_beta_grid(len(blocks), config.prune.sparsity, step=step)
    if not betas:
        raise ConfigError("no beta to try: pass betas=[...] (the grid is empty for a one-block model)")
    calibration = None
    if config.prune.method != "magnitude":
        calibration = calibration_windows(config.calibration, tokenizer, config.nsamples, config.seqlen, config.seed)
    if on == "heldout":
        scoring = heldout_windows(config, tokenizer, heldout)
    else:
        scoring = evaluation_windows(config.eval, tokenizer, config.seqlen, config.eval_windows)
    dense = {lin.weight: lin.weight.data.clone() for b in blocks for lin in linear_sublayers(b).values()}
    results = []
    for beta in tqdm(betas, desc="ATP beta", disable=not progress, unit="beta"):
        for weight, data in dense.items():
            weight.data = data.clone()
        prune = dataclasses.replace(config.prune, allocation="atp", atp_beta=float(beta))
        targets = [1.0 - d for d in block_allocation(model, prune)["densities"]]
        prune_model(model, prune, calibration, targets, batch_size=config.batch_size, progress=False)
        results.append(perplexity(model, scoring, config.eval_batch_size, progress=False)["perplexity"])
        log.info("ATP beta %g: perplexity %.4f on %s", beta, results[-1], on)
    best = min(range(len(results)), key=results.__getitem__)  # the first of equal perplexities
    return {
        "best": float(betas[best]),
        "betas": [float(b) for b in betas],
        "perplexity": results,
        "on": on,
        "selection": SELECTIONS[on],
        "windows": int(scoring.shape[0]),
        "seconds": time.perf_counter() - start,
    }
