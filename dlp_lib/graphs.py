"""2:4 on a GPU without PyTorch's per-call host work: products and model steps replayed as CUDA graphs.

PyTorch's cuSPARSELt path builds its descriptors, plan and workspace on every call (on an H200 a 2:4 product took
about 0.4 ms where the dense one took 0.02-0.25 ms), which is why eager 2:4 products measured 0.04-0.47x of dense
there (``bench/results/speedup-NVIDIA_H200.json``). A CUDA graph records the kernels once and replays them with no
host work, so dense and 2:4 are compared on what the GPU does.
Dense and sparse are captured the same way and timed the same way (warm, synchronised, best of N); the
eager timings of both stay beside them.

Used by ``bench/speedup_graphs.py``. On a machine without CUDA the same functions run uncaptured and with
``backend="standin"`` (the dense weight standing in for the 2:4 one): that exercises the code, it measures
nothing about sparsity.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .inference import SEMI_STRUCTURED_BACKENDS, semi_structured_weight, to_semi_structured
from .speedup import _difference, best_seconds, pruned_weight

STANDIN = "standin"


def capture(fn, device):
    """On CUDA, ``fn`` recorded once in a CUDA graph (after warm-up calls on a side stream, as capture
    requires); the returned callable replays it and returns the tensor the capture produced, overwritten
    in place. Its inputs must be tensors that stay where they are. Elsewhere ``fn`` itself."""
    if torch.device(device).type != "cuda":
        return fn
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    replay.graph = graph  # keep the graph (and its memory pool) alive as long as the callable
    return replay


def sparse_weight(weight: torch.Tensor, backend: str) -> torch.Tensor:
    """The 2:4 weight of ``backend`` ("cusparselt", "cutlass"), or the weight itself for "standin"."""
    return weight.clone() if backend == STANDIN else semi_structured_weight(weight, backend)


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}" if str(err) else type(err).__name__


@torch.no_grad()
def captured_products(
    shapes: list[tuple[str, int, int]],
    tokens: list[int],
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    backends: tuple[str, ...] = SEMI_STRUCTURED_BACKENDS,
    repeats: int = 20,
    seed: int = 0,
) -> list[dict]:
    """``y = x W^T`` for a magnitude-2:4 ``W``: dense and 2:4, each eager and replayed from a CUDA graph.
    One row per (shape, backend, tokens): ``speedup`` = captured dense / captured 2:4 time,
    ``eager_speedup`` the same uncaptured; a backend or capture that fails gives a row with ``error``."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label, out_features, in_features in shapes:
        weight = pruned_weight(out_features, in_features, "2:4", generator).to(device, dtype)
        for backend in backends:
            row = dict(shape=label, out_features=out_features, in_features=in_features, format=backend)
            row["dtype"] = str(dtype).replace("torch.", "")
            try:
                sparse = sparse_weight(weight, backend)
            except (RuntimeError, NotImplementedError, ValueError) as err:
                rows.append({**row, "error": _error(err)})
                continue
            for count in tokens:
                x = torch.randn(count, in_features, generator=generator).to(device, dtype)
                entry = {**row, "tokens": count}
                try:
                    dense_eager = best_seconds(lambda: F.linear(x, weight), device, repeats)
                    sparse_eager = best_seconds(lambda: F.linear(x, sparse), device, repeats)
                    dense = capture(lambda: F.linear(x, weight), device)
                    replay = capture(lambda: F.linear(x, sparse), device)
                    dense_s = best_seconds(dense, device, repeats)
                    sparse_s = best_seconds(replay, device, repeats)
                    difference = _difference(replay(), dense())
                except (RuntimeError, NotImplementedError) as err:
                    rows.append({**entry, "error": _error(err)})
                    continue
                rows.append(
                    {
                        **entry,
                        "dense_ms": 1e3 * dense_s,
                        "sparse_ms": 1e3 * sparse_s,
                        "speedup": dense_s / sparse_s,
                        "dense_eager_ms": 1e3 * dense_eager,
                        "sparse_eager_ms": 1e3 * sparse_eager,
                        "eager_speedup": dense_eager / sparse_eager,
                        "difference": difference,
                    }
                )
    return rows


