"""The one model-structure adapter: decoder blocks, their linear sublayers, block-0 input capture,
and running one block. transformers version drift is handled here and nowhere else.

Blocks are found from the model's structure (``config.model_type`` and the module tree), never from
substrings of the model's name or path.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .config import ConfigError

# model_type -> attribute path of the decoder blocks (an nn.ModuleList)
ARCHITECTURES = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "opt": "model.decoder.layers",
}


class UnsupportedArchitectureError(ConfigError):
    pass


def unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (a LoRA-adapted model), else ``model`` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def architecture(model: nn.Module) -> str:
    """The model's architecture name, or a clear error if dlp_lib does not support it."""
    model = unwrapped(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r} ({type(model).__name__}); dlp_lib supports "
            f"{', '.join(sorted(ARCHITECTURES))} decoder-only models"
        )
    return model_type


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks, in order (also through a peft wrapper)."""
    module = unwrapped(model)
    for attr in ARCHITECTURES[architecture(model)].split("."):
        module = getattr(module, attr)
    return module


@contextmanager
def blocks_replaced(model: nn.Module, replacement: nn.ModuleList):
    """Temporarily put ``replacement`` where the model keeps its decoder-block list; yields the original."""
    path = ARCHITECTURES[architecture(model)].split(".")
    parent = unwrapped(model)
    for attr in path[:-1]:
        parent = getattr(parent, attr)
    blocks = getattr(parent, path[-1])
    setattr(parent, path[-1], replacement)
    try:
        yield blocks
    finally:
        setattr(parent, path[-1], blocks)


def blocks_detached(model: nn.Module):
    """Temporarily replace the decoder-block list by an empty one (to move everything else)."""
    return blocks_replaced(model, nn.ModuleList())


def move_non_block_modules(model: nn.Module, device) -> None:
    """Move embeddings, rotary tables, final norm and head to ``device``, leaving the blocks where they are
    (for offloading: the blocks stay in CPU memory and visit the GPU one at a time)."""
    with blocks_detached(model):
        model.to(device)


@contextmanager
def offloaded(model, device):
    """With ``device`` set, keep the decoder blocks where they are (CPU memory) and put the rest of the
    model on ``device``; :func:`block_on` then brings one block at a time. Restores placement on exit."""
    if device is None:
        yield
        return
    home = model.get_input_embeddings().weight.device
    move_non_block_modules(model, device)
    try:
        yield
    finally:
        move_non_block_modules(model, home)


@contextmanager
def block_on(block, device):
    """Move one block to ``device`` for the duration (no-op when ``device`` is None)."""
    if device is None:
        yield block
        return
    home = module_device(block)
    block.to(device)
    try:
        yield block
    finally:
        block.to(home)


def final_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from the last block's output: the final norm (and OPT's projection), then the LM head."""
    if architecture(model) == "opt":
        decoder = model.model.decoder
        if decoder.final_layer_norm is not None:
            hidden = decoder.final_layer_norm(hidden)
        if decoder.project_out is not None:
            hidden = decoder.project_out(hidden)
    else:
        hidden = model.model.norm(hidden)
    return model.lm_head(hidden)


def to_device(obj, device):
    """``obj`` with every tensor inside (tuples, lists, dicts) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def linear_sublayers(block: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside a block, by qualified name, in module order
    (LLaMA: self_attn.q/k/v/o_proj, mlp.gate/up/down_proj; OPT: self_attn.k/v/q/out_proj, fc1, fc2).

    With a LoRA adapter attached (peft), a wrapped linear appears under its own name as its frozen
    base layer, and the adapter's small linears (``lora_A``/``lora_B``) are left out."""
    linears = {}
    for name, module in block.named_modules():
        if not isinstance(module, nn.Linear) or any(part.startswith("lora_") for part in name.split(".")):
            continue
        linears[name.removesuffix(".base_layer")] = module
    return linears


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@dataclass
class BlockInputs:
    """Inputs of a decoder block for every calibration batch: hidden states and the keyword
    arguments the model passed (masks, position ids, rotary embeddings, ...), replayed as captured."""

    hidden: list[torch.Tensor]
    kwargs: list[dict]

    def __len__(self) -> int:
        return len(self.hidden)

    @property
    def num_windows(self) -> int:
        return sum(h.shape[0] for h in self.hidden)


class _StopForward(Exception):
    """Raised by the capture hook to skip the rest of the model once block 0's input is known."""


def batches(input_ids: torch.Tensor, batch_size: int):
    if batch_size <= 0:
        raise ConfigError(f"batch size must be positive; got {batch_size}")
    for start in range(0, input_ids.shape[0], batch_size):
        yield input_ids[start : start + batch_size]


@torch.no_grad()
def capture_block_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 8) -> BlockInputs:
    """Run the model on ``input_ids`` (windows x tokens) in batches up to block 0 and keep what
    block 0 receives: its hidden states and *all* its keyword arguments."""
    block0 = decoder_blocks(model)[0]
    device = model.get_input_embeddings().weight.device
    hidden, kwargs = [], []

    def hook(module, args, kw):
        kw = dict(kw)
        x = args[0] if args else kw.pop("hidden_states")
        hidden.append(x.detach())
        kw.pop("past_key_values", None)  # no cache during calibration
        kw["use_cache"] = False
        kwargs.append(kw)
        raise _StopForward

    handle = block0.register_forward_pre_hook(hook, with_kwargs=True)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    try:
        for batch in batches(input_ids, batch_size):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
        model.config.use_cache = use_cache
    return BlockInputs(hidden, kwargs)


def block_output(output) -> torch.Tensor:
    """A decoder layer's hidden-state output: a tuple in older transformers, a tensor in 5.x."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """Run one block; inputs follow the block's device (a model spread over several GPUs)."""
    device = module_device(block)
    if hidden.device != device:
        hidden, kwargs = hidden.to(device), to_device(kwargs, device)
    return block_output(block(hidden, **kwargs))
