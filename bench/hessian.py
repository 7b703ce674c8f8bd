"""SparseGPT's two Hessian arithmetics on a half-precision model, measured on a CPU: ``make bench-hessian``.

    python bench/hessian.py                       # the embedded model in bf16, quick-profile sizes, seeds 0-2
    python bench/hessian.py --seeds 0 --cells uniform:unstructured   # one cell, one seed

On CUDA with bf16/fp16 activations, ``sparsegpt_hessian="half"`` forms ``x^T x`` from the activations as they
are, on tensor cores (4.5x faster than the reference's fp32 on the LLaMA-2-7B shape on an H200:
bench/results/h200-2026-12-04/gpu-7b.json). Every
product of two bf16 numbers is exact in fp32 and the sums are fp32 either way, so the two arithmetics differ
only in rounding: the scale 2/N applied to each sum instead of to every input, and the order of summation.
A CPU forms the same exact products from fp32 copies of the bf16 inputs with the same matrix product, so
here the two differ only in where the scale is applied: the same model in bf16, the same calibration
windows, SparseGPT with each arithmetic; the perplexities side by side, with the fraction of mask entries
that differ, against the committed reproduction tolerance (``tables/reproduction_tolerance.csv``: the
spread of re-runs whose statistics differ by float-level noise) of the same cell. Beside them, as a
yardstick of a float-level change on this very model, the fp32 arithmetic with every Hessian perturbed
by a relative 1e-6 (``PruneConfig.perturb``, one draw per seed). The calibration goes in batches of 3
windows (``--batch_size``): after a batch the Hessian holds N = 3, 6, 8 windows, so the scale 2/N is no
power of two and rounds differently in the two places (with 8 windows in one batch it is 1/4, exact
either way, and the two arithmetics agree bit for bit on a CPU). Writes bench/results/hessian-cpu.json
and .md (rewritten after every cell).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch

from dlp_lib import experiments as ex
from dlp_lib.cache import atomic_path, write_json_atomic
from dlp_lib.config import PruneConfig
from dlp_lib.data import calibration_windows, evaluation_windows
from dlp_lib.evaluation import perplexity
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.models import load_model
from dlp_lib.pipeline import block_allocation, cached_dense_norms
from dlp_lib.prune import prune_model
from dlp_lib.results import hardware, package_versions

ROOT = Path(__file__).resolve().parents[1]
CELLS = ["uniform:unstructured", "dlp:unstructured", "uniform:2:4"]  # allocation:sparsity type, SparseGPT


def tolerance(allocation: str, sparsity: float, path: Path = ROOT / "tables" / "reproduction_tolerance.csv"):
    """The committed reproduction tolerance (``tolerance_log``: |ln ppl| a re-run may move) of SparseGPT's
    cell, or None where none was measured (2:4)."""
    if not path.is_file():
        return None
    for row in csv.DictReader(path.open()):
        if (row["method"], row["allocation"], float(row["sparsity"])) == ("sparsegpt", allocation, sparsity):
            return float(row["tolerance_log"])
    return None


def masks_of(model) -> list[torch.Tensor]:
    return [lin.weight == 0 for block in decoder_blocks(model) for lin in linear_sublayers(block).values()]


def write_results(out: Path, result: dict) -> None:
    write_json_atomic(out / "hessian-cpu.json", result)
    s = result["settings"]
    lines = [
        f"# SparseGPT's Hessian arithmetic on a {s['dtype']} model (CPU): fp32 (the reference's) against half",
        "",
        f"Model {s['model']} in {s['dtype']}, calibration {s['nsamples']} x {s['seqlen']} tokens of {s['calibration']} "
        f"in batches of {s['batch_size']}, evaluation {s['eval_windows']} x {s['seqlen']} tokens of {s['eval']}; "
        f"SparseGPT, {s['sparsity']:.0%} unstructured or 2:4. half: x^T x from the bf16 activations (exact "
        "products, fp32 sums), scaled afterwards; fp32: the activations cast to fp32 and scaled, then x^T x; "
        "perturbed: fp32 with every Hessian times (1 + 1e-6 N(0, 1)), a float-level change for comparison. "
        "|ln ratio|: |ln(other / fp32)|; tolerance: the committed reproduction tolerance of the cell (|ln ppl| "
        "a re-run with float-level changes may move); masks: the fraction of mask entries that differ from fp32's.",
        "",
        "| allocation | pattern | seed | fp32 | half | abs ln ratio | masks | perturbed | abs ln ratio | masks "
        "| tolerance |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        tol = "–" if r["tolerance_log"] is None else f"{r['tolerance_log']:.3f}"
        lines.append(
            f"| {r['allocation']} | {r['sparsity_type']} | {r['seed']} | {r['perplexity_fp32']:.2f} | "
            f"{r['perplexity_half']:.2f} | {abs(math.log(r['ratio'])):.4f} | {100 * r['mask_disagreement_half']:.2f}% "
            f"| {r['perplexity_perturbed']:.2f} | {abs(math.log(r['ratio_perturbed'])):.4f} | "
            f"{100 * r['mask_disagreement_perturbed']:.2f}% | {tol} |"
        )
    if result["runs"]:
        runs = result["runs"]
        within = [r for r in runs if r["tolerance_log"] is not None]
        inside = sum(abs(math.log(r["ratio"])) <= r["tolerance_log"] for r in within)
        logs = {
            name: [math.log(r[key]) for r in runs]
            for name, key in (("half", "ratio"), ("perturbed", "ratio_perturbed"))
        }
        mean_abs = {name: sum(map(abs, values)) / len(values) for name, values in logs.items()}
        shifts = []
        for pattern in dict.fromkeys(r["sparsity_type"] for r in runs):
            values = [math.log(r["ratio"]) for r in runs if r["sparsity_type"] == pattern]
            shifts.append(f"{pattern} {sum(values) / len(values):+.4f} ({len(values)} cells)")
        lines += [
            "",
            f"half against fp32: {inside} of {len(within)} cells with a tolerance lie within it; |ln ratio| mean "
            f"{mean_abs['half']:.4f}, largest {max(map(abs, logs['half'])):.4f}; the 1e-6 perturbation's: mean "
            f"{mean_abs['perturbed']:.4f}, largest {max(map(abs, logs['perturbed'])):.4f}. Mean ln ratio of half "
            f"(a systematic shift would show here): {', '.join(shifts)}.",
        ]
    with atomic_path(out / "hessian-cpu.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="sizes and data of this profile (default: quick)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--seeds", default="0,1,2", help="calibration seeds (default: 0,1,2)")
    parser.add_argument("--batch_size", type=int, default=3, help="calibration windows per forward (default: 3)")
    parser.add_argument("--cells", default=",".join(CELLS), help="allocation:sparsity type, comma-separated")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    prof = ex.profile(args.profile)
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [cell.split(":", 1) for cell in args.cells.split(",")]
    model, tokenizer = load_model(prof["model"], args.dtype, "cpu")
    dense = [{n: lin.weight.detach().clone() for n, lin in linear_sublayers(b).items()} for b in decoder_blocks(model)]
    windows = evaluation_windows(prof["eval"], tokenizer, prof["seqlen"], prof["eval_windows"])
    settings = {k: prof[k] for k in ("model", "calibration", "eval", "nsamples", "seqlen", "eval_windows")}
    settings.update(
        dtype=args.dtype, sparsity=prof["main_sparsity"], seeds=seeds, cells=args.cells, batch_size=args.batch_size
    )
    result = {"settings": settings, "hardware": hardware(), "versions": package_versions(), "runs": []}
    out = Path(args.out)

    def restore():
        for block, weights in zip(decoder_blocks(model), dense):
            for name, lin in linear_sublayers(block).items():
                lin.weight.data = weights[name].clone()

    for seed in seeds:
        calibration = calibration_windows(prof["calibration"], tokenizer, prof["nsamples"], prof["seqlen"], seed)
        for allocation, sparsity_type in cells:
            sparsity = 0.5 if sparsity_type != "unstructured" else prof["main_sparsity"]
            row = {"allocation": allocation, "sparsity_type": sparsity_type, "seed": seed}
            masks = {}
            for name, hessian, perturb in (("fp32", "fp32", 0.0), ("half", "half", 0.0), ("perturbed", "fp32", 1e-6)):
                restore()
                config = PruneConfig(
                    "sparsegpt", sparsity, sparsity_type, allocation, sparsegpt_hessian=hessian, perturb=perturb,
                    perturb_seed=seed,
                )  # fmt: skip
                targets = None
                if allocation != "uniform":
                    norms, _ = cached_dense_norms(model, calibration, args.batch_size, progress=False)
                    targets = [1 - d for d in block_allocation(model, config, norms)["densities"]]
                start = time.perf_counter()
                report = prune_model(model, config, calibration, targets, None, args.batch_size, progress=False)
                row[f"perplexity_{name}"] = perplexity(model, windows, prof["eval_batch_size"], False)["perplexity"]
                row[f"seconds_{name}"] = time.perf_counter() - start
                row[f"applied_{name}"] = report.sparsegpt["hessian"]
                masks[name] = masks_of(model)
            total = sum(m.numel() for m in masks["fp32"])
            for name in ("half", "perturbed"):
                differ = sum(int((a != b).sum()) for a, b in zip(masks["fp32"], masks[name]))
                row[f"mask_disagreement_{name}"] = differ / total
            row["ratio"] = row["perplexity_half"] / row["perplexity_fp32"]
            row["ratio_perturbed"] = row["perplexity_perturbed"] / row["perplexity_fp32"]
            row["tolerance_log"] = tolerance(allocation, sparsity) if sparsity_type == "unstructured" else None
            result["runs"].append(row)
            print(
                f"seed {seed} {allocation} {sparsity_type}: fp32 {row['perplexity_fp32']:.2f}, half "
                f"{row['perplexity_half']:.2f} (x{row['ratio']:.4f}, masks differ in "
                f"{100 * row['mask_disagreement_half']:.3f}%), fp32 perturbed {row['perplexity_perturbed']:.2f} "
                f"(x{row['ratio_perturbed']:.4f}, {100 * row['mask_disagreement_perturbed']:.3f}%)",
                flush=True,
            )
            write_results(out, result)
    print(f"wrote {out / 'hessian-cpu'}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