@torch.no_grad()
def model_step_seconds(model, tokens: list[int], context: int, device: str, repeats: int = 10) -> dict:
    """Seconds of the model's forward over ``t`` tokens for each ``t`` in ``tokens`` (no cache: a prefill),
    and of one decode step at ``context`` cached tokens (a ``StaticCache``, whose tensors stay in place so
    the step can be captured), each eager and captured: ``{"prefill_<t>": (eager, captured), "decode":
    (eager, captured), "logits": the captured decode step's logits}``."""
    from transformers import StaticCache

    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    out = {}
    for count in tokens:
        ids = torch.randint(0, vocab, (1, count), generator=generator).to(device)

        def prefill(ids=ids):
            return model(input_ids=ids, use_cache=False).logits

        eager = best_seconds(prefill, device, repeats)
        out[f"prefill_{count}"] = (eager, best_seconds(capture(prefill, device), device, repeats))
    cache = StaticCache(config=model.config, max_cache_len=context + 1)
    prompt = torch.randint(0, vocab, (1, context), generator=generator).to(device)
    model(input_ids=prompt, past_key_values=cache, use_cache=True)
    step_ids = torch.randint(0, vocab, (1, 1), generator=generator).to(device)
    position = torch.tensor([[context]], device=device)

    def decode():
        # the same slot every call, a steady decode step at ``context`` cached tokens: each layer's fill
        # count (a tensor the cache advances in place) is set back first, inside the captured work
        for layer in cache.layers:
            layer.cumulative_length.fill_(context)
        return model(input_ids=step_ids, position_ids=position, past_key_values=cache, use_cache=True).logits

    eager_logits = decode().clone()
    eager = best_seconds(decode, device, repeats)
    replay = capture(decode, device)
    out["decode"] = (eager, best_seconds(replay, device, repeats))
    out["logits"] = replay()
    out["decode_difference"] = _difference(out["logits"], eager_logits)
    return out


def end_to_end(make_model, prune, backend: str, tokens: list[int], context: int, device: str, repeats=10) -> dict:
    """A model dense, then pruned to 2:4 and its linears given ``backend``'s weights: prefill at each of
    ``tokens`` and a decode step at ``context``, eager and captured. Speed-ups are dense / 2:4 of the same
    kind; ``difference`` compares the captured decode logits of the 2:4 model with the dense-stored pruned
    model's."""
    model = make_model()
    prune(model)
    dense = model_step_seconds(model, tokens, context, device, repeats)
    if backend != STANDIN:
        to_semi_structured(model, backend)
    sparse = model_step_seconds(model, tokens, context, device, repeats)
    row = {"format": backend, "context": context}
    for key in [f"prefill_{t}" for t in tokens] + ["decode"]:
        (dense_eager, dense_graph), (sparse_eager, sparse_graph) = dense[key], sparse[key]
        row[f"{key}_dense_ms"] = 1e3 * dense_graph
        row[f"{key}_sparse_ms"] = 1e3 * sparse_graph
        row[f"{key}_speedup"] = dense_graph / sparse_graph
        row[f"{key}_eager_speedup"] = dense_eager / sparse_eager
    row["difference"] = _difference(sparse["logits"], dense["logits"])
    row["capture_difference"] = max(dense["decode_difference"], sparse["decode_difference"])
    return row


def load_results(directory) -> list[dict]:
    """Every committed ``cuda-graphs-*.json`` in ``directory`` measured on a GPU (the CPU exercise excluded)."""
    found = []
    for path in sorted(Path(directory).glob("cuda-graphs-*.json")):
        result = json.loads(path.read_text())
        if result.get("device") == "cuda":
            found.append({**result, "path": str(path)})
    return found
