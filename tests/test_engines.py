"""The ONNX export of a pruned model and the CPU engines that time it (dlp_lib.export, dlp_lib.engines,
bench/engines.py). The engines run in their own environment (.venv-engines, `make engines-venv`, which
`make test` tries first); where it is missing those tests skip, saying so."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlp_lib import engines, export, outputs, rehearsal
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.models import load_model
from dlp_lib.prune import prune_model

ROOT = Path(__file__).resolve().parents[1]
ENGINES_PYTHON = ROOT / ".venv-engines" / "bin" / "python"
PROMPT = 12


def _bench():
    spec = importlib.util.spec_from_file_location("bench_engines", ROOT / "bench" / "engines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random LLaMA (6 blocks of width 64, fp16 on disk) with a BPE tokenizer: the rehearsal's model."""
    directory = tmp_path_factory.mktemp("engines") / "tiny-llama"
    rehearsal.write_model(directory)
    return directory


@pytest.fixture(scope="module")
def exported(tiny_dir, tmp_path_factory):
    model, tokenizer = load_model(str(tiny_dir), "float32", "cpu")
    prune_model(model, PruneConfig("magnitude", 0.7), progress=False)
    directory = tmp_path_factory.mktemp("export") / "magnitude-70"
    paths = export.export_onnx(model, tokenizer, directory, PROMPT)
    return model, tokenizer, directory, paths


def _engine_reasons() -> dict:
    if not ENGINES_PYTHON.exists():
        return {name: f"{ENGINES_PYTHON} is missing (make engines-venv)" for name in engines.ENGINES}
    done = subprocess.run(
        [str(ENGINES_PYTHON), "-m", "dlp_lib.engines", "--available"], cwd=ROOT, capture_output=True, text=True
    )
    return json.loads(done.stdout) if done.returncode == 0 else {n: done.stderr[-200:] for n in engines.ENGINES}


ENGINE_REASONS = _engine_reasons()


# ----------------------------------------------------------------------------------------------- export
def test_export_writes_both_graphs_and_a_reference_that_continues_the_prompt(exported):
    model, tokenizer, directory, paths = exported
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["decode.onnx", "prefill.onnx", "reference.npz", outputs.MANIFEST]
    )
    reference = dict(np.load(paths["reference.npz"]))
    config = model.config
    vocab, blocks = config.vocab_size, config.num_hidden_layers
    head_dim = config.hidden_size // config.num_attention_heads
    assert reference["prefill_input_ids"].shape == (1, PROMPT)
    assert reference["prefill_logits"].shape == (1, PROMPT, vocab)
    assert reference["decode_logits"].shape == (1, 1, vocab)
    assert reference["decode_attention_mask"].shape == (1, PROMPT + 1)
    pasts = [k for k in reference if k.startswith("decode_past_")]
    assert len(pasts) == 2 * blocks
    assert reference["decode_past_0"].shape == (1, config.num_key_value_heads, PROMPT, head_dim)
    # the decode step's input is the prefill's greedy next token, and its logits (through the cache) equal
    # a plain forward over prompt + that token
    next_id = reference["prefill_logits"][0, -1].argmax()
    assert reference["decode_input_ids"].item() == next_id
    full = torch.cat([torch.from_numpy(reference["prefill_input_ids"]), torch.tensor([[next_id]])], dim=1)
    with torch.no_grad():
        expected = model(input_ids=full).logits[0, -1]
    assert torch.allclose(torch.from_numpy(reference["decode_logits"][0, 0]), expected, atol=1e-4)
    # the prompt is real text: the tokenizer's ids of the module's prompt, BOS first
    assert reference["prefill_input_ids"][0, 0] == tokenizer.bos_token_id
    # the graphs hold the pruned weights: export keeps every zero
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(paths["prefill.onnx"]))
    assert graph.opset_import[0].version == export.OPSET
    zeros = total = 0
    for init in graph.graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        if array.ndim == 2 and min(array.shape) == config.hidden_size and max(array.shape) < vocab:
            zeros += int((array == 0).sum())
            total += array.size
    assert total > 0 and abs(zeros / total - 0.7) < 0.01


def test_export_restores_the_attention_implementation(tiny_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_dir), "float32", "cpu")
    before = model.config._attn_implementation
    export.export_onnx(model, tokenizer, tmp_path / "x", 4)
    assert model.config._attn_implementation == before


def test_export_refuses_what_the_engines_cannot_read(tiny_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_dir), "float32", "cpu")
    with pytest.raises(ConfigError, match="at least 1"):
        export.export_onnx(model, tokenizer, tmp_path / "x", 0)
    with pytest.raises(ConfigError, match="positions"):
        export.export_onnx(model, tokenizer, tmp_path / "x", model.config.max_position_embeddings)
    with pytest.raises(ConfigError, match="float32"):
        export.export_onnx(model.to(torch.float16), tokenizer, tmp_path / "x", 4)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_export_leaves_nothing_behind(tiny_dir, tmp_path, monkeypatch):
    model, tokenizer = load_model(str(tiny_dir), "float32", "cpu")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(model, tokenizer, tmp_path / "x", 4)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- engines, no engine
