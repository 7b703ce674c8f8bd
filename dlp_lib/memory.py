"""Expected peak memory of a pruning run, from the model's configuration alone (no weights needed).

The estimate adds the terms that are alive together at the worst moment of the block-by-block loop
(``prune.prune_model``) and of the perplexity evaluation:

* ``weights``: the decoder blocks and the embeddings / final norm / LM head, in the model's dtype. With
  ``offload`` only one block (plus the embeddings while capturing block 0's inputs, and the head for
  evaluation) is on the device; the rest stays in CPU memory (``host``).
* ``calibration activations``: the calibration hidden states, ``nsamples x seqlen x hidden`` in the
  model's dtype, twice while a block's outputs are recomputed (old inputs and new outputs).
* ``statistics``: Wanda's fp32 input norms (negligible) or SparseGPT's fp32 Hessians, one per distinct
  linear input of a block (q/k/v share one, gate/up share one: ``3 hidden^2 + intermediate^2`` for LLaMA).
* ``forward or solve``, whichever is larger: one calibration batch through one block (the MLP
  intermediates, q/k/v/attention output, and the fp32 copy of the widest linear input the statistics
  hooks make), or pruning the largest linear (the fp32 scores with the sort's or kthvalue's values and
  int64 indices; SparseGPT: an fp32 copy of the weight and three inverse-Hessian-sized matrices).
* evaluation: the ``weights``, the hidden states of all evaluation windows when offloaded, one batch's
  ``forward``, and its ``logits`` (model dtype) with one fp32 chunk of the loss.

The numbers are estimates (allocator caching and fragmentation come on top); ``bench/memory.py``
compares them with measured peaks. Example::

    >>> from transformers import AutoConfig
    >>> est = estimate_peak_memory(AutoConfig.from_pretrained("meta-llama/Llama-2-7b-hf"), method="sparsegpt",
    ...                            offload=True)
    >>> est.device_peak / 2**30  # GiB on the GPU
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import ConfigError
from .evaluation import LOSS_CHUNK

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}
METHODS = ("magnitude", "wanda", "sparsegpt", "ria")


@dataclass(frozen=True)
class Shapes:
    """The sizes that memory depends on, read from a decoder-only model's configuration."""

    hidden: int
    intermediate: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    tied_embeddings: bool
    gated_mlp: bool = True  # LLaMA/Mistral/Qwen2: gate, up, down; OPT: fc1, fc2

    @classmethod
    def from_config(cls, config) -> Shapes:
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        hidden = get("hidden_size")
        intermediate = get("intermediate_size") or get("ffn_dim")
        layers, vocab = get("num_hidden_layers"), get("vocab_size")
        if not all(isinstance(v, int) and v > 0 for v in (hidden, intermediate, layers, vocab)):
            raise ConfigError(
                "the configuration needs positive hidden_size, intermediate_size (or ffn_dim), num_hidden_layers "
                "and vocab_size"
            )
        heads = get("num_attention_heads") or 1
        return cls(
            hidden=hidden,
            intermediate=intermediate,
            layers=layers,
            vocab=vocab,
            heads=heads,
            kv_heads=get("num_key_value_heads") or heads,
            tied_embeddings=bool(get("tie_word_embeddings", False)),
            gated_mlp=get("model_type") != "opt",
        )

    @property
    def block_params(self) -> int:
        h, kv = self.hidden, self.hidden * self.kv_heads // self.heads
        attention = 2 * h * h + 2 * h * kv
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate
        return attention + mlp + 2 * h

    @property
    def largest_linear(self) -> int:
        return self.hidden * self.intermediate

    @property
    def outer_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    @property
    def hessian_inputs(self) -> list[int]:
        """Input width of each distinct statistic of a block, shared inputs counted once: q/k/v, o,
        gate/up (fc1), down (fc2)."""
        return [self.hidden, self.hidden, self.hidden, self.intermediate]


@dataclass
class MemoryEstimate:
    """Bytes per term (see the module docstring) on the compute device at the worst moment of each
    phase (``prune``: calibration statistics and pruning; ``evaluate``: perplexity), and in CPU memory."""

    prune: dict[str, int] = field(default_factory=dict)
    evaluate: dict[str, int] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)

    @property
    def device_peak(self) -> int:
        return max(sum(self.prune.values()), sum(self.evaluate.values()))

    @property
    def host_peak(self) -> int:
        return sum(self.host.values())

    def to_dict(self) -> dict:
        return {
            "prune": dict(self.prune),
            "evaluate": dict(self.evaluate),
            "host": dict(self.host),
            "device_peak": self.device_peak,
        }


