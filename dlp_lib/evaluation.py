"""Evaluation: perplexity over fixed windows (methods-spec §4.1); zero-shot accuracy (§4.2) in zeroshot.py."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .layers import batches


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 4, progress: bool = True) -> dict:
    """``exp`` of the mean over windows of each window's mean next-token loss.

    Every window has the same length, so this equals exp of the mean loss over all predicted tokens
    (the papers' ``exp(sum(nll_w) / (n * seqlen))`` with ``nll_w = loss_w * seqlen``).
    Returns ``{"perplexity", "windows", "tokens", "seconds", "tokens_per_second"}``.
    """
    device = model.get_input_embeddings().weight.device
    total_loss, count = 0.0, 0
    start = time.perf_counter()
    total = math.ceil(windows.shape[0] / batch_size)
    for batch in tqdm(batches(windows, batch_size), total=total, desc="perplexity", disable=not progress):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="none"
        )
        total_loss += loss.view(batch.shape[0], -1).mean(dim=1).double().sum().item()
        count += batch.shape[0]
    seconds = time.perf_counter() - start
    tokens = windows.numel()
    return {
        "perplexity": math.exp(total_loss / count),
        "windows": count,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else float("nan"),
    }


def zero_shot(*args, **kwargs) -> dict:
    """Zero-shot accuracy with lm-eval; see :func:`dlp_lib.zeroshot.zero_shot` (imported lazily)."""
    from .zeroshot import zero_shot as _zero_shot

    return _zero_shot(*args, **kwargs)
