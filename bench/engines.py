"""What pruned weights buy in CPU inference engines: ``make bench-engines``.

    make bench-engines                        # the quick grid (about 25 min on 2 cores)
    make bench-engines ARGS="--grid full"     # every pruner x allocation at 50% and 70%, and 2:4 (about 75 min)
    python bench/engines.py --engines onnxruntime,deepsparse --grid quick

For each model variant (the embedded model dense, then pruned: ``--grid quick`` is magnitude, Wanda and
SparseGPT at 70% Uniform, Wanda with OWL and DLP at 70%, Wanda at 50% and at 2:4; ``--grid full`` every
pruner x Uniform/OWL/DLP at 50% and 70% and every pruner at 2:4), this script prunes it here (PyTorch),
times it in PyTorch, exports it (``dlp_lib.export``: a prefill graph of ``--prompt_tokens`` tokens and a
decode step with that cache), and times the export in each engine (``dlp_lib.engines``, run in the
engines' own environment, ``--python``). The dense model is measured first and again last; the noise each
speed-up is read against is the larger of those runs' spread and the largest stray from 1 of the engines
without sparse kernels (PyTorch, ONNX Runtime: for them a pruned model is a dense one). Speed-ups are
each engine's dense time over its sparse time on the same graph shapes (below 1: a slow-down); outputs
are compared with PyTorch's on the same inputs. Results are rewritten after every variant into
bench/results/engines-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlp_lib import engines, export  # noqa: E402
from dlp_lib.cache import atomic_path, write_json_atomic  # noqa: E402
from dlp_lib.config import PruneConfig  # noqa: E402
from dlp_lib.data import calibration_windows  # noqa: E402
from dlp_lib.models import load_model  # noqa: E402
from dlp_lib.prune import prune_model  # noqa: E402
from dlp_lib.results import hardware, machine_label, package_versions  # noqa: E402
from dlp_lib.speedup import best_seconds  # noqa: E402

DEFAULT_PYTHON = ROOT / ".venv-engines" / "bin" / "python"
PRUNERS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("uniform", "owl", "dlp")


def grid(name: str) -> list[dict]:
    """The model variants of ``--grid``: dicts of method, allocation, pattern ("dense", "70%", "2:4")."""
    if name == "tiny":
        return [dict(method="magnitude", allocation="uniform", pattern="70%")]
    if name == "quick":
        variants = [dict(method=m, allocation="uniform", pattern="70%") for m in PRUNERS]
        variants += [dict(method="wanda", allocation=a, pattern="70%") for a in ("owl", "dlp")]
        variants += [dict(method="wanda", allocation="uniform", pattern=p) for p in ("50%", "2:4")]
        return variants
    variants = [dict(method=m, allocation=a, pattern=p) for p in ("50%", "70%") for m in PRUNERS for a in ALLOCATIONS]
    return variants + [dict(method=m, allocation="uniform", pattern="2:4") for m in PRUNERS]


def prune_config(variant: dict) -> PruneConfig:
    pattern = variant["pattern"]
    if ":" in pattern:
        return PruneConfig(variant["method"], 0.5, sparsity_type=pattern, allocation=variant["allocation"])
    return PruneConfig(variant["method"], float(pattern.rstrip("%")) / 100, allocation=variant["allocation"])


def label(variant: dict) -> str:
    if variant["pattern"] == "dense":
        return "dense"
    return f"{variant['method']} {variant['allocation']} {variant['pattern']}"


def pytorch_row(model, reference: dict, repeats: int) -> dict:
    """PyTorch itself on the same two steps (its default attention), for context beside the engines."""
    step = export._Step(model).eval()
    row = {"engine": "pytorch", "description": f"PyTorch {torch.__version__} eager, float32"}
    with torch.no_grad():
        for graph in ("prefill", "decode"):
            args = [torch.from_numpy(a) for a in engines.graph_inputs(reference, graph)[1]]
            seconds = best_seconds(lambda args=args: step(*args), repeats=repeats, warmup=1)
            row[f"{graph}_ms"] = seconds * 1e3
            row[f"{graph}_tps"] = args[0].shape[1] / seconds
    return row


def run_engine(python: str, name: str, directory: Path, repeats: int, timeout: int) -> dict:
    """``python -m dlp_lib.engines`` in the engines' environment; a failure becomes a row with its reason."""
    out = directory / f"{name}.json"
    command = [python, "-m", "dlp_lib.engines", str(directory), "--engine", name, "--repeats", str(repeats)]
    try:
        done = subprocess.run(
            command + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"engine": name, "error": f"timed out after {timeout} s"}
    if done.returncode != 0 or not out.is_file():
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return {"engine": name, "error": (lines[-1] if lines else f"exit {done.returncode}")[:300]}
    return json.loads(out.read_text())


