"""GPU benchmark on the LLaMA-2-7B shape with random weights (no download): ``make bench-gpu``.

    python bench/gpu.py                                   # CUDA, 7B shape, 128 x 2048 calibration, bf16
    python bench/gpu.py --device cpu --config tiny --nsamples 4 --seqlen 64   # exercise it on a CPU

Every timing is warm (one untimed pass of the same shapes first) and synchronised. Reports the floor (one
dense block-by-block forward), the dense statistics pass, magnitude / Wanda / SparseGPT at 70% and at 2:4,
Wanda DLP, Wanda with ``--offload``, each run's statistics seconds (SparseGPT: the Hessians) and solver-only
seconds (``prune_model``'s "pruning" phase: no forward passes), the latter beside the Wanda paper's speed
table (LLaMA-7B on an A100: SparseGPT 203 s, Wanda 0.54 s; shown for the default 7B config at 128 x 2048
only, the paper's size), peak memory against ``dlp_lib.memory``'s estimate, and the acceptance targets of
the GPU path (``TARGETS``, on the 7B shape).

SparseGPT runs with the CUDA defaults (``sparsegpt_sweep`` and ``sparsegpt_hessian`` "auto": the Triton
sweep, Hessians from the bf16 activations on tensor cores), with the reference's fp32 Hessians, and with
the PyTorch loop instead of Triton; each of the latter two has its first and last blocks' weights compared
with the default run's (the PyTorch loop must equal it bit for bit). Before the runs: the k-th smallest
value on the device (``dlp_lib.masks.kth_smallest``) against ``torch.kthvalue``, timed and compared on the
selections the pruners make; and a parity check: each pruner (SparseGPT with each sweep) on one fp32
4-block LLaMA, on the CPU and on the device, with the mask disagreement between them.
Writes bench/results/gpu-<config>.json and .md.
Without CUDA (and without ``--device cpu``) it says so and exits 0.

For a GPU lent for minutes: the runs go most wanted first, a run that fails is reported while the others go
on, each warm-up is a pass over the first two blocks only (``--warm-blocks``), ``--budget S`` starts no run
after S seconds, and the JSON and Markdown are rewritten (atomically) after every run, so a command killed
at its time limit keeps every run it finished. The whole table takes about 5 minutes of an H200:

    PYTHONPATH=. PYTHONUNBUFFERED=1 timeout 360 python bench/gpu.py --budget 290 --out "$OUT"
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from dlp_lib.cache import atomic_path, write_json_atomic
from dlp_lib.config import PruneConfig
from dlp_lib.layers import blocks_replaced, capture_block_inputs, decoder_blocks, linear_sublayers, run_block
from dlp_lib.masks import kth_smallest
from dlp_lib.memory import estimate_peak_memory, llama2_config
from dlp_lib.pipeline import block_allocation
from dlp_lib.prune import dense_input_norms, prune_model
from dlp_lib.results import hardware, package_versions
from dlp_lib.speedup import PUBLISHED_PRUNING_SECONDS

# the Wanda paper's "Speedup Evaluation": seconds to compute the pruning metric, LLaMA-7B, one A100,
# 128 x 2048 calibration tokens; shown only beside a run of that size
PAPER_SOLVER_SECONDS = {"magnitude": None, **PUBLISHED_PRUNING_SECONDS}
PAPER_SETTING = {"config": "7b", "nsamples": 128, "seqlen": 2048}
CONFIGS = {
    "7b": llama2_config("7b"),
    "7b-2blocks": {**llama2_config("7b"), "num_hidden_layers": 2},
    "tiny": dict(
        model_type="llama",
        vocab_size=512,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        tie_word_embeddings=False,
    ),  # fmt: skip
}
PARITY_CONFIG = {**CONFIGS["tiny"], "hidden_size": 256, "intermediate_size": 688}  # fp32
PARITY_RUNS = [  # (method, sparsity_type, the device's SparseGPT sweep): pruned on the CPU and on the device
    ("magnitude", "unstructured", "auto"),
    ("wanda", "unstructured", "auto"),
    ("wanda", "2:4", "auto"),
    ("sparsegpt", "unstructured", "auto"),
    ("sparsegpt", "unstructured", "torch"),
    ("sparsegpt", "2:4", "auto"),
    ("sparsegpt", "2:4", "torch"),
]
REFERENCE_ARITHMETIC = {"sparsegpt_hessian": "fp32"}  # the reference's Hessians (every sweep has its arithmetic)
RUNS = [  # (label, method, allocation, sparsity_type, offload, SparseGPT options), most wanted first
    ("magnitude", "magnitude", "uniform", "unstructured", False, {}),
    ("sparsegpt", "sparsegpt", "uniform", "unstructured", False, {}),
    ("sparsegpt fp32 Hessian", "sparsegpt", "uniform", "unstructured", False, REFERENCE_ARITHMETIC),
    ("wanda", "wanda", "uniform", "unstructured", False, {}),
    ("sparsegpt 2:4", "sparsegpt", "uniform", "2:4", False, {}),
    ("wanda DLP", "wanda", "dlp", "unstructured", False, {}),
    ("wanda 2:4", "wanda", "uniform", "2:4", False, {}),
    ("magnitude 2:4", "magnitude", "uniform", "2:4", False, {}),
    ("wanda --offload", "wanda", "uniform", "unstructured", True, {}),
    ("sparsegpt PyTorch loop", "sparsegpt", "uniform", "unstructured", False, {"sparsegpt_sweep": "torch"}),
]
COMPARED_WITH_DEFAULT = ("sparsegpt fp32 Hessian", "sparsegpt PyTorch loop")  # against the "sparsegpt" run
# what the GPU path should reach on the 7B shape: (run, measure, at most)
TARGETS = [
    ("magnitude", "solver_seconds", 1.0),
    ("sparsegpt", "x_floor", 3.5),
    ("sparsegpt", "solver_seconds", 10.0),
    ("sparsegpt fp32 Hessian", "x_floor", 7.0),
    ("wanda", "x_floor", 2.0),
]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(config: dict, dtype: torch.dtype, device: str):
    """A randomly initialised LLaMA of the given widths, built directly on ``device`` (seconds on a GPU)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config), dtype=dtype)
    return model.eval()


