"""Measuring what sparsity buys: per-linear products and end-to-end tokens/s, dense against sparse.

Used by ``bench/speedup.py`` (``make bench-speedup``) and notebook 09. Every timing is warm (untimed calls
first), synchronised on CUDA, and the best of several calls; every sparse result comes with its
difference from the dense one. A ratio below 1 is a slow-down and is reported as one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import torch

from .cache import write_json_atomic
from .inference import (
    SEMI_STRUCTURED_BACKENDS,
    semi_structured_weight,
    sparse_weight,
    storage_bytes,
    to_semi_structured,
    to_sparse_format,
)
from .masks import nm_mask, whole_matrix_mask

# Wanda's README / paper "Speedup Evaluation": seconds to compute the pruning metric (no forward passes),
# LLaMA-7B on one A100 (magnitude is not listed)
PUBLISHED_PRUNING_SECONDS = {"sparsegpt": 203.1, "wanda": 0.54}
PUBLISHED_PRUNING_SOURCE = "Wanda (Sun et al., 2024), LLaMA-7B, one A100"

# (label, out_features, in_features) of the LLaMA-2 linears: q/k/v/o, gate/up, down
LLAMA2_LINEARS = {
    "7b": [("7B q/k/v/o", 4096, 4096), ("7B gate/up", 11008, 4096), ("7B down", 4096, 11008)],
    "13b": [("13B q/k/v/o", 5120, 5120), ("13B gate/up", 13824, 5120), ("13B down", 5120, 13824)],
    "70b": [("70B q/o", 8192, 8192), ("70B gate/up", 28672, 8192), ("70B down", 8192, 28672)],
}


def live_shapes(setting: dict) -> list[tuple[str, int, int]]:
    """The linear shapes of a profile's ``speedup`` setting: the first ``linears`` of a LLaMA-2 size
    ("7b", "13b", "70b") or explicit ``[label, out_features, in_features]`` triples."""
    shapes = setting["shapes"]
    if isinstance(shapes, str):
        return LLAMA2_LINEARS[shapes][: setting.get("linears", 3)]
    return [(str(label), int(out_f), int(in_f)) for label, out_f, in_f in shapes]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device="cpu", repeats: int = 5, warmup: int = 2) -> float:
    """The best of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def pruned_weight(out_features: int, in_features: int, pattern: str, generator: torch.Generator) -> torch.Tensor:
    """A random fp32 weight pruned by magnitude: ``pattern`` "2:4" (or any "N:M") or a sparsity like "70%"."""
    weight = torch.randn(out_features, in_features, generator=generator)
    if ":" in pattern:
        n, m = (int(x) for x in pattern.split(":"))
        mask = nm_mask(weight.abs(), n, m)
    else:
        mask = whole_matrix_mask(weight.abs(), float(pattern.rstrip("%")) / 100)
    return weight.masked_fill(mask, 0.0)


