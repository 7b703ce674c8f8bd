"""Peak memory of pruning, measured on randomly initialised models, against dlp_lib.memory's estimate.

    python bench/memory.py                      # CPU: LLaMA-2-7B widths with 2 blocks, 4 x 512 windows
    python bench/memory.py --device cuda --config 7b --nsamples 128 --seqlen 2048   # the real 7B shape

No weights are downloaded: the model is built from its configuration with random weights (time and
memory do not depend on the values). Each measurement runs in a fresh subprocess. On CUDA the peak is
``torch.cuda.max_memory_allocated`` during pruning, with the whole model on the GPU and with
``offload`` (model in CPU memory, one block at a time on the GPU). On CPU, where the "device" is the
process's own memory, the peak is the process's peak resident memory (VmHWM, reset after the model is
built) minus its resident memory before the model existed, for the whole-model path.

Writes bench/results/memory-<device>.json and .md, and prints the estimate for LLaMA-2 7B/13B/70B.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from dlp_lib.memory import estimate_peak_memory, llama2_config

GiB = 2**30
SHAPES = {
    # LLaMA-2-7B widths (hidden 4096, MLP 11008, 32 heads, vocabulary 32000) with only 2 decoder blocks
    "7b-2blocks": {**llama2_config("7b"), "num_hidden_layers": 2},
    "7b": llama2_config("7b"),
    "13b": llama2_config("13b"),
    "70b": llama2_config("70b"),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args) -> dict:
    """One measurement in this (fresh) process."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from dlp_lib.config import PruneConfig
    from dlp_lib.prune import prune_model

    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    cuda = args.device.startswith("cuda")
    before = _status("VmRSS")
    config = LlamaConfig(**{k: v for k, v in SHAPES[args.config].items() if k != "model_type"})
    home = "cpu" if (args.offload or not cuda) else args.device
    with torch.device(home):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    calibration = torch.randint(0, config.vocab_size, (args.nsamples, args.seqlen))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark: init temporaries are not counted
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    start = time.perf_counter()
    prune_model(
        model,
        PruneConfig(args.method, 0.7),
        calibration,
        batch_size=args.batch_size,
        progress=False,
        offload_device=args.device if args.offload else None,
    )
    result = {"seconds": time.perf_counter() - start, "peak_rss_over_start": _status("VmHWM") - before}
    if cuda:
        torch.cuda.synchronize()
        result["peak_gpu"] = torch.cuda.max_memory_allocated()
        result["gpu_before_pruning"] = base_gpu
    return result


def measure(args, method: str, offload: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--config", args.config, "--device", args.device]
    cmd += ["--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--batch_size", str(args.batch_size)]
    cmd += ["--dtype", args.dtype] + (["--offload"] if offload else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="7b-2blocks", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: float32 on CPU, bf16 on GPU")
    parser.add_argument("--nsamples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--offload", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if args.child:
        print(json.dumps(child(args)))
        return

    rows = []
    for method in args.methods.split(","):
        for offload in (False, True) if cuda else (False,):
            measured = measure(args, method, offload)
            est = estimate_peak_memory(
                SHAPES[args.config],
                args.nsamples,
                args.seqlen,
                args.batch_size,
                method,
                DTYPES[args.dtype],
                offload,
            )
            peak = measured["peak_gpu"] if cuda else measured["peak_rss_over_start"]
            estimate = sum(est.prune.values())
            row = {
                "method": method,
                "offload": offload,
                "measured_gib": peak / GiB,
                "estimated_gib": estimate / GiB,
                "estimate_terms_gib": {k: v / GiB for k, v in est.prune.items()},
                "seconds": measured["seconds"],
            }
            rows.append(row)
            print(
                f"{method:<10} offload={offload!s:<5} measured {row['measured_gib']:6.2f} GiB  "
                f"estimated {row['estimated_gib']:6.2f} GiB  ({measured['seconds']:.0f} s)",
                flush=True,
            )

    expected = []
    for size in ("7b", "13b", "70b"):
        for method in ("wanda", "sparsegpt"):
            whole, off = (
                estimate_peak_memory(llama2_config(size), method=method, dtype=torch.float16, offload=o)
                for o in (False, True)
            )
            expected.append(
                {"model": f"LLaMA-2-{size}", "method": method, "whole_gib": whole.device_peak / GiB}
                | {"offload_gib": off.device_peak / GiB, "host_gib": off.host_peak / GiB}
            )

    device = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} CPU"
    setup = (
        f"config {args.config}, {args.dtype}, {args.nsamples} x {args.seqlen} calibration tokens, "
        f"batch {args.batch_size}, 70% unstructured"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "memory-" + ("cuda" if cuda else "cpu")
    (out / f"{name}.json").write_text(
        json.dumps({"device": device, "setup": setup, "rows": rows, "expected_fp16_128x2048": expected}, indent=1)
    )
    lines = [
        f"# Peak memory of pruning: measured vs estimated ({device})",
        "",
        f"Random weights; {setup}. "
        + (
            "Peak = torch.cuda.max_memory_allocated during pruning."
            if cuda
            else "Peak = peak resident memory during pruning minus resident memory before the model was built."
        ),
        "",
        "| pruner | offload | measured (GiB) | estimated (GiB) | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {'yes' if r['offload'] else 'no'} | {r['measured_gib']:.2f} | {r['estimated_gib']:.2f} "
        f"| {r['seconds']:.0f} |"
        for r in rows
    ]
    lines += [
        "",
        "## Expected peak GPU memory at 128 x 2048 calibration tokens, fp16 (dlp_lib.memory estimate)",
        "",
        "| model | pruner | whole model on the GPU (GiB) | `--offload`: GPU (GiB) | `--offload`: CPU RAM (GiB) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['model']} | {e['method']} | {e['whole_gib']:.1f} | {e['offload_gib']:.1f} | {e['host_gib']:.1f} |"
        for e in expected
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
