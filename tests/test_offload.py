"""Offloading (one block at a time on the compute device) and device plumbing for spread models."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, make_tiny_model

from dlp_lib import prune as prune_module
from dlp_lib.config import PruneConfig
from dlp_lib.layers import capture_block_inputs, decoder_blocks, final_logits, run_block, to_device
from dlp_lib.prune import dense_input_norms, prune_model


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_offload_gives_the_same_weights_and_visits_every_block(method, tiny_windows, monkeypatch):
    visited = []
    real_block_on = prune_module.block_on

    def spy(block, device):
        visited.append((id(block), device))
        return real_block_on(block, device)

    monkeypatch.setattr(prune_module, "block_on", spy)
    config = PruneConfig(method, 0.6)
    reference = make_tiny_model("llama")
    prune_model(reference, config, tiny_windows, progress=False)
    offloaded = make_tiny_model("llama")
    prune_model(offloaded, config, tiny_windows, progress=False, offload_device="cpu")
    ref, got = _weights(reference), _weights(offloaded)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    blocks = [id(b) for b in decoder_blocks(offloaded)]
    assert [v for v in visited if v[1] == "cpu"] == [(b, "cpu") for b in blocks]


def test_offload_dense_norms_match(tiny_windows):
    model = make_tiny_model("qwen2")
    plain = dense_input_norms(model, tiny_windows, 4, progress=False)
    off = dense_input_norms(model, tiny_windows, 4, progress=False, offload_device="cpu")
    assert all(torch.equal(a[n], b[n]) for a, b in zip(plain, off) for n in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_to_cuda_keeps_blocks_in_cpu_memory_and_matches_cpu_masks(tiny_windows):
    config = PruneConfig("wanda", 0.5)
    reference = make_tiny_model("llama")
    prune_model(reference, config, tiny_windows, progress=False)
    model = make_tiny_model("llama")
    prune_model(model, config, tiny_windows, progress=False, offload_device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
    ref, got = _weights(reference), _weights(model)
    assert all(torch.equal(ref[k] == 0, got[k] == 0) for k in ref)


def test_to_device_moves_nested_tensors():
    obj = {"a": (torch.ones(1), [torch.zeros(2)]), "b": None, "c": 3}
    moved = to_device(obj, torch.device("cpu"))
    assert isinstance(moved["a"], tuple) and isinstance(moved["a"][1], list)
    assert moved["b"] is None and moved["c"] == 3


def test_run_block_moves_inputs_to_the_block_device(monkeypatch, tiny_windows):
    model = make_tiny_model("llama")
    inputs = capture_block_inputs(model, tiny_windows, 4)
    moved = []
    real = torch.Tensor.to

    def spy(self, *args, **kwargs):
        moved.append(args[0] if args else kwargs.get("device"))
        return real(self, *args, **kwargs)

    # pretend the block lives on another device: run_block must move hidden state and kwargs there
    monkeypatch.setattr("dlp_lib.layers.module_device", lambda block: torch.device("cpu", 0))
    monkeypatch.setattr(torch.Tensor, "to", spy)
    run_block(decoder_blocks(model)[0], inputs.hidden[0], inputs.kwargs[0])
    assert torch.device("cpu", 0) in moved


@pytest.mark.parametrize("arch", ARCHS)
def test_final_logits_match_the_model(arch, tiny_windows):
    model = make_tiny_model(arch)
    with torch.no_grad():
        out = model(input_ids=tiny_windows, output_hidden_states=True)
        inputs = capture_block_inputs(model, tiny_windows, 8)
        hidden = inputs.hidden[0]
        for block in decoder_blocks(model):
            hidden = run_block(block, hidden, inputs.kwargs[0])
        assert torch.allclose(final_logits(model, hidden), out.logits, atol=1e-5)


def test_cli_offload_gives_the_same_record_numbers(tiny_model_dir, text_file, tmp_path, monkeypatch):
    import json

    from dlp_lib.cli import main

    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    common = [
        "--model",
        str(tiny_model_dir),
        "--calibration",
        str(text_file),
        "--eval",
        str(text_file),
        "--nsamples",
        "4",
        "--seqlen",
        "32",
        "--eval_windows",
        "4",
        "--prune_method",
        "wanda_dlp",
        "--sparsity_ratio",
        "0.5",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main([*common, "--save", str(tmp_path / "a.json")]) == 0
    assert main([*common, "--offload", "--save", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert b["config"]["offload"] is True and "offload" not in a["config"]
    assert a["pruning"]["block_achieved"] == b["pruning"]["block_achieved"]
    assert a["perplexity"]["perplexity"] == pytest.approx(b["perplexity"]["perplexity"], rel=1e-6)


def test_offloaded_perplexity_matches(tiny_windows):
    from dlp_lib.evaluation import perplexity

    model = make_tiny_model("opt")
    plain = perplexity(model, tiny_windows, 3, progress=False)["perplexity"]
    assert perplexity(model, tiny_windows, 3, progress=False, offload_device="cpu")["perplexity"] == pytest.approx(
        plain, rel=1e-6
    )


# ------------------------------------------------------------------------- several GPUs: device_map
def test_cli_device_map_prunes_and_evaluates_like_one_device(tiny_model_dir, text_file, tmp_path, monkeypatch):
    """``--device_map auto`` loads through accelerate (on this CPU-only machine everything lands on
    the CPU); the run must give the same masks and perplexity as a plain single-device run."""
    import json

    from dlp_lib import pipeline
    from dlp_lib.cli import main

    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pipeline, "gpu_count", lambda: 2)  # a CPU-only machine refuses --device_map otherwise
    common = ["--model", str(tiny_model_dir), "--calibration", str(text_file), "--eval", str(text_file)]
    common += ["--nsamples", "4", "--seqlen", "32", "--eval_windows", "4", "--prune_method", "sparsegpt"]
    common += ["--sparsity_ratio", "0.5", "--quiet"]
    assert main([*common, "--device", "cpu", "--save", str(tmp_path / "a.json")]) == 0
    assert main([*common, "--device_map", "auto", "--save", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert b["config"]["device_map"] == "auto" and "device_map" not in a["config"]
    assert a["pruning"]["linear_achieved"] == b["pruning"]["linear_achieved"]
    assert a["perplexity"]["perplexity"] == pytest.approx(b["perplexity"]["perplexity"], rel=1e-6)


@pytest.mark.parametrize(
    "placement, ok",
    [
        ({"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 1}, True),
        ({"": "cpu"}, True),
        ({"model.layers.0": 0, "model.layers.1": "cpu"}, False),
        ({"model.layers.0": 0, "model.layers.1": "disk"}, False),
    ],
)
def test_a_device_map_that_parks_modules_off_the_gpus_is_refused(placement, ok):
    from dlp_lib.config import ConfigError
    from dlp_lib.models import _check_placement

    if ok:
        _check_placement(placement)
    else:
        with pytest.raises(ConfigError, match="--offload"):
            _check_placement(placement)


def test_device_map_settings_are_checked():
    from dlp_lib.config import ConfigError
    from dlp_lib.pipeline import RunConfig

    with pytest.raises(ConfigError, match="unknown device_map"):
        RunConfig(device_map="everywhere")
    with pytest.raises(ConfigError, match="either --offload"):
        RunConfig(device_map="auto", offload=True)
    assert "device_map" not in RunConfig().to_dict()  # older records keep their hashes


def test_prune_model_moves_activations_to_each_blocks_device(monkeypatch, tiny_windows):
    """A mocked two-device split (blocks 0-1 on "device 0", block 2 on "device 1"): every block runs on
    inputs moved to its own device, and the pruned weights equal the single-device result."""
    import dlp_lib.layers as layers

    reference = make_tiny_model("llama")
    prune_model(reference, PruneConfig("wanda", 0.5), tiny_windows, progress=False)
    model = make_tiny_model("llama")
    blocks = decoder_blocks(model)
    placement = {id(b): torch.device("cpu", 0 if i < 2 else 1) for i, b in enumerate(blocks)}
    calls, moves = [], []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device):
            moves.append(target)
        return real_to(self, *args, **kwargs)

    def module_device(block):
        calls.append(placement[id(block)])
        return placement[id(block)]

    monkeypatch.setattr(layers, "module_device", module_device)
    monkeypatch.setattr(torch.Tensor, "to", to)
    prune_model(model, PruneConfig("wanda", 0.5), tiny_windows, progress=False)
    assert set(calls) == {torch.device("cpu", 0), torch.device("cpu", 1)}
    assert torch.device("cpu", 1) in moves  # block 2's inputs followed it
    ref, got = _weights(reference), _weights(model)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