def _difference(out: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    scale = float(reference.abs().max()) or 1.0
    return float((out.float() - reference.float()).abs().max()) / scale


@torch.no_grad()
def cpu_linear_products(
    shapes: list[tuple[str, int, int]],
    tokens: list[int],
    patterns: tuple[str, ...] = ("70%", "2:4"),
    formats: tuple[str, ...] = ("csr", "csc", "coo"),
    repeats: int = 5,
    seed: int = 0,
    warmup: int = 1,
) -> list[dict]:
    """``y = x W^T`` on the CPU in fp32, dense against each sparse storage of a pruned ``W``: one row per
    (shape, pattern, format, tokens) with both timings, ``speedup`` (dense / sparse seconds), the output
    difference and the storage of the sparse weight against the dense one."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        for label, out_features, in_features in shapes:
            for pattern in patterns:
                weight = pruned_weight(out_features, in_features, pattern, generator)
                density = float((weight != 0).float().mean())
                stored = {fmt: sparse_weight(weight, fmt) for fmt in formats}
                for count in tokens:
                    x = torch.randn(count, in_features, generator=generator)
                    dense_out = x @ weight.t()
                    dense_s = best_seconds(lambda: x @ weight.t(), repeats=repeats, warmup=warmup)
                    for fmt, sparse in stored.items():
                        xt = x.t().contiguous()
                        out = torch.sparse.mm(sparse, xt).t()
                        sparse_s = best_seconds(lambda: torch.sparse.mm(sparse, xt), repeats=repeats, warmup=warmup)
                        rows.append(
                            dict(
                                device="cpu",
                                shape=label,
                                out_features=out_features,
                                in_features=in_features,
                                pattern=pattern,
                                density=density,
                                format=fmt,
                                dtype="float32",
                                tokens=count,
                                dense_ms=1e3 * dense_s,
                                sparse_ms=1e3 * sparse_s,
                                speedup=dense_s / sparse_s,
                                difference=_difference(out, dense_out),
                                storage_ratio=storage_bytes(sparse) / storage_bytes(weight),
                            )
                        )
    return rows


@torch.no_grad()
def gpu_semi_structured_products(
    shapes: list[tuple[str, int, int]],
    tokens: list[int],
    dtypes: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16),
    backends: tuple[str, ...] = SEMI_STRUCTURED_BACKENDS,
    repeats: int = 20,
    seed: int = 0,
) -> list[dict]:
    """``y = x W^T`` on CUDA, dense against PyTorch's semi-structured 2:4 weight, for each backend that
    works; a backend that refuses (e.g. CUTLASS on sm90) gives a row with its error instead of timings."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label, out_features, in_features in shapes:
        base = pruned_weight(out_features, in_features, "2:4", generator)
        for dtype in dtypes:
            weight = base.to("cuda", dtype)
            for backend in backends:
                row = dict(device="cuda", shape=label, out_features=out_features, in_features=in_features)
                row.update(pattern="2:4", format=backend, dtype=str(dtype).replace("torch.", ""))
                try:
                    sparse = semi_structured_weight(weight, backend)
                except (RuntimeError, NotImplementedError) as err:
                    rows.append({**row, "error": str(err).splitlines()[0][:200]})
                    continue
                row["storage_ratio"] = storage_bytes(sparse) / storage_bytes(weight)
                for count in tokens:
                    x = torch.randn(count, in_features, generator=generator).to("cuda", dtype)
                    try:
                        out = torch.nn.functional.linear(x, sparse)
                        sparse_s = best_seconds(lambda: torch.nn.functional.linear(x, sparse), "cuda", repeats)
                    except (RuntimeError, NotImplementedError) as err:
                        rows.append({**row, "tokens": count, "error": str(err).splitlines()[0][:200]})
                        continue
                    dense_s = best_seconds(lambda: torch.nn.functional.linear(x, weight), "cuda", repeats)
                    reference = torch.nn.functional.linear(x, weight)
                    rows.append(
                        {
                            **row,
                            "tokens": count,
                            "dense_ms": 1e3 * dense_s,
                            "sparse_ms": 1e3 * sparse_s,
                            "speedup": dense_s / sparse_s,
                            "difference": _difference(out, reference),
                        }
                    )
    return rows


@torch.no_grad()
def tokens_per_second(model, prompt_tokens: int, decode_tokens: int, batch: int = 1, repeats: int = 3, seed: int = 0):
    """``(prefill tokens/s, decode tokens/s, logits of the prefill)`` of ``model``: one forward over
    ``batch`` x ``prompt_tokens`` random ids, then ``decode_tokens`` single-token steps with the KV cache."""
    device = next(p.device for p in model.parameters())
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt_tokens), generator=generator).to(device)
    step = torch.randint(0, vocab, (batch, 1), generator=generator).to(device)
    logits = model(input_ids=ids, use_cache=False).logits

    def prefill():
        return model(input_ids=ids, use_cache=True)

    def decode():
        cache = prefill().past_key_values
        for _ in range(decode_tokens):
            cache = model(input_ids=step, past_key_values=cache, use_cache=True).past_key_values

    prefill_s = best_seconds(prefill, device, repeats, warmup=1)
    decode_s = best_seconds(decode, device, repeats, warmup=1) - prefill_s
    return batch * prompt_tokens / prefill_s, batch * decode_tokens / max(decode_s, 1e-9), logits


