"""Evaluation: perplexity over fixed windows (docs/methods.md#perplexity); zero-shot accuracy in zeroshot/."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from .layers import batches, block_on, capture_block_inputs, decoder_blocks, final_logits, offloaded, run_block

LOSS_CHUNK = 256  # positions per step of the loss: 256 x vocabulary fp32 values stay in cache


def _window_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each window (fp32), from the logits of positions 0..T-2.

    Computed as ``logsumexp(logits) - logits[target]`` over chunks of positions, each upcast to fp32
    on its own: the same value as ``F.cross_entropy`` (to float rounding) without materialising a
    vocabulary-sized log-softmax, which made the loss ~17% of the forward pass's time on CPU."""
    flat = logits.reshape(-1, logits.shape[-1])
    targets = ids[:, 1:].reshape(-1, 1).to(flat.device)
    losses = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[0], LOSS_CHUNK):
        chunk = flat[start : start + LOSS_CHUNK].float()
        target = chunk.gather(1, targets[start : start + LOSS_CHUNK]).squeeze(1)
        losses[start : start + LOSS_CHUNK] = torch.logsumexp(chunk, dim=-1) - target
    return losses.view(ids.shape[0], -1).mean(dim=1)


@torch.no_grad()
def _in_memory_losses(model, windows: torch.Tensor, batch_size: int, progress: bool) -> torch.Tensor:
    device = model.get_input_embeddings().weight.device
    total = math.ceil(windows.shape[0] / batch_size)
    losses = []
    for batch in tqdm(batches(windows, batch_size), total=total, desc="perplexity", disable=not progress):
        batch = batch.to(device)
        # logits only for the positions that predict a token: the last one has no target
        keep = torch.arange(batch.shape[1] - 1, device=device)
        logits = model(input_ids=batch, use_cache=False, logits_to_keep=keep).logits
        losses.append(_window_losses(logits, batch).cpu())
    return torch.cat(losses)


@torch.no_grad()
def _offloaded_losses(model, windows: torch.Tensor, batch_size: int, device, progress: bool) -> torch.Tensor:
    """Per-window losses with the model in CPU memory: one decoder block at a time on ``device``."""
    with offloaded(model, device):
        inputs = capture_block_inputs(model, windows, batch_size)
        for block in tqdm(decoder_blocks(model), desc="perplexity (offloaded)", disable=not progress, unit="block"):
            with block_on(block, device):
                inputs.hidden = [run_block(block, h, kw) for h, kw in zip(inputs.hidden, inputs.kwargs)]
        losses = [
            _window_losses(final_logits(model, h[:, :-1]), ids.to(h.device)).cpu()
            for h, ids in zip(inputs.hidden, batches(windows, batch_size))
        ]
    return torch.cat(losses)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 4, progress: bool = True, offload_device=None) -> dict:
    """``exp`` of the mean over windows of each window's mean next-token loss.

    Every window has the same length, so this equals exp of the mean loss over all predicted tokens
    (the papers' ``exp(sum(nll_w) / (n * seqlen))`` with ``nll_w = loss_w * seqlen``).
    With ``offload_device`` the model stays in CPU memory and runs block by block on that device.
    Returns ``{"perplexity", "windows", "tokens", "seconds", "tokens_per_second"}``.
    """
    start = time.perf_counter()
    if offload_device is not None:
        losses = _offloaded_losses(model, windows, batch_size, offload_device, progress)
    else:
        losses = _in_memory_losses(model, windows, batch_size, progress)
    count = windows.shape[0]
    total_loss = losses.double().sum().item()
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