@torch.no_grad()
def floor_pass(model, calibration, batch_size):
    inputs = capture_block_inputs(model, calibration, batch_size)
    for block in decoder_blocks(model):
        inputs.hidden = [run_block(block, h, kw) for h, kw in zip(inputs.hidden, inputs.kwargs)]


def first_blocks(model, count: int | None):
    """While active the model has only its first ``count`` decoder blocks (all if None): a warm-up on two
    blocks meets every kernel shape of the full run at a sixteenth of a 7B model's cost."""
    blocks = decoder_blocks(model)
    if count is None or count >= len(blocks):
        return nullcontext()
    return blocks_replaced(model, torch.nn.ModuleList(blocks[:count]))


def timed(fn, device: str):
    """``(result, seconds, peak GPU bytes or None)`` of ``fn()``, synchronised."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() if cuda else None


def weights_of(model, blocks=None) -> dict:
    """``{(block, linear name): weight on the CPU}`` of the given blocks (all if None)."""
    every = decoder_blocks(model)
    chosen = range(len(every)) if blocks is None else blocks
    return {
        (i, name): lin.weight.detach().to("cpu", copy=True)
        for i in chosen
        for name, lin in linear_sublayers(every[i]).items()
    }


def device_parity(device: str, batch_size: int = 4) -> list[dict]:
    """Each pruner on the same fp32 4-block LLaMA (hidden 256), once on the CPU and once on ``device``,
    the results compared: how far ``device``'s masks and weights (SparseGPT: with the row's sweep) are from
    the CPU's (its own default loop, the C loop). Seconds on a GPU."""
    reference = build_model(PARITY_CONFIG, torch.float32, "cpu")
    calibration = torch.randint(0, PARITY_CONFIG["vocab_size"], (8, 128), generator=torch.Generator().manual_seed(1))
    rows = []
    for method, sparsity_type, sweep in PARITY_RUNS:
        sparsity = 0.5 if sparsity_type == "2:4" else 0.7
        snapshots = []
        row = {"method": method, "sparsity_type": sparsity_type, "sweep": sweep}
        try:
            for where, mode in (("cpu", "auto"), (device, sweep)):
                prune = PruneConfig(method, sparsity, sparsity_type, sparsegpt_sweep=mode)
                model = copy.deepcopy(reference).to(where)
                prune_model(model, prune, calibration, batch_size=batch_size, progress=False)
                snapshots.append(weights_of(model))
            row.update(compare_weights(*snapshots))
        except Exception as error:  # reported, not fatal: the timed runs still follow
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
    return rows