def end_to_end(make_model, prune, convert, prompt_tokens: int, decode_tokens: int, repeats: int = 3) -> dict:
    """Prefill and decode tokens/s of a pruned model before and after ``convert`` (its linears to sparse
    storage), with the largest relative difference of the prefill logits."""
    model = make_model()
    prune(model)
    dense_prefill, dense_decode, dense_logits = tokens_per_second(model, prompt_tokens, decode_tokens, repeats=repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        convert(model)
        sparse_prefill, sparse_decode, logits = tokens_per_second(model, prompt_tokens, decode_tokens, repeats=repeats)
    return dict(
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        dense_prefill_tps=dense_prefill,
        sparse_prefill_tps=sparse_prefill,
        prefill_speedup=sparse_prefill / dense_prefill,
        dense_decode_tps=dense_decode,
        sparse_decode_tps=sparse_decode,
        decode_speedup=sparse_decode / dense_decode,
        difference=_difference(logits, dense_logits),
    )


def cpu_end_to_end(make_model, prune, fmt: str = "csr", **kwargs) -> dict:
    return {"format": fmt, **end_to_end(make_model, prune, lambda m: to_sparse_format(m, fmt), **kwargs)}


def gpu_end_to_end(make_model, prune, backend: str = "cusparselt", **kwargs) -> dict:
    return {"format": backend, **end_to_end(make_model, prune, lambda m: to_semi_structured(m, backend), **kwargs)}


# ------------------------------------------------------------------------------------- pruning speed
def pruning_speed(records: list[dict]) -> list[dict]:
    """Seconds spent pruning only (``prune_model``'s "pruning" phase: scores, masks, solver; no forward
    passes) per method, from result records of uniform unstructured runs: mean, min and max over them,
    beside the published figure."""
    by_method: dict[str, list[float]] = {}
    for record in records:
        pruning = record.get("pruning") or {}
        config = (record.get("config") or {}).get("prune") or {}
        seconds = (pruning.get("seconds") or {}).get("pruning")
        if seconds is None or config.get("allocation") != "uniform" or config.get("sparsity_type") != "unstructured":
            continue
        by_method.setdefault(config["method"], []).append(float(seconds))
    return [
        dict(
            method=method,
            runs=len(values),
            seconds=sum(values) / len(values),
            min_seconds=min(values),
            max_seconds=max(values),
            published_seconds=PUBLISHED_PRUNING_SECONDS.get(method),
        )
        for method, values in by_method.items()
    ]


# ------------------------------------------------------------------------------------------ results
def save_results(result: dict, path: str | Path) -> Path:
    """Write ``result`` as JSON atomically (``cache.write_json_atomic``)."""
    write_json_atomic(path, result)
    return Path(path)


def load_results(directory: str | Path, device: str) -> list[dict]:
    """Every committed ``speedup-*.json`` in ``directory`` measured on ``device`` ("cpu" or "cuda")."""
    found = []
    for path in sorted(Path(directory).glob("speedup-*.json")):
        result = json.loads(path.read_text())
        if result.get("device") == device:
            found.append({**result, "path": str(path)})
    return found


# ------------------------------------------------------------------------------------------ verdicts
NOISE = 0.10  # best-of-N timings on a shared machine still move by about this much between runs


def _where(row) -> str:
    return f"{row['shape']}, {row['pattern']} {row['format']}, {row['tokens']} tokens"


def verdicts(cpu, end_to_end, gpu, machine: str) -> str:
    """Markdown sentences of what the measurements show: how many products ran faster or slower than dense
    beyond the timing noise (+-10%), the extremes with where they happened, storage, end to end, and the
    committed GPU results. Nothing is claimed that was not measured."""
    lines = []
    if len(cpu):
        faster, slower = cpu[cpu["speedup"] > 1 + NOISE], cpu[cpu["speedup"] < 1 - NOISE]
        best, worst = cpu.loc[cpu["speedup"].idxmax()], cpu.loc[cpu["speedup"].idxmin()]
        lines.append(
            f"- **This CPU** ({machine}): of {len(cpu)} sparse products, {len(faster)} ran faster than dense "
            f"beyond the ±{100 * NOISE:.0f}% timing noise and {len(slower)} slower. Best {best['speedup']:.2f}x "
            f"({_where(best)}); worst {worst['speedup']:.2f}x ({_where(worst)})."
        )
        for pattern, rows in cpu.groupby("pattern", sort=False):
            ratios = rows.groupby("format", sort=False)["storage_ratio"].max()
            stored = ", ".join(f"{fmt.upper()} {ratio:.2f}x" for fmt, ratio in ratios.items())
            lines.append(
                f"- Storage of the {pattern} weight (density {rows['density'].max():.2f}) against dense fp32: "
                f"{stored} (int64 indices: a sparse format saves memory only well below 50% density)."
            )
    for _, row in end_to_end.iterrows() if len(end_to_end) else []:
        lines.append(
            f"- End to end, {row['model']} at {row['pattern']} in {row['format'].upper()}: prefill of "
            f"{row['prompt_tokens']} tokens {row['prefill_speedup']:.2f}x dense's tokens/s, decode "
            f"{row['decode_speedup']:.2f}x (logits within {row['difference']:.0e} of dense, relative)."
        )
    if len(gpu):
        for machine_name, rows in gpu.groupby("machine", sort=False):
            best, worst = rows.loc[rows["speedup"].idxmax()], rows.loc[rows["speedup"].idxmin()]
            faster = rows[rows["speedup"] > 1 + NOISE]
            lines.append(
                f"- **{machine_name}** (committed, not measured here): 2:4 faster than dense beyond ±10% in "
                f"{len(faster)} of {len(rows)} products; best {best['speedup']:.2f}x ({_where(best)}), worst "
                f"{worst['speedup']:.2f}x ({_where(worst)})."
            )
    else:
        lines.append("- No GPU measurement is committed, so nothing is said about 2:4 kernels on a GPU.")
    return "\n".join(lines)