def test_agreement_on_a_hand_computed_case():
    reference = np.array([[[0.0, 2.0, 1.0], [4.0, 0.0, 1.0]]], dtype=np.float32)
    logits = np.array([[[0.0, 1.0, 1.5], [3.0, 0.0, 1.0]]], dtype=np.float32)
    result = engines.agreement(logits, reference)
    assert result["difference"] == pytest.approx(1.0 / 4.0)  # largest |diff| 1.0 over largest |logit| 4.0
    assert result["top1_agreement"] == 0.5  # position 0 flips from token 1 to 2, position 1 keeps token 0


def test_engine_names_and_missing_packages_are_said():
    assert "unknown engine" in engines.unavailable("tensorrt")
    if importlib.util.find_spec("deepsparse") is None:
        assert "make engines-venv" in engines.unavailable("deepsparse")


def test_the_engines_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import dlp_lib.engines; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_engines_cli_refuses_a_folder_without_an_export(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dlp_lib.engines", str(tmp_path), "--engine", "onnxruntime"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "export_onnx" in done.stderr


def test_speedups_are_over_the_same_engines_dense_runs_and_verdicts_respect_their_spread():
    rows = [
        dict(variant="dense", engine="a", prefill_ms=100.0, decode_ms=10.0),
        dict(variant="sparse", engine="a", prefill_ms=50.0, decode_ms=10.5, prefill_top1_agreement=1.0,
             decode_top1_agreement=1.0, prefill_difference=0.0, decode_difference=0.0),
        dict(variant="sparse", engine="b", prefill_ms=1.0, decode_ms=1.0),  # no dense run of b: no ratio
        dict(variant="sparse", engine="a", error="crashed"),
        dict(variant="dense", engine="a", prefill_ms=110.0, decode_ms=10.0),
    ]  # fmt: skip
    (entry,) = engines.speedups(rows)
    assert entry["prefill_speedup"] == pytest.approx(2.0)  # the first dense run over the sparse one
    assert entry["decode_speedup"] == pytest.approx(10 / 10.5)
    assert entry["prefill_dense_spread"] == pytest.approx(0.1)
    assert engines.verdict(entry, "prefill") == "faster"
    assert engines.verdict(entry, "decode") == "within noise"  # 0.95x is inside the 5% floor
    entry["decode_speedup"] = 0.5
    assert engines.verdict(entry, "decode") == "slower"


def test_the_control_engines_set_the_noise_every_ratio_is_read_against():
    rows = [
        dict(variant="dense", engine="onnxruntime", prefill_ms=100.0, decode_ms=10.0),
        dict(variant="dense", engine="deepsparse", prefill_ms=100.0, decode_ms=10.0),
        dict(variant="70%", engine="onnxruntime", prefill_ms=80.0, decode_ms=10.0),  # 1.25x: nothing changed
        dict(variant="70%", engine="deepsparse", prefill_ms=80.0, decode_ms=5.0),
    ]
    control, sparse = engines.speedups(rows)
    assert sparse["prefill_noise"] == pytest.approx(0.25) and sparse["decode_noise"] == pytest.approx(0.05)
    assert engines.verdict(sparse, "prefill") == "within noise"  # the same 1.25x as the control
    assert engines.verdict(sparse, "decode") == "faster"
    assert engines.verdict(control, "prefill") == "within noise"


def test_bench_grids_cover_every_pruner_and_allocation():
    bench = _bench()
    full = bench.grid("full")
    assert len(full) == 3 * 3 * 2 + 3
    assert {(v["method"], v["allocation"]) for v in full if v["pattern"] == "70%"} == {
        (m, a) for m in bench.PRUNERS for a in bench.ALLOCATIONS
    }
    quick = bench.grid("quick")
    assert {v["pattern"] for v in quick} == {"50%", "70%", "2:4"}
    assert bench.prune_config(dict(method="wanda", allocation="owl", pattern="70%")).sparsity == 0.7
    assert bench.prune_config(dict(method="wanda", allocation="uniform", pattern="2:4")).sparsity_type == "2:4"


# ---------------------------------------------------------------------------------------- with the engines
@pytest.mark.parametrize("name", list(engines.ENGINES))
def test_each_engine_runs_the_export_and_agrees_with_pytorch(exported, name):
    if ENGINE_REASONS.get(name):
        pytest.skip(ENGINE_REASONS[name])
    directory = exported[2]
    out = directory.parent / f"{name}.json"
    done = subprocess.run(
        [str(ENGINES_PYTHON), "-m", "dlp_lib.engines", str(directory), "--engine", name, "--repeats", "1"]
        + ["--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())
    for graph, tokens in (("prefill", PROMPT), ("decode", 1)):
        assert row[f"{graph}_ms"] > 0
        assert row[f"{graph}_tps"] == pytest.approx(tokens / row[f"{graph}_ms"] * 1e3)
        if name in ("onnxruntime", "deepsparse"):  # float32 throughout: PyTorch's logits to rounding
            assert row[f"{graph}_difference"] < 1e-4
            assert row[f"{graph}_top1_agreement"] == 1.0
        else:  # bf16 / int8 arithmetic: close, not equal
            assert row[f"{graph}_difference"] < 0.5
    if name == "openvino-int8-sparse":
        assert row["decode_ms_unpacked"] > 0


def test_bench_engines_end_to_end_on_the_tiny_model(tiny_dir, tmp_path):
    if ENGINE_REASONS.get("onnxruntime"):
        pytest.skip(ENGINE_REASONS["onnxruntime"])
    done = subprocess.run(
        [sys.executable, "bench/engines.py", "--model", str(tiny_dir), "--grid", "tiny", "--engines", "onnxruntime"]
        + ["--python", str(ENGINES_PYTHON), "--prompt_tokens", "8", "--repeats", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "engines-cpu.json").read_text())
    variants = [r["variant"] for r in result["runs"]]
    assert variants == ["dense"] * 2 + ["magnitude uniform 70%"] * 2 + ["dense"] * 2  # PyTorch and ONNX Runtime
    sparse = [r for r in result["runs"] if r["variant"] != "dense"]
    assert all(abs(r["sparsity"] - 0.7) < 0.01 for r in sparse)
    (entry,) = [e for e in result["speedups"] if e["engine"] == "onnxruntime"]
    assert entry["prefill_top1_agreement"] == 1.0
    text = (tmp_path / "engines-cpu.md").read_text()
    assert "| magnitude uniform 70% | onnxruntime |" in text


def test_bench_engines_says_when_no_engine_can_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/engines.py", "--python", str(tmp_path / "missing"), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "make engines-venv" in done.stdout + done.stderr
    assert not (tmp_path / "engines-cpu.json").exists()


def _result():
    runs = [
        dict(variant="dense", engine="a", prefill_ms=100.0, decode_ms=10.0, prefill_tps=1280.0, decode_tps=100.0),
        dict(variant="dense", engine="b", prefill_ms=50.0, decode_ms=20.0, prefill_tps=2560.0, decode_tps=50.0),
        dict(variant="w 70%", engine="a", prefill_ms=40.0, decode_ms=5.0, prefill_top1_agreement=1.0,
             decode_top1_agreement=1.0, prefill_difference=0.0, decode_difference=0.0),
        dict(variant="w 70%", engine="b", prefill_ms=100.0, decode_ms=20.5, prefill_top1_agreement=0.9,
             decode_top1_agreement=1.0, prefill_difference=0.1, decode_difference=0.1),
        dict(variant="dense", engine="a", prefill_ms=100.0, decode_ms=10.0, prefill_tps=1280.0, decode_tps=100.0),
        dict(variant="dense", engine="b", prefill_ms=50.0, decode_ms=20.0, prefill_tps=2560.0, decode_tps=50.0),
    ]  # fmt: skip
    return {"runs": runs, "speedups": engines.speedups(runs), "machine": "test CPU"}


def test_summary_rows_and_sentences_say_what_the_numbers_say():
    rows = engines.summary_rows(_result())
    assert [(r["variant"], r["engine"]) for r in rows] == [("w 70%", "a"), ("w 70%", "b")]
    a, b = rows
    assert (a["prefill_speedup"], a["decode_speedup"]) == (2.5, 2.0)
    assert (a["prefill_verdict"], a["decode_verdict"]) == ("faster", "faster")
    assert (b["prefill_speedup"], b["prefill_verdict"], b["decode_verdict"]) == (0.5, "slower", "within noise")
    assert a["decode_dense_tps"] == 100.0 and b["prefill_top1_agreement"] == 0.9
    text = engines.sentences(_result())
    assert "**a**: prefill 2.50-2.50x (1 of 1 variants faster" in text
    assert "**b**: prefill 0.50-0.50x (0 of 1 variants faster beyond the noise of ±5%, 1 slower)" in text


def test_engine_figure_has_a_bar_per_variant_and_engine_in_each_panel():
    import pandas as pd

    from dlp_lib import plots

    fig = plots.plot_engine_speedups(pd.DataFrame(_result()["speedups"]), "test CPU")
    prefill, decode = fig.axes
    bars = [[bar for container in ax.containers for bar in container] for ax in (prefill, decode)]
    assert [len(b) for b in bars] == [2, 2]  # 1 variant x 2 engines
    tops = sorted(round(bar.get_y() + bar.get_height(), 3) for bar in bars[0])  # bars start at 1x
    assert tops == [0.5, 2.5] and {bar.get_y() for bar in bars[0]} == {1.0}
