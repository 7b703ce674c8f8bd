"""Benchmark: the cost of pruning runs as multiples of the floor, peak memory, perplexity throughput.

    python bench/bench.py                      # embedded model, 16 x 512 calibration, CPU
    python bench/bench.py --allocations uniform,dlp --run_repeats 2   # best of 2 per run (noisy machine)
    python bench/bench.py --device cuda --nsamples 128 --seqlen 2048 --model meta-llama/Llama-2-7b-hf

The floor is one dense forward pass over the calibration windows, block by block (capture + every
block once, no hooks). Each pruner x allocation run is timed from the loaded model to the pruned model;
the dense statistics pass that OWL/DLP/DSA need is timed once and counted once (it is cached on disk),
and is reported on its own. Writes bench/results/<device>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from dlp_lib.cache import atomic_path, write_json_atomic
from dlp_lib.config import PruneConfig
from dlp_lib.data import calibration_windows, evaluation_windows
from dlp_lib.evaluation import perplexity
from dlp_lib.layers import batches, capture_block_inputs, decoder_blocks, run_block
from dlp_lib.models import load_model
from dlp_lib.pipeline import block_allocation
from dlp_lib.prune import dense_input_norms, prune_model
from dlp_lib.results import hardware as machine, package_versions

TARGETS = {"magnitude": 2.5, "wanda": 2.5, "sparsegpt": 2.8}  # x the floor; SparseGPT's solver costs more


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, interval=0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def floor_seconds(model, calibration, batch_size, device):
    sync(device)
    start = time.perf_counter()
    inputs = capture_block_inputs(model, calibration, batch_size)
    for block in decoder_blocks(model):
        inputs.hidden = [run_block(block, h, kw) for h, kw in zip(inputs.hidden, inputs.kwargs)]
    sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def forward_tokens_per_second(model, windows, batch_size, device):
    sync(device)
    start = time.perf_counter()
    for batch in batches(windows, batch_size):
        model(input_ids=batch.to(device), use_cache=False)
    sync(device)
    return windows.numel() / (time.perf_counter() - start)


def measure(fn, device):
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() if str(device).startswith("cuda") else None
    return out, seconds, rss.peak, gpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval_windows", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    parser.add_argument("--allocations", default="uniform,owl,dlp")
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for the throughput comparison")
    parser.add_argument(
        "--run_repeats", type=int, default=1, help="best of N for each pruning run (a shared machine is noisy)"
    )
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default=None, help="file name of the results (default: cpu<threads> or the GPU)")
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.model, args.dtype, args.device)
    calibration = calibration_windows("wiki-extracts", tokenizer, args.nsamples, args.seqlen, 0)
    eval_ids = evaluation_windows("wiki-extracts", tokenizer, args.seqlen, args.eval_windows)
    floor = min(floor_seconds(model, calibration, args.batch_size, args.device) for _ in range(2))
    print(f"floor: {floor:.2f} s (one dense block-by-block forward over {args.nsamples} x {args.seqlen})")
    norms, dense_seconds, *_ = measure(
        lambda: dense_input_norms(model, calibration, args.batch_size, False), args.device
    )
    print(f"dense statistics pass (once, cached): {dense_seconds:.2f} s = {dense_seconds / floor:.2f} x floor")

    rows = []
    for method in args.methods.split(","):
        for allocation in args.allocations.split(","):
            model, _ = load_model(args.model, args.dtype, args.device)
            config = PruneConfig(method, args.sparsity, allocation=allocation)

            def job():
                sparsities = None
                if allocation != "uniform":
                    sparsities = [1 - d for d in block_allocation(model, config, norms)["densities"]]
                return prune_model(model, config, calibration, sparsities, batch_size=args.batch_size, progress=False)

            seconds, rss, gpu = float("inf"), 0, None
            for _ in range(args.run_repeats):
                if seconds < float("inf"):
                    model, _ = load_model(args.model, args.dtype, args.device)
                _, took, rss_now, gpu_now = measure(job, args.device)
                seconds, rss, gpu = min(seconds, took), max(rss, rss_now), gpu_now if gpu is None else max(gpu, gpu_now)
            row = {
                "method": method,
                "allocation": allocation,
                "seconds": seconds,
                "x_floor": seconds / floor,
                "target_x_floor": TARGETS[method],
                "peak_rss_gb": rss / 2**30,
                "peak_gpu_gb": None if gpu is None else gpu / 2**30,
            }
            rows.append(row)
            print(
                f"{method:>9} {allocation:>7}: {seconds:7.2f} s  {row['x_floor']:.2f} x floor "
                f"(target <= {TARGETS[method]})  peak RSS {row['peak_rss_gb']:.2f} GB",
                flush=True,
            )

    model, _ = load_model(args.model, args.dtype, args.device)
    # the floor once more after the runs: the best of the three, since a slow moment of a shared machine
    # at the start would otherwise flatter every ratio
    floor_end = floor_seconds(model, calibration, args.batch_size, args.device)
    if floor_end < floor:
        print(f"floor after the runs: {floor_end:.2f} s (< {floor:.2f} s at the start); ratios use it")
        floor = floor_end
        for row in rows:
            row["x_floor"] = row["seconds"] / floor
    # interleaved, best of N: on a shared machine one measurement of each can differ by 10%
    plain, ppl_tps = 0.0, 0.0
    for _ in range(args.repeats):
        plain = max(plain, forward_tokens_per_second(model, eval_ids, args.batch_size, args.device))
        ppl = perplexity(model, eval_ids, args.batch_size, progress=False)
        ppl_tps = max(ppl_tps, ppl["tokens"] / ppl["seconds"])
    print(
        f"perplexity evaluation: {ppl_tps:.0f} tokens/s vs plain forward {plain:.0f} tokens/s "
        f"({100 * ppl_tps / plain:.0f}%, target >= 90%)"
    )

    hardware = {"device": args.device, **machine()}  # CPU model, vector kernels, BLAS: what moves the seconds
    hardware["gpu"] = hardware.get("gpu") if str(args.device).startswith("cuda") else None
    result = {
        "settings": vars(args),
        "hardware": hardware,
        "versions": package_versions(),
        "floor_seconds": floor,
        "dense_statistics_seconds": dense_seconds,
        "runs": rows,
        "eval_tokens_per_second": ppl_tps,
        "forward_tokens_per_second": plain,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or (hardware["gpu"] or f"cpu{hardware['cpu_threads']}").replace(" ", "_")
    write_json_atomic(out / f"{name}.json", result)
    where = hardware["gpu"] or f"CPU ({hardware['cpu_model'] or 'unknown model'}, {hardware['cpu_threads']} threads)"
    lines = [
        f"# Benchmark on {where}, model {args.model}",
        "",
        f"Calibration {args.nsamples} x {args.seqlen}, batch {args.batch_size}, sparsity {args.sparsity}; "
        f"each run the best of {args.run_repeats}. Floor (one dense forward, block by block; the best of two "
        f"before the runs and one after): {floor:.2f} s. Dense statistics pass, once: "
        f"{dense_seconds:.2f} s ({dense_seconds / floor:.2f} x floor).",
        "",
        "| pruner | allocation | seconds | x floor | target | peak RSS (GB) | peak GPU (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gpu = "-" if r["peak_gpu_gb"] is None else f"{r['peak_gpu_gb']:.2f}"
        lines.append(
            f"| {r['method']} | {r['allocation']} | {r['seconds']:.2f} | {r['x_floor']:.2f} | "
            f"<= {r['target_x_floor']} | {r['peak_rss_gb']:.2f} | {gpu} |"
        )
    lines += [
        "",
        f"Perplexity evaluation {ppl_tps:.0f} tokens/s; plain forward {plain:.0f} tokens/s, best of {args.repeats} "
        f"({100 * ppl_tps / plain:.0f}%).",
    ]
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"wrote {out / name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