def compare_weights(reference: dict, other: dict) -> dict:
    """Equality, mask disagreement (fraction of entries zero in one and not the other) and the largest
    weight difference between two snapshots of the same linears."""
    differ = total = 0
    largest = 0.0
    for key, weight in reference.items():
        differ += int(((weight == 0) != (other[key] == 0)).sum())
        total += weight.numel()
        largest = max(largest, float((weight.float() - other[key].float()).abs().max()))
    return {"weights_equal": largest == 0.0, "mask_disagreement": differ / total, "max_weight_difference": largest}


def selections(config: dict) -> list[tuple[str, tuple[int, ...], float]]:
    """The selections the pruners make at 70% on a model of ``config``'s widths: (what, shape, fraction):
    magnitude's whole down projection, SparseGPT's 128-column blocks of the gate (or up) and of a
    hidden-wide linear, Wanda's rows of the down projection."""
    hidden, mlp = config["hidden_size"], config["intermediate_size"]
    return [
        (f"magnitude: whole {hidden} x {mlp}", (hidden * mlp,), 0.7),
        (f"SparseGPT: block {mlp} x 128", (mlp * 128,), 0.7),
        (f"SparseGPT: block {hidden} x 128", (hidden * 128,), 0.7),
        (f"Wanda: {hidden} rows of {mlp}", (hidden, mlp), 0.7),
    ]


def selection_check(device: str, config: dict, repeats: int = 3) -> list[dict]:
    """``kth_smallest`` (what the pruners call) against ``torch.kthvalue`` on ``device``: milliseconds per call
    and whether the values agree, in bf16 and fp32, on random scores with ties (rounded to 1/64), negative
    zeros and a NaN (in a copy for the equality only: timings on the finite scores)."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    for what, shape, fraction in selections(config):
        k = int(shape[-1] * fraction)
        for dtype in (torch.bfloat16, torch.float32):
            values = (torch.randn(shape, generator=generator) * 64).round() / 64
            values[..., ::7] = -0.0
            values = values.to(device=device, dtype=dtype)
            with_nan = values.clone()
            with_nan[..., 3] = float("nan")
            equal = True
            for x in (values, with_nan):
                a, b = kth_smallest(x, k), torch.kthvalue(x, k, dim=-1, keepdim=True).values
                equal &= bool(((a == b) | (a.isnan() & b.isnan())).all())
            row = {"selection": what, "dtype": str(dtype).removeprefix("torch."), "equal": equal}
            for name, fn in (("kth_smallest", kth_smallest), ("kthvalue", lambda x, k: torch.kthvalue(x, k, dim=-1))):
                fn(values, k)
                _, seconds, _ = timed(lambda: [fn(values, k) for _ in range(repeats)], device)
                row[f"{name}_ms"] = 1e3 * seconds / repeats
            rows.append(row)
    return rows


def acceptance(result: dict) -> list[dict]:
    """Each of ``TARGETS`` against the runs that were measured: (run, measure, at most, value, met)."""
    runs = {r["run"]: r for r in result["runs"]}
    return [
        {
            "run": run,
            "measure": measure,
            "at_most": limit,
            "value": runs[run][measure],
            "met": runs[run][measure] <= limit,
        }
        for run, measure, limit in TARGETS
        if run in runs
    ]


def paper_sized(settings: dict) -> bool:
    """Whether a run has the size of the Wanda paper's speed table (a 2-block or shorter run does not)."""
    return all(settings[key] == value for key, value in PAPER_SETTING.items())


