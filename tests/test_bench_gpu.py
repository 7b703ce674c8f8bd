"""bench/gpu.py (make bench-gpu): it says so and exits 0 without CUDA, and its whole path runs on a CPU
with a tiny LLaMA (the GPU numbers come from a GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from dlp_lib import sparsegpt, stats
from dlp_lib.sparsegpt import SWEEP_ENV
from dlp_lib.stats import HESSIAN_ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_triton_interpreter(monkeypatch):
    """A CPU keeps the NumPy loop whatever the sweep: Triton's interpreter would take minutes on these
    models (tests/test_sparsegpt.py checks the Triton sweep on small layers)."""
    monkeypatch.setattr(sparsegpt, "interpreted", lambda: False)


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0(gpu_bench, tmp_path, capsys):
    assert gpu_bench.main(["--out", str(tmp_path)]) == 0
    assert "CUDA is not available" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_the_whole_path_runs_on_a_tiny_model_on_cpu(gpu_bench, tmp_path, monkeypatch):
    runs = (
        "wanda,wanda DLP,wanda --offload,sparsegpt 2:4,sparsegpt,sparsegpt Triton,sparsegpt CUDA graph,"
        "sparsegpt Triton + tensor-core Hessian"
    )
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "float32", "--nsamples", "2", "--seqlen", "16"]
    assert gpu_bench.main([*args, "--runs", runs, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert [r["run"] for r in result["runs"]] == [
        "sparsegpt", "sparsegpt Triton", "sparsegpt CUDA graph", "sparsegpt Triton + tensor-core Hessian", "wanda",
        "wanda DLP", "wanda --offload", "sparsegpt 2:4",
    ]  # fmt: skip
    assert result["skipped"] == [] and result["failed"] == {}
    for row in result["runs"]:
        assert row["seconds"] > 0 and 0 <= row["solver_seconds"] <= row["seconds"]
        assert row["achieved_sparsity"] == pytest.approx(0.7 if "2:4" not in row["run"] else 0.5, abs=0.02)
    # a tiny model is not the paper's 7B at 128 x 2048: its column stays empty, and the table says why
    assert all(row["paper_solver_seconds"] is None for row in result["runs"])
    table = (tmp_path / "gpu-tiny-on-cpu.md").read_text()
    assert "| sparsegpt 2:4 |" in table and "Wanda paper, A100" in table
    assert "The Wanda paper's column stays empty: its figures are for the whole 7B model at 128 x 2048." in table
    # on a CPU the opt-in arithmetic changes nothing (the NumPy loop, fp32 Hessians): the weights compare equal
    for row in result["runs"][1:4]:
        assert row["weights_equal"] and row["mask_disagreement"] == 0 == row["max_weight_difference"]
    assert "sparsegpt Triton against plain sparsegpt, first and last block: weights equal True, mask" in table
    assert "| statistics (s) | solver only (s) |" in table
    # the parity check ran every pruner twice; on one CPU the two runs agree bit for bit
    assert [(r["method"], r["sparsity_type"], r["sweep"]) for r in result["device_parity"]] == gpu_bench.PARITY_RUNS
    assert all(r["weights_equal"] and r["mask_disagreement"] == 0 for r in result["device_parity"])
    assert (
        "CPU vs cpu: each pruner on the same fp32 4-block LLaMA" in table
        and "| sparsegpt | 2:4 | triton | True |" in table
    )
    with pytest.raises(SystemExit):
        gpu_bench.main([*args, "--runs", "nope", "--out", str(tmp_path)])


def test_a_spent_budget_starts_no_run_and_says_which_were_not_run(gpu_bench, tmp_path):
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "float32", "--nsamples", "2", "--seqlen", "16"]
    assert gpu_bench.main([*args, "--runs", "magnitude,wanda", "--budget", "0", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert result["runs"] == [] and result["skipped"] == ["magnitude", "wanda"]
    table = (tmp_path / "gpu-tiny-on-cpu.md").read_text()
    assert "Not run (the --budget of 0 s was spent): magnitude, wanda." in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-tiny-on-cpu.json", "gpu-tiny-on-cpu.md"]  # no temp files


def test_a_failing_run_is_reported_and_the_others_go_on(gpu_bench, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_bench, "OPTIONS_OF_RUN", {"sparsegpt CUDA graph": {SWEEP_ENV: "bogus"}})  # fails early
    monkeypatch.setattr(
        gpu_bench, "PARITY_RUNS", [("sparsegpt", "unstructured", "bogus"), ("magnitude", "2:4", "plain")]
    )
    args = ["--device", "cpu", "--config", "tiny", "--dtype", "float32", "--nsamples", "2", "--seqlen", "16"]
    assert gpu_bench.main([*args, "--runs", "sparsegpt CUDA graph,magnitude", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-tiny-on-cpu.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["magnitude"]
    assert result["failed"]["sparsegpt CUDA graph"].startswith("ConfigError: DLP_SPARSEGPT_SWEEP='bogus'")
    assert "ConfigError" in result["device_parity"][0]["error"] and result["device_parity"][1]["weights_equal"]
    table = (tmp_path / "gpu-tiny-on-cpu.md").read_text()
    assert (
        "sparsegpt CUDA graph failed: ConfigError" in table and "| sparsegpt | unstructured | bogus | failed:" in table
    )


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


def test_sparsegpt_options_set_both_variables_for_the_run_and_put_them_back(gpu_bench, monkeypatch):
    monkeypatch.setenv(SWEEP_ENV, "triton")
    monkeypatch.delenv(HESSIAN_ENV, raising=False)
    with gpu_bench.sparsegpt_options({HESSIAN_ENV: "tensor-cores"}):
        assert (os.environ[SWEEP_ENV], os.environ[HESSIAN_ENV]) == ("plain", "tensor-cores")  # unnamed: default
    assert os.environ[SWEEP_ENV] == "triton" and HESSIAN_ENV not in os.environ
    for options in gpu_bench.OPTIONS_OF_RUN.values():  # every run's options are valid values
        with gpu_bench.sparsegpt_options(options):
            sparsegpt.sweep_backend("cpu")
            stats.hessian_mode()


# What the lent GPU machine's image lacks (../shared: torch, transformers, accelerate, peft; no gguf,
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
