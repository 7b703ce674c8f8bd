"""A pruned model as ONNX graphs an inference engine can time: one prefill step and one decode step.

``export_onnx(model, tokenizer, directory)`` writes

- ``prefill.onnx``: ``input_ids``, ``attention_mask`` of ``prompt_tokens`` -> ``logits`` and every block's
  key/value cache (``present_<i>``), as a generation loop's first call;
- ``decode.onnx``: one new token with the prompt's cache (``past_<i>``) -> its ``logits`` and the grown cache,
  as every later call;
- ``reference.npz``: the inputs of both graphs (the prompt is real text, the decode step continues it with
  the model's own next token) and PyTorch's logits on them, which each engine's outputs are compared with.

Shapes are fixed (batch 1, the prompt's length), as DeepSparse compiles for one shape and as the decode step
of a generation loop sees one shape per position. The graphs come from PyTorch's TorchScript exporter at
opset 14 with eager attention: DeepSparse 1.8 (onnx 1.14) reads them and compiles them whole, while the
dynamo exporter's opset-18 graph of the same model ran about 50 times slower in it (parts left to its
fallback). The pruned weights are stored as they are, zeros included: what an engine does with them is its
own business (``dlp_lib.engines``).

The folder also gets ``dlp_lib-manifest.json``, the list of files written (:mod:`dlp_lib.outputs`): an
export goes to a new or empty folder, or replaces an earlier export (``overwrite=True``) only if that
holds nothing else and nothing changed since; no file of another is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .engines import graph_inputs
from .outputs import directory_output

OPSET = 14
PROMPT_TEXT = (
    "The history of the region begins with small farming communities along the river, whose villages grew into "
    "market towns as trade routes opened to the north and the east. By the twelfth century the largest of them "
    "had walls, a cathedral and a charter granting its merchants the right to hold a weekly fair. "
)


class _Step(torch.nn.Module):
    """The model's forward with the cache as plain tensors (``past_0, past_1, ...`` = keys, values of block 0,
    ...), so an exporter sees tensors in and tensors out."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.blocks = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache

        cache = None
        if past:
            cache = DynamicCache()
            for block in range(self.blocks):
                cache.update(past[2 * block], past[2 * block + 1], block)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


@contextlib.contextmanager
def _eager_attention(model):
    """Eager attention while exporting: SDPA's masks trace into ops DeepSparse does not compile."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def prompt_ids(tokenizer, tokens: int) -> torch.Tensor:
    """``1 x tokens`` ids of real text (repeated as needed), so agreement of next-token predictions means
    something."""
    ids = tokenizer(PROMPT_TEXT * 64, return_tensors="pt")["input_ids"][0]
    if ids.numel() < tokens:
        ids = ids.repeat(tokens // ids.numel() + 1)
    return ids[:tokens].unsqueeze(0).long()


def step_inputs(model, tokenizer, prompt_tokens: int) -> dict:
    """The prefill and decode inputs and PyTorch's outputs on them, as numpy arrays (``reference.npz``)."""
    step = _Step(model).eval()
    ids = prompt_ids(tokenizer, prompt_tokens)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits, *present = step(ids, mask)
        next_id = logits[:, -1:].argmax(-1)
        decode_mask = torch.ones(1, prompt_tokens + 1, dtype=torch.long)
        decode_logits = step(next_id, decode_mask, *present)[0]
    arrays = {"prefill_input_ids": ids, "prefill_attention_mask": mask, "prefill_logits": logits}
    arrays |= {"decode_input_ids": next_id, "decode_attention_mask": decode_mask, "decode_logits": decode_logits}
    arrays |= {f"decode_past_{i}": t for i, t in enumerate(present)}
    return {name: t.detach().float().numpy() if t.is_floating_point() else t.numpy() for name, t in arrays.items()}


def export_onnx(
    model, tokenizer, directory: str | os.PathLike, prompt_tokens: int = 128, overwrite: bool = False
) -> dict:
    """Write ``prefill.onnx``, ``decode.onnx``, ``reference.npz`` and the manifest into ``directory`` (see the
    module's docstring); the model must be on the CPU in float32 (what every engine here reads). The folder
    is checked before the tracing: new or empty, or with ``overwrite`` an earlier export, else a one-line
    ConfigError. Written into a temporary folder beside it first, so an interrupted export leaves nothing
    behind; a replaced folder keeps its permissions. Returns the three paths."""
    if prompt_tokens < 1:
        raise ConfigError(f"prompt_tokens must be at least 1; got {prompt_tokens}")
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ConfigError(
            f"export_onnx needs the model on the CPU in float32 (got {parameter.dtype} on {parameter.device}); "
            "load it with dtype='float32', device='cpu'"
        )
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and prompt_tokens + 1 > positions:
        raise ConfigError(f"prompt_tokens + 1 = {prompt_tokens + 1} exceeds the model's {positions} positions")
    directory = Path(directory).expanduser()
    with directory_output(directory, "the ONNX export", "an ONNX export", overwrite) as staging:
        reference = step_inputs(model, tokenizer, prompt_tokens)
        np.savez(staging / "reference.npz", **reference)
        blocks = model.config.num_hidden_layers
        present = [f"present_{i}" for i in range(2 * blocks)]
        step = _Step(model).eval()
        with _eager_attention(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes taken as constants: they are fixed here
            for graph in ("prefill", "decode"):
                names, arrays = graph_inputs(reference, graph)
                args = tuple(torch.from_numpy(a) for a in arrays)
                torch.onnx.export(
                    step,
                    args,
                    str(staging / f"{graph}.onnx"),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=names,
                    output_names=["logits", *present],
                    do_constant_folding=True,
                )
    return {name: directory / name for name in ("prefill.onnx", "decode.onnx", "reference.npz")}
