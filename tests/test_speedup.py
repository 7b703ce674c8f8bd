"""Speed measurements (dlp_lib.speedup): shapes, product rows, pruning-only seconds, verdicts, results files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from dlp_lib import experiments as ex, speedup


def test_live_shapes_of_every_profile():
    assert speedup.live_shapes(ex.profile("quick")["speedup"]) == speedup.LLAMA2_LINEARS["7b"][:2]
    assert speedup.live_shapes({"shapes": [["a", 8, 16]]}) == [("a", 8, 16)]
    assert [s[1:] for s in speedup.live_shapes({"shapes": "70b", "linears": 3})] == [
        (8192, 8192),
        (28672, 8192),
        (8192, 28672),
    ]


@pytest.mark.parametrize("pattern, density", [("70%", 0.3), ("2:4", 0.5)])
def test_pruned_weight_pattern(pattern, density):
    weight = speedup.pruned_weight(16, 32, pattern, torch.Generator().manual_seed(0))
    assert float((weight != 0).float().mean()) == pytest.approx(density, abs=1 / (16 * 32))
    if pattern == "2:4":
        assert ((weight.reshape(16, 8, 4) == 0).sum(-1) == 2).all()


def test_cpu_linear_products_rows_agree_with_dense():
    rows = speedup.cpu_linear_products([("tiny", 24, 32)], [1, 5], repeats=1)
    assert len(rows) == 2 * 3 * 2  # patterns x formats x token counts
    frame = pd.DataFrame(rows)
    assert set(frame["format"]) == {"csr", "csc", "coo"} and set(frame["tokens"]) == {1, 5}
    assert (frame["difference"] < 1e-5).all()
    assert (frame["speedup"] > 0).all() and (frame["dense_ms"] > 0).all()
    csr = frame[(frame["format"] == "csr") & (frame["pattern"] == "2:4")].iloc[0]
    # 2:4 of 24 x 32: 384 values (4 bytes) + 384 column indices + 25 row pointers (8 bytes) vs 768 x 4 bytes
    assert csr["storage_ratio"] == pytest.approx((384 * 4 + 384 * 8 + 25 * 8) / (768 * 4))


def _record(method, seconds, allocation="uniform", sparsity_type="unstructured"):
    return {
        "config": {"prune": {"method": method, "allocation": allocation, "sparsity_type": sparsity_type}},
        "pruning": {"seconds": {"pruning": seconds, "statistics": 99.0}},
    }


def test_pruning_speed_from_records_uniform_unstructured_only():
    records = [
        _record("wanda", 1.0),
        _record("wanda", 3.0),
        _record("wanda", 50.0, allocation="dlp"),
        _record("sparsegpt", 10.0),
        _record("sparsegpt", 70.0, sparsity_type="2:4"),
        {"config": {"prune": None}, "pruning": {"overall_achieved": 0.0}},
    ]
    rows = {r["method"]: r for r in speedup.pruning_speed(records)}
    assert rows["wanda"] == dict(
        method="wanda", runs=2, seconds=2.0, min_seconds=1.0, max_seconds=3.0, published_seconds=0.54
    )
    assert rows["sparsegpt"]["seconds"] == 10.0 and rows["sparsegpt"]["published_seconds"] == 203.1


def test_verdicts_count_beyond_the_noise_and_never_claim_an_unmeasured_gpu():
    cpu = pd.DataFrame(
        [
            dict(shape="s", pattern="70%", format="csr", tokens=1, speedup=1.5, storage_ratio=0.9, density=0.3),
            dict(shape="s", pattern="70%", format="csr", tokens=16, speedup=1.05, storage_ratio=0.9, density=0.3),
            dict(shape="s", pattern="70%", format="csr", tokens=128, speedup=0.2, storage_ratio=0.9, density=0.3),
        ]
    )
    text = speedup.verdicts(cpu, pd.DataFrame(), pd.DataFrame(), "machine X")
    assert "of 3 sparse products, 1 ran faster than dense beyond the ±10% timing noise and 1 slower" in text
    assert "Best 1.50x (s, 70% csr, 1 tokens); worst 0.20x (s, 70% csr, 128 tokens)" in text
    assert "CSR 0.90x" in text
    assert "No GPU measurement is committed" in text


def test_save_and_load_results(tmp_path):
    speedup.save_results({"device": "cuda", "machine": "GPU Y", "products": []}, tmp_path / "speedup-y.json")
    speedup.save_results({"device": "cpu", "machine": "CPU Z", "products": []}, tmp_path / "speedup-cpu.json")
    assert [r["machine"] for r in speedup.load_results(tmp_path, "cuda")] == ["GPU Y"]
    assert not list(tmp_path.glob("*.tmp"))
    assert json.loads((tmp_path / "speedup-cpu.json").read_text())["machine"] == "CPU Z"


def test_committed_gpu_results_name_their_machine_and_source():
    """Every committed GPU result says which GPU, when, and (if not bench/speedup.py's) how it was measured."""
    from pathlib import Path

    results = speedup.load_results(Path(__file__).parent.parent / "bench" / "results", "cuda")
    for result in results:
        assert result["machine"] and result["date"]
        assert result.get("source") or result.get("versions", {}).get("torch")
        measured = [r for r in result["products"] if "speedup" in r]
        assert measured and all(r["speedup"] > 0 for r in measured)
