"""What sparsity buys at inference, measured: ``make bench-speedup``.

    python bench/speedup.py                 # this machine: CPU sparse formats (and, on CUDA, 2:4 kernels)
    python bench/speedup.py --quick         # 2 shapes, CSR and COO only (a couple of minutes on a CPU)
    python bench/speedup.py --tokens 1 16 128 512   # more token counts (CSC at 512 tokens takes minutes)

CPU: ``y = x W^T`` in fp32 at LLaMA-2-7B linear shapes for 1, 16 and 128 tokens, dense against the weight
pruned to 70% (unstructured) and to 2:4, stored as CSR, CSC and COO (``torch.sparse.mm``), with the output
difference and the sparse storage against dense; end to end, the embedded model pruned by magnitude
(70% and 2:4) with every decoder linear in CSR: prefill and decode tokens/s against the same model dense.

CUDA (compute capability >= 8.0): the same products for 2:4 through PyTorch's semi-structured tensors
(cuSPARSELt and CUTLASS, whichever works) at LLaMA-2 7B/13B/70B shapes, 16/2048/8192 tokens, bf16 and
fp16; end to end, a random-weight model of LLaMA-2-7B width (4 blocks) dense against 2:4.

Pruning speed: seconds spent pruning only (``prune_model``'s "pruning" phase: no forward passes) per
method, uniform 70%, on the embedded model, beside Wanda's published table (LLaMA-7B on an A100: SparseGPT
203.1 s, Wanda 0.54 s); at the LLaMA-2-7B shape on a GPU it is ``bench/gpu.py``'s solver-only column.

A ratio below 1 is a slow-down and is reported as one. Writes bench/results/speedup-<device>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dlp_lib import speedup
from dlp_lib.cache import atomic_path
from dlp_lib.config import PruneConfig
from dlp_lib.data import calibration_windows
from dlp_lib.inference import semi_structured_unavailable
from dlp_lib.models import load_model
from dlp_lib.prune import prune_model
from dlp_lib.results import hardware, machine_label, package_versions


def cpu_part(args) -> dict:
    shapes = speedup.LLAMA2_LINEARS["7b"][: 2 if args.quick else 3]
    formats = ("csr", "coo") if args.quick else tuple(args.formats.split(","))
    print(f"CPU products: {len(shapes)} shapes x {args.tokens} tokens x 70%/2:4 x {formats}", flush=True)
    products = speedup.cpu_linear_products(shapes, args.tokens, formats=formats, repeats=args.repeats)
    end_to_end = []
    for pattern in ("70%", "2:4"):
        config = (
            PruneConfig("magnitude", 0.7) if pattern == "70%" else PruneConfig("magnitude", 0.5, sparsity_type="2:4")
        )
        row = speedup.cpu_end_to_end(
            lambda: load_model(args.model, "float32", "cpu")[0],
            lambda m, config=config: prune_model(m, config, progress=False),
            "csr",
            prompt_tokens=args.prompt_tokens,
            decode_tokens=args.decode_tokens,
        )
        end_to_end.append({"model": args.model, "pattern": pattern, **row})
        print(f"end to end {pattern} CSR: prefill x{row['prefill_speedup']:.2f}, decode x{row['decode_speedup']:.2f}")
    return {"products": products, "end_to_end": end_to_end}


def gpu_part(args) -> dict:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from dlp_lib.memory import llama2_config

    sizes = ["7b"] if args.quick else ["7b", "13b", "70b"]
    shapes = [s for size in sizes for s in speedup.LLAMA2_LINEARS[size]]
    tokens = [16, 2048] if args.quick else [16, 2048, 8192]
    products = speedup.gpu_semi_structured_products(shapes, tokens)
    config = LlamaConfig(**{**llama2_config("7b"), "num_hidden_layers": 4})

    def make_model():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).to("cuda").eval()

    def prune(model):
        prune_model(model, PruneConfig("magnitude", 0.5, sparsity_type="2:4"), progress=False)

    end_to_end = []
    for backend in ("cusparselt", "cutlass"):
        try:
            row = speedup.gpu_end_to_end(make_model, prune, backend, prompt_tokens=2048, decode_tokens=32)
        except (RuntimeError, NotImplementedError) as err:
            row = {"format": backend, "error": str(err).splitlines()[0][:200]}
        end_to_end.append({"model": "LLaMA-2-7B width, 4 blocks, random weights, bf16", "pattern": "2:4", **row})
        torch.cuda.empty_cache()
    return {"products": products, "end_to_end": end_to_end}


def pruning_part(args, device: str) -> list[dict]:
    """The pruning phase of each method on the embedded model (a short calibration: the phase does
    not depend on its length but for Wanda's norms and SparseGPT's Hessians, accumulated outside it)."""
    rows = []
    for method in ("magnitude", "wanda", "sparsegpt"):
        model, tokenizer = load_model(args.model, "auto", device)
        calibration = calibration_windows("wiki-extracts", tokenizer, 4, 128, 0)
        report = prune_model(model, PruneConfig(method, 0.7), calibration, progress=False)
        rows.append(
            dict(
                method=method,
                model=args.model,
                seconds=report.seconds["pruning"],
                published_seconds=speedup.PUBLISHED_PRUNING_SECONDS.get(method),
            )
        )
        print(f"pruning only, {method}: {report.seconds['pruning']:.2f} s", flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [f"# What sparsity buys, measured on {result['machine']}", "", f"Date {result['date']}."]
    products = [r for r in result["products"] if "speedup" in r]
    if products:
        lines += [
            "",
            "## Products y = x W^T, dense time / sparse time (below 1: a slow-down)",
            "",
            "| shape | pattern | format | dtype | tokens | dense ms | sparse ms | speed-up | difference | storage |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in products:
            lines.append(
                f"| {r['shape']} ({r['out_features']}x{r['in_features']}) | {r['pattern']} | {r['format']} | "
                f"{r['dtype']} | {r['tokens']} | {r['dense_ms']:.3g} | {r['sparse_ms']:.3g} | {r['speedup']:.2f}x | "
                f"{r['difference']:.1e} | {r.get('storage_ratio', float('nan')):.2f}x |"
            )
    errors = [r for r in result["products"] + result["end_to_end"] if "error" in r]
    if errors:
        lines += [
            "",
            "Refused: " + "; ".join(f"{r.get('shape', r.get('model'))} {r['format']}: {r['error']}" for r in errors),
        ]
    rows = [r for r in result["end_to_end"] if "error" not in r]
    if rows:
        lines += [
            "",
            "## End to end, tokens/s (sparse / dense)",
            "",
            "| model | pattern | format | prefill dense | prefill sparse | x | decode dense | decode sparse | x "
            "| difference |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['pattern']} | {r['format']} | {r['dense_prefill_tps']:.0f} | "
                f"{r['sparse_prefill_tps']:.0f} | {r['prefill_speedup']:.2f} | {r['dense_decode_tps']:.1f} | "
                f"{r['sparse_decode_tps']:.1f} | {r['decode_speedup']:.2f} | {r['difference']:.1e} |"
            )
    lines += [
        "",
        f"## Pruning only (no forward passes), uniform 70%, beside {speedup.PUBLISHED_PRUNING_SOURCE}",
        "",
        "| method | model | seconds | published (LLaMA-7B) |",
        "|---|---|---|---|",
    ]
    for r in result["pruning"]:
        published = "-" if r["published_seconds"] is None else f"{r['published_seconds']} s"
        lines.append(f"| {r['method']} | {r['model']} | {r['seconds']:.2f} | {published} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="smollm2-135m", help="model of the CPU end-to-end and pruning runs")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and token counts")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timed calls per product")
    parser.add_argument(
        "--tokens", type=int, nargs="+", default=[1, 16, 128], help="CPU token counts (CSC at 512 takes minutes)"
    )
    parser.add_argument("--formats", default="csr,csc,coo", help="CPU sparse formats (--quick: csr,coo)")
    parser.add_argument("--prompt_tokens", type=int, default=128)
    parser.add_argument("--decode_tokens", type=int, default=16)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        reason = semi_structured_unavailable()
        if reason:
            print(f"{reason}: nothing to measure on CUDA (run with --device cpu for the CPU part)")
            return 0
    torch.set_grad_enabled(False)
    part = gpu_part(args) if args.device == "cuda" else cpu_part(args)
    info = hardware()
    result = {
        "device": args.device,
        "machine": machine_label(info),
        "hardware": info,
        "versions": package_versions(),
        "date": __import__("datetime").date.today().isoformat(),
        "settings": vars(args),
        **part,
        # on CUDA the pruning phase at the 7B shape is bench/gpu.py's "solver-only seconds"
        "pruning": pruning_part(args, "cpu") if args.device == "cpu" else [],
    }
    name = "cpu" if args.device == "cpu" else info["gpu"].replace(" ", "_")
    path = speedup.save_results(result, Path(args.out) / f"speedup-{name}.json")
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
