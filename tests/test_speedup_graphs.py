"""2:4 replayed from CUDA graphs (dlp_lib.graphs, bench/speedup_graphs.py), exercised on the CPU: nothing is
captured here and the dense weight stands in for the 2:4 one, so these tests check the code's results (the
steady decode step, the rows, the files), not any speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dlp_lib import graphs

ROOT = Path(__file__).resolve().parents[1]


def tiny_llama(blocks: int = 2):
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=blocks, vocab_size=97
    )
    return LlamaForCausalLM(config).eval()


def test_capture_is_the_function_itself_off_cuda():
    fn = lambda: torch.ones(2)  # noqa: E731
    assert graphs.capture(fn, "cpu") is fn


def test_products_give_a_row_per_shape_backend_and_token_count():
    rows = graphs.captured_products(
        [("a", 8, 16), ("b", 16, 8)], [2, 3], "cpu", torch.float32, (graphs.STANDIN,), repeats=2
    )
    assert [(r["shape"], r["tokens"]) for r in rows] == [("a", 2), ("a", 3), ("b", 2), ("b", 3)]
    for r in rows:
        assert r["difference"] == 0.0  # the stand-in is the dense weight
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["sparse_ms"])
        assert r["eager_speedup"] == pytest.approx(r["dense_eager_ms"] / r["sparse_eager_ms"])


def test_a_backend_that_cannot_run_gives_a_row_with_its_reason():
    (row,) = graphs.captured_products([("a", 8, 16)], [2], "cpu", torch.float32, ("cusparselt",), repeats=1)
    assert "error" in row and "speedup" not in row


@torch.no_grad()
def test_the_steady_decode_step_continues_the_prompt_every_time():
    model = tiny_llama()
    context = 6
    result = graphs.model_step_seconds(model, [3], context, "cpu", repeats=2)
    # the step's logits equal a plain forward over the same prompt and token (same generator draws)
    generator = torch.Generator().manual_seed(0)
    torch.randint(0, 97, (1, 3), generator=generator)  # the prefill's ids
    prompt = torch.randint(0, 97, (1, context), generator=generator)
    step = torch.randint(0, 97, (1, 1), generator=generator)
    expected = model(input_ids=torch.cat([prompt, step], dim=1)).logits[:, -1:]
    assert torch.allclose(result["logits"], expected, atol=1e-5)
    # repeated calls (warm-up, timing, the last one) did not move the step along the cache
    assert result["decode_difference"] == 0.0
    assert set(result) == {"prefill_3", "decode", "logits", "decode_difference"}


def test_end_to_end_rows_compare_like_with_like():
    row = graphs.end_to_end(lambda: tiny_llama(), lambda m: None, graphs.STANDIN, [4], 5, "cpu", repeats=2)
    assert row["difference"] == 0.0 and row["capture_difference"] == 0.0
    for key in ("prefill_4", "decode"):
        assert row[f"{key}_speedup"] == pytest.approx(row[f"{key}_dense_ms"] / row[f"{key}_sparse_ms"])


def test_bench_script_exercises_on_the_cpu_and_says_so(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/speedup_graphs.py", "--device", "cpu", "--repeats", "2", "--blocks", "1"]
        + ["--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "cuda-graphs-cpu-exercise.json").read_text())
    assert len(result["products"]) == 4 and all(r["format"] == "standin" for r in result["products"])
    (row,) = result["end_to_end"]
    assert row["width"] == "tiny" and row["difference"] == 0.0
    assert "A CPU exercise" in (tmp_path / "cuda-graphs-cpu-exercise.md").read_text()


def test_bench_script_budget_skips_parts_and_names_them(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/speedup_graphs.py", "--device", "cpu", "--budget", "0", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "cuda-graphs-cpu-exercise.json").read_text())
    assert result["products"] == [] and result["end_to_end"] == []
    assert result["skipped"] == ["products tiny", "products tiny down", "end to end tiny standin"]


def test_bench_script_refuses_the_llama_shapes_on_a_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/speedup_graphs.py", "--device", "cpu", "--shape", "llama2", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "CUDA" in done.stderr


def test_bench_script_refuses_a_budget_that_is_not_seconds(tmp_path):
    for budget in ("-1", "nan"):
        done = subprocess.run(
            [sys.executable, "bench/speedup_graphs.py", "--device", "cpu", "--budget", budget, "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and "--budget" in done.stderr
    assert list(tmp_path.iterdir()) == []
