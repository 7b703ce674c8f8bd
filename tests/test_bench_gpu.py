"""bench/gpu.py (make bench-gpu): it says so and exits 0 without CUDA, and its whole path runs on a CPU
with a tiny LLaMA (the GPU numbers come from a GPU machine)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from dlp_lib import sparsegpt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_triton_interpreter(monkeypatch):
    """Triton's interpreter off: it would take minutes on these models (tests/test_sparsegpt.py checks the
    Triton sweep on small layers); "auto" takes the C loop on a CPU either way."""
    monkeypatch.setattr(sparsegpt.solver, "interpreted", lambda: False)


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parity_once(gpu_bench):
    """``device_parity`` computed once per (device, batch size, PARITY_RUNS) in this module: every call of
    ``main`` on the CPU runs the same deterministic parity check (14 prunings, most of a call's time), so the
    tests that share its inputs share its rows (a deep copy each: a test cannot change another's)."""
    real, rows = gpu_bench.device_parity, {}

    def device_parity(device: str, batch_size: int = 4) -> list[dict]:
        key = (device, batch_size, tuple(gpu_bench.PARITY_RUNS))
        if key not in rows:
            rows[key] = real(device, batch_size)
        return copy.deepcopy(rows[key])

    return device_parity


@pytest.fixture
def shared_parity(gpu_bench, parity_once, monkeypatch):
    monkeypatch.setattr(gpu_bench, "device_parity", parity_once)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0(gpu_bench, tmp_path, capsys):
    assert gpu_bench.main(["--out", str(tmp_path)]) == 0
    assert "CUDA is not available" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_the_whole_path_runs_on_a_tiny_model_on_cpu(gpu_bench, shared_parity, tmp_path):
    runs = "wanda,wanda DLP,wanda --offload,sparsegpt 2:4,sparsegpt,sparsegpt fp32 Hessian,sparsegpt PyTorch loop"
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "bfloat16", "--nsamples", "3", "--seqlen", "16"]
    assert gpu_bench.main([*args, "--batch_size", "2", "--runs", runs, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert [r["run"] for r in result["runs"]] == [
        "sparsegpt",
        "sparsegpt fp32 Hessian",
        "wanda",
        "sparsegpt 2:4",
        "wanda DLP",
        "wanda --offload",
        "sparsegpt PyTorch loop",
    ]  # fmt: skip  (RUNS' order, most wanted first)
    assert result["skipped"] == [] and result["failed"] == {}
    runs = {row["run"]: row for row in result["runs"]}
    for row in result["runs"]:
        assert row["seconds"] > 0 and 0 <= row["solver_seconds"] <= row["seconds"]
        assert row["achieved_sparsity"] == pytest.approx(0.7 if "2:4" not in row["run"] else 0.5, abs=0.02)
    # a tiny model is not the paper's 7B at 128 x 2048: its column stays empty, and the table says why
    assert all(row["paper_solver_seconds"] is None for row in result["runs"])
    table = (tmp_path / "gpu-tiny-on-cpu.md").read_text()
    assert "| sparsegpt 2:4 |" in table and "Wanda paper, A100" in table
    assert "The Wanda paper's column stays empty: its figures are for the whole 7B model at 128 x 2048." in table
    # what ran: on a CPU "auto" is the C loop and the reference's Hessian; the runs that name others did use them
    assert runs["sparsegpt"]["sparsegpt"] == {"sweep": ["c"], "hessian": "fp32"} and runs["wanda"]["sparsegpt"] is None
    assert runs["sparsegpt PyTorch loop"]["sparsegpt"] == {"sweep": ["torch"], "hessian": "fp32"}
    assert "| c loop, fp32 Hessian |" in table and "| torch loop, fp32 Hessian |" in table
    # against the default run: the PyTorch loop bit for bit; the fp32 Hessian too, as it is the default on a CPU
    for label in ("sparsegpt fp32 Hessian", "sparsegpt PyTorch loop"):
        assert (
            runs[label]["weights_equal"]
            and runs[label]["mask_disagreement"] == 0 == runs[label]["max_weight_difference"]
        )
    assert "sparsegpt PyTorch loop against the default sparsegpt run, first and last block: weights equal True" in table
    assert "| statistics (s) | solver only (s) |" in table
    # the targets are checked against what ran, and the table says they are for the 7B shape
    assert [(a["run"], a["measure"]) for a in result["acceptance"]] == [
        (run, measure) for run, measure, _ in gpu_bench.TARGETS if run in runs
    ]
    assert all(a["met"] == (a["value"] <= a["at_most"]) for a in result["acceptance"])
    assert "Targets of the GPU path (the targets are for the 7B shape; this is another):" in table
    # the selection: kth_smallest equals torch.kthvalue on every selection the pruners make, NaN and ties included
    assert len(result["selection"]) == 2 * len(gpu_bench.selections(gpu_bench.CONFIGS["tiny"]))
    assert all(r["equal"] and r["kth_smallest_ms"] > 0 and r["kthvalue_ms"] > 0 for r in result["selection"])
    assert "| magnitude: whole 128 x 344 | bfloat16 |" in table
    # the parity check ran every pruner twice; on one CPU the two runs agree bit for bit
    assert [(r["method"], r["sparsity_type"], r["sweep"]) for r in result["device_parity"]] == gpu_bench.PARITY_RUNS
    assert all(r["weights_equal"] and r["mask_disagreement"] == 0 for r in result["device_parity"])
    assert (
        "CPU vs cpu: each pruner on the same fp32 4-block LLaMA" in table
        and "| sparsegpt | 2:4 | torch | True |" in table
    )
    with pytest.raises(SystemExit):
        gpu_bench.main([*args, "--runs", "nope", "--out", str(tmp_path)])


def test_a_spent_budget_starts_no_run_and_says_which_were_not_run(gpu_bench, shared_parity, tmp_path):
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "float32", "--nsamples", "2", "--seqlen", "16"]
    assert gpu_bench.main([*args, "--runs", "magnitude,wanda", "--budget", "0", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert result["runs"] == [] and result["skipped"] == ["magnitude", "wanda"]
    table = (tmp_path / "gpu-tiny-on-cpu.md").read_text()
    assert "Not run (the --budget of 0 s was spent): magnitude, wanda." in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-tiny-on-cpu.json", "gpu-tiny-on-cpu.md"]  # no temp files


def test_a_failing_run_is_reported_and_the_others_go_on(gpu_bench, tmp_path, monkeypatch):
    runs = [(*run[:5], {"sparsegpt_sweep": "triton"}) if run[0] == "sparsegpt" else run for run in gpu_bench.RUNS]
    monkeypatch.setattr(gpu_bench, "RUNS", runs)  # Triton on a CPU without the interpreter: refused before any work
    monkeypatch.setattr(gpu_bench, "PARITY_RUNS", [("sparsegpt", "unstructured", "c"), ("magnitude", "2:4", "auto")])
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "float32", "--nsamples", "2", "--seqlen", "16"]
    assert gpu_bench.main([*args, "--runs", "sparsegpt,magnitude", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["magnitude"]
    assert result["failed"]["sparsegpt"].startswith("ConfigError: the Triton sweep runs on CUDA, not cpu")
    # the parity row's device side asks for the C loop on the device: on a CPU that runs (both rows equal)
    assert all(r["weights_equal"] for r in result["device_parity"])
    table = (tmp_path / "gpu-tiny-on-cpu.md").read_text()
    assert "sparsegpt failed: ConfigError: the Triton sweep runs on CUDA" in table


def test_first_blocks_truncates_the_model_for_a_warm_up_and_puts_every_block_back(gpu_bench):
    from dlp_lib.layers import decoder_blocks

    model = gpu_bench.build_model(gpu_bench.CONFIGS["tiny"], torch.float32, "cpu")
    blocks = list(decoder_blocks(model))
    with gpu_bench.first_blocks(model, 2):
        assert list(decoder_blocks(model)) == blocks[:2]
        logits = model(torch.tensor([[1, 2, 3]])).logits  # the model runs on its first two blocks
        assert logits.shape == (1, 3, 512)
    assert list(decoder_blocks(model)) == blocks
    with gpu_bench.first_blocks(model, None):
        assert list(decoder_blocks(model)) == blocks


def test_the_paper_column_is_filled_only_at_the_papers_size(gpu_bench):
    paper = {"config": "7b", "nsamples": 128, "seqlen": 2048, "batch_size": 4}
    assert gpu_bench.paper_sized(paper)
    for change in ({"config": "7b-2blocks"}, {"nsamples": 64}, {"seqlen": 1024}):
        assert not gpu_bench.paper_sized({**paper, **change})


@pytest.mark.parametrize(
    "flag, value", [("--warm-blocks", "-1"), ("--nsamples", "0"), ("--seqlen", "0"), ("--batch_size", "-2")]
)
def test_a_count_below_its_minimum_is_a_usage_error_before_any_work(gpu_bench, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        gpu_bench.main(["--device", "cpu", "--config", "tiny", flag, value, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"argument {flag}: {value} is below" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_every_run_names_valid_options_and_the_compared_runs_exist(gpu_bench):
    from dlp_lib.config import PruneConfig

    labels = [run[0] for run in gpu_bench.RUNS]
    assert len(set(labels)) == len(labels) and set(gpu_bench.COMPARED_WITH_DEFAULT) <= set(labels)
    assert {run for run, _, _ in gpu_bench.TARGETS} <= set(labels)
    for _, method, allocation, sparsity_type, _, options in gpu_bench.RUNS:
        PruneConfig(method, 0.5, sparsity_type, allocation, **options)


# What the lent GPU machine's image lacks (it has torch, transformers, accelerate, peft; no gguf,
# datasets or lm-eval): the prepared run must not need them, or the device minutes are lost to an ImportError.
ABSENT_ON_THE_GPU_IMAGE = ("gguf", "datasets", "lm_eval")


def test_runs_in_a_fresh_process_without_the_packages_the_gpu_image_lacks(tmp_path):
    import subprocess
    import sys

    program = (
        "import runpy, sys\n"
        f"for name in {ABSENT_ON_THE_GPU_IMAGE!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError, as where the package is not installed\n"
        "try:\n"
        "    import datasets\n"
        "    sys.exit('the block did not take: datasets imported')\n"
        "except ImportError:\n"
        "    pass\n"
        "sys.argv = ['gpu.py', *sys.argv[1:]]\n"
        "runpy.run_path('bench/gpu.py', run_name='__main__')\n"
    )
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "float32", "--nsamples", "2", "--seqlen", "16"]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # no minutes-long interpreter
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", program, *args, "--runs", "sparsegpt,wanda DLP", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["sparsegpt", "wanda DLP"] and result["failed"] == {}
    assert all(r["weights_equal"] for r in result["device_parity"])