def estimate_peak_memory(
    config,
    nsamples: int = 128,
    seqlen: int = 2048,
    batch_size: int = 8,
    method: str = "wanda",
    dtype: torch.dtype = torch.float16,
    offload: bool = False,
    eval_windows: int = 166,
    eval_batch_size: int = 1,
) -> MemoryEstimate:
    """Peak memory of pruning and evaluating a model with ``config`` (a transformers config or dict).

    ``offload=False``: the whole model on the device. ``offload=True``: the model in CPU memory and one
    block at a time on the device (``--offload``); the offloaded evaluation then holds the hidden states
    of all ``eval_windows`` (166 x 2048 tokens is WikiText-2 test with the LLaMA tokenizer). Magnitude
    pruning needs no calibration activations.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if dtype not in _BYTES:
        raise ConfigError(f"dtype must be float32, float16 or bfloat16; got {dtype}")
    s = Shapes.from_config(config)
    b = _BYTES[dtype]
    block, outer = s.block_params * b, s.outer_params * b
    model = s.layers * block + outer

    def forward(windows: int) -> int:  # one batch through one block
        tokens = windows * seqlen
        return tokens * ((3 if s.gated_mlp else 1) * s.intermediate + 4 * s.hidden) * b

    est = MemoryEstimate(host={"weights": model if offload else 0})
    weights = block + outer if offload else model
    if method == "magnitude":
        # |W| in fp32, the selection's working copy and int64 indices (CUDA's topk keeps 30% of them), the mask
        est.prune = {"weights": weights, "solve": s.largest_linear * (4 + 4 + 8 + 1)}
    else:
        calibration = 2 * nsamples * seqlen * s.hidden * b  # inputs and recomputed outputs
        hooks = min(batch_size, nsamples) * seqlen * s.intermediate * 4
        if method == "sparsegpt":
            statistics = sum(d * d for d in s.hessian_inputs) * 4
            solve = s.largest_linear * 4 + 3 * s.intermediate**2 * 4  # W in fp32; H, Cholesky, U
        else:
            statistics = sum(s.hessian_inputs) * 4
            solve = s.largest_linear * (4 + 4 + 8 + 1)  # scores, sorted values, int64 indices, mask
        est.prune = {
            "weights": weights,
            "calibration activations": calibration,
            "statistics": statistics,
            "forward or solve": max(forward(min(batch_size, nsamples)) + hooks, solve),
        }
    held = 2 * eval_windows * seqlen * s.hidden * b if offload else 0
    rows = eval_batch_size * (seqlen - 1)  # positions with a target (evaluation.perplexity)
    est.evaluate = {
        "weights": weights,
        "evaluation activations": held,
        "forward": forward(eval_batch_size),
        "logits": rows * s.vocab * b + min(rows, LOSS_CHUNK) * s.vocab * 4,  # + the loss's fp32 chunk
    }
    return est


def llama2_config(size: str) -> dict:
    """The published LLaMA-2 configurations (7b, 13b, 70b), for estimates without downloading."""
    table = {
        "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
        "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
        "70b": dict(
            hidden_size=8192,
            intermediate_size=28672,
            num_hidden_layers=80,
            num_attention_heads=64,
            num_key_value_heads=8,
        ),
    }
    if size not in table:
        raise ConfigError(f"unknown LLaMA-2 size {size!r}; use one of {', '.join(table)}")
    return {"model_type": "llama", "vocab_size": 32000, "tie_word_embeddings": False, **table[size]}


def available_memory(device) -> int | None:
    """Bytes free on ``device`` now: the GPU's free memory, or the host's MemAvailable (None if unknown)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(
    model, nsamples: int, seqlen: int, batch_size: int, method: str, device, offload: bool = False
) -> None:
    """Refuse a calibration that cannot fit, before building it: the activations and statistics that
    ``dlp_lib.memory`` estimates for ``nsamples`` x ``seqlen`` beyond the loaded weights, against what
    ``device`` has free now."""
    dtype = next(model.parameters()).dtype
    if dtype not in _BYTES:
        return
    estimate = estimate_peak_memory(model.config, nsamples, seqlen, batch_size, method, dtype, offload).prune
    needed = sum(v for k, v in estimate.items() if k != "weights")
    free = available_memory("cpu" if offload else device)
    if free is not None and needed > free:
        gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
        where = device if str(device).startswith("cuda") and not offload else "the host"
        raise ConfigError(
            f"{nsamples} calibration windows of {seqlen} tokens need about {gib(needed)} beyond the weights "
            f"({gib(estimate.get('calibration activations', 0))} of activations, dlp_lib.memory's estimate); "
            f"{where} has {gib(free)} free: use fewer --nsamples or a shorter --seqlen"
        )