def int_at_least(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def write_results(out: Path, name: str, result: dict) -> None:
    """``<name>.json`` and ``<name>.md`` under ``out``, each replaced atomically (called after every run)."""
    args, rows = result["settings"], result["runs"]
    floor, dense_seconds = result["floor_seconds"], result["dense_statistics_seconds"]
    result["acceptance"] = acceptance(result)
    write_json_atomic(out / f"{name}.json", result)
    lines = [
        f"# bench/gpu.py on {result['hardware'].get('gpu') or 'CPU'}: LLaMA-2 shape '{args['config']}', random weights",
        "",
        f"{args['dtype']}, calibration {args['nsamples']} x {args['seqlen']}, batch {args['batch_size']}. Warm "
        f"(an untimed pass on the first {args['warm_blocks'] or 'all'} blocks first), synchronised timings. Floor "
        f"(one dense block-by-block forward): {floor:.2f} s; dense statistics pass (once, cached): "
        f"{dense_seconds:.2f} s ({dense_seconds / floor:.2f} x floor). SparseGPT: the column loop and the Hessian "
        "arithmetic that ran (the defaults: `auto`).",
        "",
        "| run | seconds | x floor | statistics (s) | solver only (s) | Wanda paper, A100 (s) | peak GiB "
        "| estimate GiB | SparseGPT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = "–" if r["paper_solver_seconds"] is None else f"{r['paper_solver_seconds']:g}"
        peak = "–" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        arithmetic = r.get("sparsegpt")
        arithmetic = "–" if not arithmetic else f"{'+'.join(arithmetic['sweep'])} loop, {arithmetic['hessian']} Hessian"
        lines.append(
            f"| {r['run']} | {r['seconds']:.2f} | {r['x_floor']:.2f} | {r['phases']['statistics']:.2f} | "
            f"{r['solver_seconds']:.2f} | {paper} | {peak} | {r['estimate_gib']:.2f} | {arithmetic} |"
        )
    if not paper_sized(args):
        lines.append("\nThe Wanda paper's column stays empty: its figures are for the whole 7B model at 128 x 2048.")
    for label, error in result["failed"].items():
        lines.append(f"\n{label} failed: {error}")
    if result["skipped"]:
        lines.append(f"\nNot run (the --budget of {args['budget']:g} s was spent): {', '.join(result['skipped'])}.")
    for r in rows:
        if "weights_equal" in r:
            lines.append(
                f"\n{r['run']} against the default sparsegpt run, first and last block: weights equal "
                f"{r['weights_equal']}, mask disagreement {100 * r['mask_disagreement']:.4f}%, largest weight "
                f"difference {r['max_weight_difference']:.3g}."
            )
    if result["acceptance"]:
        scope = "" if args["config"] == "7b" else " (the targets are for the 7B shape; this is another)"
        lines += ["", f"Targets of the GPU path{scope}:", ""]
        for a in result["acceptance"]:
            measure = a["measure"].replace("_", " ").replace("x floor", "x the floor")
            verdict = "met" if a["met"] else "NOT met"
            lines.append(f"- {a['run']}, {measure} <= {a['at_most']:g}: {a['value']:.2f}, {verdict}")
    if result["selection"]:
        lines += [
            "",
            f"k-th smallest value on {args['device']} at 70%: `dlp_lib.masks.kth_smallest` (what the pruners call) "
            "against `torch.kthvalue`, ms per call; equal: the same values, NaN and ties included.",
            "",
            "| selection | dtype | kth_smallest (ms) | torch.kthvalue (ms) | equal |",
            "|---|---|---|---|---|",
        ]
        for r in result["selection"]:
            lines.append(
                f"| {r['selection']} | {r['dtype']} | {r['kth_smallest_ms']:.3f} | {r['kthvalue_ms']:.3f} | "
                f"{r['equal']} |"
            )
    if result["device_parity"]:
        lines += [
            "",
            f"CPU vs {args['device']}: each pruner on the same fp32 4-block LLaMA (hidden 256), 8 x 128 calibration; "
            "SparseGPT on the CPU with its default loop, on the device with the one named.",
            "",
            "| pruner | sparsity | sweep | weights equal | mask disagreement | largest weight difference |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["device_parity"]:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['sparsity_type']} | {r['sweep']} | failed: {r['error']} | | |")
                continue
            lines.append(
                f"| {r['method']} | {r['sparsity_type']} | {r['sweep']} | {r['weights_equal']} | "
                f"{100 * r['mask_disagreement']:.4f}% | {r['max_weight_difference']:.3g} |"
            )
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default="7b", choices=sorted(CONFIGS))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--nsamples", type=int_at_least(1), default=128)
    parser.add_argument("--seqlen", type=int_at_least(1), default=2048)
    parser.add_argument("--batch_size", type=int_at_least(1), default=8)
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--runs", default=",".join(r[0] for r in RUNS), help="comma-separated labels of RUNS")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--warm-blocks", type=int_at_least(0), default=2,
                        help="blocks in each untimed warm-up pass (0: warm up on the whole model)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds from the start after which no further run begins (the results are "
                        "written after every run: a run cut short by a time limit loses only itself)")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here: bench/gpu.py measures the GPU path; run it on a GPU machine "
              "(or exercise it with --device cpu --config tiny --nsamples 4 --seqlen 64)")  # fmt: skip
        return 0
    wanted = args.runs.split(",")
    unknown = set(wanted) - {r[0] for r in RUNS}
    if unknown:
        parser.error(f"unknown runs {sorted(unknown)}; known: {', '.join(r[0] for r in RUNS)}")
    dtype = getattr(torch, args.dtype)
    config = CONFIGS[args.config]

    model = build_model(config, dtype, args.device)
    calibration = torch.randint(
        0, config["vocab_size"], (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0)
    )
    pristine = weights_of(model)

    def restore():
        for i, block in enumerate(decoder_blocks(model)):
            for name, lin in linear_sublayers(block).items():
                lin.weight.data.copy_(pristine[(i, name)])

    floor_pass(model, calibration, args.batch_size)  # warm-up: kernels, allocator
    _, floor, _ = timed(lambda: floor_pass(model, calibration, args.batch_size), args.device)
    print(f"floor (warm): {floor:.2f} s", flush=True)
    norms, dense_seconds, dense_peak = timed(
        lambda: dense_input_norms(model, calibration, args.batch_size, False), args.device
    )
    print(f"dense statistics: {dense_seconds:.2f} s = {dense_seconds / floor:.2f} x floor", flush=True)

    def compared_blocks():  # the first and the last block's weights, on the CPU
        return weights_of(model, sorted({0, len(decoder_blocks(model)) - 1}))

    result = {
        "settings": vars(args),
        "hardware": hardware(),
        "versions": package_versions(),
        "floor_seconds": floor,
        "dense_statistics_seconds": dense_seconds,
        "dense_statistics_peak_gib": None if dense_peak is None else dense_peak / 2**30,
        "selection": [],
        "device_parity": [],
        "runs": [],
        "skipped": [],
        "failed": {},
    }
    out = Path(args.out)
    name = f"gpu-{args.config}" if args.device.startswith("cuda") else f"gpu-{args.config}-on-cpu"
    result["selection"] = selection_check(args.device, config)
    for r in result["selection"]:
        print(f"{r['selection']} {r['dtype']}: kth_smallest {r['kth_smallest_ms']:.3f} ms, torch.kthvalue "
              f"{r['kthvalue_ms']:.3f} ms, equal {r['equal']}", flush=True)  # fmt: skip
    result["device_parity"] = device_parity(args.device)
    for r in result["device_parity"]:
        outcome = r.get("error") or f"mask disagreement {100 * r['mask_disagreement']:.4f}%"
        print(f"CPU vs {args.device}, {r['method']} {r['sparsity_type']} ({r['sweep']} sweep): {outcome}", flush=True)
    write_results(out, name, result)
    warm_blocks = args.warm_blocks or None
    rows, warmed, default_sparsegpt = result["runs"], set(), None
    for label, method, allocation, sparsity_type, offload, options in RUNS:
        if label not in wanted:
            continue
        if args.budget is not None and time.perf_counter() - started > args.budget:
            result["skipped"].append(label)
            print(f"{label:>16}: skipped (the --budget of {args.budget:g} s is spent)", flush=True)
            write_results(out, name, result)
            continue
        sparsity = 0.5 if sparsity_type == "2:4" else args.sparsity
        prune = PruneConfig(method, sparsity, sparsity_type, allocation, **options)
        sparsities = None
        if allocation != "uniform":
            sparsities = [1 - d for d in block_allocation(model, prune, norms)["densities"]]
        if offload:
            model.to("cpu")
        device_of = args.device if offload else None

        def job(blocks=None):
            with first_blocks(model, blocks):
                targets = None if sparsities is None else sparsities[: len(decoder_blocks(model))]
                return prune_model(model, prune, calibration, targets, None, args.batch_size, False, device_of)

        comparison = {}
        try:
            shapes = (method, sparsity_type, offload, tuple(sorted(options.items())))  # one warm-up per kernel set
            if shapes not in warmed:  # one untimed pass of the same kernels
                job(warm_blocks)
                restore()
                warmed.add(shapes)
            report, seconds, peak = timed(job, args.device)
        except Exception as error:  # a sweep that will not compile, say: the other runs still count
            result["failed"][label] = f"{type(error).__name__}: {error}"
            print(f"{label:>16}: failed: {result['failed'][label]}", flush=True)
            write_results(out, name, result)
            continue
        else:
            if label == "sparsegpt" and set(COMPARED_WITH_DEFAULT) & set(wanted):  # kept only to compare with those
                default_sparsegpt = compared_blocks()
            elif label in COMPARED_WITH_DEFAULT and default_sparsegpt is not None:
                comparison = compare_weights(default_sparsegpt, compared_blocks())
        finally:  # pristine weights (and placement) for the next run, whether this one ran or failed
            restore()
            if offload:
                model.to(args.device)
        estimate = estimate_peak_memory(config, args.nsamples, args.seqlen, args.batch_size, method, dtype, offload)
        row = {
            "run": label,
            "seconds": seconds,
            "x_floor": seconds / floor,
            "solver_seconds": report.seconds["pruning"],
            "phases": report.seconds,
            "paper_solver_seconds": PAPER_SOLVER_SECONDS[method] if paper_sized(vars(args)) else None,
            "peak_gib": None if peak is None else peak / 2**30,
            "estimate_gib": estimate.device_peak / 2**30,
            "achieved_sparsity": report.overall_achieved,
            "sparsegpt": report.sparsegpt,
            **comparison,
        }
        rows.append(row)
        print(f"{label:>16}: {seconds:8.2f} s  {row['x_floor']:6.2f} x floor  solver {row['solver_seconds']:.2f} s"
              + (f"  {comparison}" if comparison else ""), flush=True)  # fmt: skip
        write_results(out, name, result)

    write_results(out, name, result)
    for a in result["acceptance"]:
        print(
            f"target {a['run']} {a['measure']} <= {a['at_most']:g}: {a['value']:.2f} {'met' if a['met'] else 'NOT met'}"
        )
    print(f"wrote {out / name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