def available(python: str, names: list[str]) -> dict:
    """Engine -> why it cannot run in ``python`` (None when it can)."""
    if not Path(python).exists():
        reason = f"{python} does not exist: run make engines-venv"
        return {name: reason for name in names}
    done = subprocess.run(
        [python, "-m", "dlp_lib.engines", "--available"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {name: f"{python} -m dlp_lib.engines failed: {done.stderr.strip()[-200:]}" for name in names}
    reasons = json.loads(done.stdout)
    return {name: reasons.get(name, f"unknown engine {name!r}") for name in names}


def markdown(result: dict) -> str:
    lines = [
        f"# Pruned weights in CPU inference engines, measured on {result['machine']}",
        "",
        f"Date {result['date']}. Model {result['model']}, prefill of {result['prompt_tokens']} tokens, decode step "
        f"with that cache, batch 1, best of {result['repeats']}. Speed-up: the engine's dense time over its "
        "sparse time (below 1: a slow-down), over the fastest of the dense runs (first and last). A ratio is "
        "called faster or slower only beyond the noise: the dense runs' spread, or the largest stray from 1 of "
        "the engines without sparse kernels (PyTorch, ONNX Runtime), at least 5%. Agreement: the fraction of "
        "positions whose greedy next token matches PyTorch's on the same pruned model.",
        "",
        "## Speed-ups over each engine's own dense run",
        "",
        "| variant | engine | prefill | decode | verdict (prefill / decode) | top-1 agreement (prefill / decode) |",
        "|---|---|---|---|---|---|",
    ]
    for e in result["speedups"]:
        agree = (
            f"{e['prefill_top1_agreement']:.3f} / {e['decode_top1_agreement']:.3f}"
            if "prefill_top1_agreement" in e
            else "-"
        )
        lines.append(
            f"| {e['variant']} | {e['engine']} | {e['prefill_speedup']:.2f}x | {e['decode_speedup']:.2f}x | "
            f"{engines.verdict(e, 'prefill')} / {engines.verdict(e, 'decode')} | {agree} |"
        )
    lines += [
        "",
        "## Every run: tokens/s",
        "",
        "| variant | engine | prefill tok/s | decode tok/s | compile s | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['engine']} | - | - | - | {r['error']} |")
            continue
        compile_s = r.get("prefill_compile_s", 0) + r.get("decode_compile_s", 0)
        note = ", ".join(f"{k}: {v}" for k, v in r.items() if k.endswith("linear_kernels") and k.startswith("decode"))
        if "decode_ms_unpacked" in r:
            note += (
                f"; without the packing: prefill {r['prefill_ms_unpacked']:.1f} ms, decode "
                f"{r['decode_ms_unpacked']:.1f} ms"
            )
        lines.append(
            f"| {r['variant']} | {r['engine']} | {r['prefill_tps']:.0f} | {r['decode_tps']:.1f} | "
            f"{compile_s:.0f} | {note} |"
        )
    skipped = {k: v for k, v in result["unavailable"].items() if v}
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    return "\n".join(lines) + "\n"


def save(result: dict, out: Path) -> None:
    result["speedups"] = engines.speedups(result["runs"])
    write_json_atomic(out / "engines-cpu.json", result)
    with atomic_path(out / "engines-cpu.md") as tmp:
        tmp.write_text(markdown(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="the model to prune and export (float32, CPU)")
    parser.add_argument("--grid", default="quick", choices=["quick", "full", "tiny"], help="which variants")
    parser.add_argument("--engines", default=",".join(engines.ENGINES), help="comma-separated engines")
    parser.add_argument("--python", default=str(DEFAULT_PYTHON), help="the engines' interpreter")
    parser.add_argument("--prompt_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="best of N timed calls")
    parser.add_argument("--nsamples", type=int, default=16, help="calibration windows (Wanda, SparseGPT, OWL, DLP)")
    parser.add_argument("--seqlen", type=int, default=256, help="calibration window length")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per engine run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    names = [n for n in args.engines.split(",") if n]
    unknown = [n for n in names if n not in engines.ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; use any of {', '.join(engines.ENGINES)}")
    for option in ("prompt_tokens", "repeats", "nsamples", "seqlen", "timeout"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1; got {getattr(args, option)}")
    reasons = available(args.python, names)
    runnable = [n for n in names if reasons[n] is None]
    for name in names:
        if reasons[name]:
            print(f"skipping {name}: {reasons[name]}", flush=True)
    if not runnable:
        print("no engine can run: make engines-venv installs them", file=sys.stderr)
        return 2
    dense = dict(method="-", allocation="-", pattern="dense")
    variants = [dense, *grid(args.grid), dense]
    torch.set_grad_enabled(False)
    info = hardware()
    result = {
        "machine": machine_label(info),
        "hardware": info,
        "versions": package_versions(),
        "date": datetime.date.today().isoformat(),
        "model": args.model,
        "prompt_tokens": args.prompt_tokens,
        "repeats": args.repeats,
        "grid": args.grid,
        "unavailable": reasons,
        "runs": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for index, variant in enumerate(variants, 1):
        name = label(variant)
        print(f"[{index}/{len(variants)}] {name} ({time.time() - start:.0f} s so far)", flush=True)
        model, tokenizer = load_model(args.model, "float32", "cpu")
        sparsity, block_range = 0.0, None
        if variant["pattern"] != "dense":
            config = prune_config(variant)
            calibration = None
            if config.method != "magnitude" or config.allocation != "uniform":
                calibration = calibration_windows("wiki-extracts", tokenizer, args.nsamples, args.seqlen, 0)
            report = prune_model(model, config, calibration, progress=False)
            sparsity = report.overall_achieved
            block_range = [min(report.block_achieved), max(report.block_achieved)]
        with tempfile.TemporaryDirectory(prefix="dlp-engines-") as tmp:
            directory = Path(tmp) / "export"
            export.export_onnx(model, tokenizer, directory, args.prompt_tokens)
            reference = dict(np.load(directory / "reference.npz"))
            rows = [pytorch_row(model, reference, args.repeats)]
            del model
            for engine in runnable:
                rows.append(run_engine(args.python, engine, directory, args.repeats, args.timeout))
        for row in rows:
            row |= {"variant": name, **variant, "sparsity": sparsity, "block_sparsity_range": block_range}
            summary = (
                row["error"]
                if "error" in row
                else f"prefill {row['prefill_tps']:.0f} tok/s, decode {row['decode_tps']:.1f} tok/s"
            )
            print(f"    {row['engine']}: {summary}", flush=True)
        result["runs"] += rows
        save(result, out)
    print(f"wrote {out / 'engines-cpu.json'} and .md in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
