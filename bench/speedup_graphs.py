"""2:4 on a GPU with PyTorch's per-call host work taken out (CUDA graphs): ``make bench-speedup-graphs``.

    make bench-speedup-graphs                               # on a GPU machine; ARGS="--budget 240"
    PYTHONPATH=. python bench/speedup_graphs.py --budget 240 --out "$OUT"   # a GPU lent for minutes
    python bench/speedup_graphs.py --device cpu --shape tiny              # exercises the code on a CPU

1. Products ``y = x W^T`` at the LLaMA-2 7B/13B/70B linear shapes, 16/2048/8192 tokens, bf16, a
   magnitude-2:4 weight: dense and PyTorch's semi-structured 2:4 (cuSPARSELt and CUTLASS), each eager and
   replayed from a CUDA graph (``dlp_lib.graphs``).
2. End to end: a random LLaMA of 7B/13B/70B width (``--blocks`` decoder blocks, bf16), dense against 2:4:
   prefill of 16/2048/8192 tokens and one decode step at 2048 cached tokens (a static cache), eager and
   captured.

Parts run in that order while ``--budget`` seconds last (none starts after it); results are rewritten after
every shape and model into bench/results/cuda-graphs-<GPU>.{json,md}. Speed-up: dense time / 2:4 time
(below 1: a slow-down). On a CPU (``--device cpu``) nothing is captured and the dense weight stands in for
the 2:4 one: the run checks the code, not sparsity, and is written as ``cuda-graphs-cpu-exercise``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlp_lib import graphs, speedup  # noqa: E402
from dlp_lib.cache import atomic_path, write_json_atomic  # noqa: E402
from dlp_lib.config import PruneConfig  # noqa: E402
from dlp_lib.inference import SEMI_STRUCTURED_BACKENDS, semi_structured_unavailable  # noqa: E402
from dlp_lib.memory import llama2_config  # noqa: E402
from dlp_lib.prune import prune_model  # noqa: E402
from dlp_lib.results import hardware, machine_label, package_versions  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=256, tie_word_embeddings=False)


def settings(args) -> dict:
    """Shapes, token counts, model widths and backends of ``--shape``."""
    if args.shape == "tiny":
        return dict(
            shapes=[("tiny", 128, 64), ("tiny down", 64, 128)],
            tokens=[4, 16],
            models={"tiny": TINY},
            context=16,
            backends=(graphs.STANDIN,),
        )
    sizes = ["7b", "13b", "70b"]
    return dict(
        shapes=[s for size in sizes for s in speedup.LLAMA2_LINEARS[size]],
        tokens=[16, 2048, 8192],
        models={size: llama2_config(size) for size in sizes},
        context=2048,
        backends=SEMI_STRUCTURED_BACKENDS,
    )


def make_model_factory(config: dict, blocks: int, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    fields = {k: v for k, v in config.items() if k != "model_type"}
    llama = LlamaConfig(**{**fields, "num_hidden_layers": blocks, "max_position_embeddings": 16384})

    def make():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(llama, dtype=dtype).to(device).eval()

    return make


def markdown(result: dict) -> str:
    lines = [
        f"# 2:4 replayed from CUDA graphs, measured on {result['machine']}",
        "",
        f"Date {result['date']}. Speed-up: dense time / 2:4 time, both replayed from CUDA graphs (eager: both "
        "called from Python); below 1 is a slow-down.",
    ]
    if result["device"] != "cuda":
        lines += ["", "**A CPU exercise**: nothing was captured and the dense weight stood in for the 2:4 one."]
    rows = [r for r in result["products"] if "speedup" in r]
    if rows:
        lines += [
            "",
            "## Products",
            "",
            "| shape | format | tokens | dense ms | 2:4 ms | speed-up | eager speed-up | difference |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['shape']} ({r['out_features']}x{r['in_features']}) | {r['format']} | {r['tokens']} | "
            f"{r['dense_ms']:.3g} | {r['sparse_ms']:.3g} | {r['speedup']:.2f}x | {r['eager_speedup']:.2f}x | "
            f"{r['difference']:.1e} |"
            for r in rows
        ]
    rows = [r for r in result["end_to_end"] if "error" not in r]
    if rows:
        keys = [k[: -len("_speedup")] for k in rows[0] if k.endswith("_speedup") and "eager" not in k]
        lines += [
            "",
            f"## End to end ({result['settings']['blocks']} blocks, random weights)",
            "",
            "| width | format | " + " | ".join(f"{k} (eager)" for k in keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for r in rows:
            cells = [f"{r[k + '_speedup']:.2f}x ({r[k + '_eager_speedup']:.2f}x)" for k in keys]
            lines.append(f"| {r['width']} | {r['format']} | " + " | ".join(cells) + " |")
    errors = [r for r in result["products"] + result["end_to_end"] if "error" in r]
    if errors:
        lines += ["", "Refused or failed: " + "; ".join(f"{r.get('shape', r.get('width'))} {r['format']}"
                                                         f"{' ' + str(r['tokens']) if 'tokens' in r else ''}: "
                                                         f"{r['error']}" for r in errors)]  # fmt: skip
    if result.get("skipped"):
        lines += ["", "Not run (out of budget): " + ", ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default=None, choices=["llama2", "tiny"], help="default: llama2 on CUDA, else tiny")
    parser.add_argument("--blocks", type=int, default=4, help="decoder blocks of the end-to-end models")
    parser.add_argument("--repeats", type=int, default=20, help="best of N timed calls")
    parser.add_argument("--budget", type=float, default=None, help="start no part after this many seconds")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    args.shape = args.shape or ("llama2" if args.device == "cuda" else "tiny")
    if args.blocks < 1 or args.repeats < 1:
        parser.error("--blocks and --repeats must be at least 1")
    if args.budget is not None and not args.budget >= 0:
        parser.error(f"--budget is seconds after which no part starts, 0 or more; got {args.budget}")
    if args.device == "cuda":
        reason = semi_structured_unavailable()
        if reason:
            print(f"{reason}: nothing to measure (run with --device cpu to exercise the code)")
            return 0
    elif args.shape != "tiny":
        parser.error("on the CPU only --shape tiny runs (the 2:4 kernels need a CUDA GPU)")
    torch.set_grad_enabled(False)
    setup = settings(args)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    info = hardware()
    name = info["gpu"].replace(" ", "_") if args.device == "cuda" else "cpu-exercise"
    path = Path(args.out) / f"cuda-graphs-{name}.json"
    result = {
        "device": args.device,
        "machine": machine_label(info),
        "hardware": info,
        "versions": package_versions(),
        "date": datetime.date.today().isoformat(),
        "settings": {**vars(args), "tokens": setup["tokens"], "context": setup["context"]},
        "products": [],
        "end_to_end": [],
        "skipped": [],
    }
    start = time.time()

    def save():
        write_json_atomic(path, result)
        with atomic_path(path.with_suffix(".md")) as tmp:
            tmp.write_text(markdown(result))

    def in_budget(part: str) -> bool:
        if args.budget is not None and time.time() - start >= args.budget:
            result["skipped"].append(part)
            return False
        return True

    for shape in setup["shapes"]:
        if not in_budget(f"products {shape[0]}"):
            continue
        rows = graphs.captured_products(
            [shape], setup["tokens"], args.device, dtype, setup["backends"], repeats=args.repeats
        )
        result["products"] += rows
        for r in rows:
            summary = r.get("error") or f"x{r['speedup']:.2f} captured, x{r['eager_speedup']:.2f} eager"
            print(f"{r['shape']} {r['format']} {r.get('tokens', '')}: {summary}", flush=True)
        save()
    prune = lambda m: prune_model(m, PruneConfig("magnitude", 0.5, sparsity_type="2:4"), progress=False)  # noqa: E731
    for width, config in setup["models"].items():
        make = make_model_factory(config, args.blocks, args.device, dtype)
        for backend in setup["backends"]:
            if not in_budget(f"end to end {width} {backend}"):
                continue
            try:
                row = graphs.end_to_end(
                    make,
                    prune,
                    backend,
                    setup["tokens"],
                    setup["context"],
                    args.device,
                    repeats=max(3, args.repeats // 2),
                )
            except (RuntimeError, NotImplementedError) as err:
                row = {"format": backend, "error": graphs._error(err)}
            result["end_to_end"].append({"width": width, **row})
            print(f"end to end {width} {backend}: {row.get('error') or row.get('decode_speedup')}", flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()
            save()
    save()
    print(f"wrote {path} and {path.with_suffix('.md')} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
