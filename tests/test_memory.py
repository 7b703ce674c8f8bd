"""dlp_lib.memory: the peak-memory estimate from a model configuration (measured in bench/memory.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, tiny_config

from dlp_lib.config import ConfigError
from dlp_lib.layers import decoder_blocks
from dlp_lib.memory import Shapes, estimate_peak_memory, llama2_config

GiB = 2**30


def test_llama2_7b_parameter_count_is_the_published_one():
    s = Shapes.from_config(llama2_config("7b"))
    assert s.block_params == 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
    assert s.layers * s.block_params + s.outer_params == 6_738_415_616  # LLaMA-2-7B: 6.74B parameters


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_shapes_count_the_parameters_of_a_real_model(arch):
    """Block and outer parameter counts equal the instantiated model's (no biases in these archs)."""
    model = make_tiny_model(arch)
    s = Shapes.from_config(tiny_config(arch))
    assert s.block_params == sum(p.numel() for p in decoder_blocks(model)[0].parameters())
    assert s.layers * s.block_params + s.outer_params == sum(p.numel() for p in model.parameters())


def test_whole_model_terms_by_hand():
    """A hand-sized case: h=8, i=16, 2 blocks, vocab 10, fp16, 4 windows x 4 tokens, batch 2."""
    config = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=2, vocab_size=10, num_attention_heads=2)
    est = estimate_peak_memory(config, nsamples=4, seqlen=4, batch_size=2, method="sparsegpt", eval_windows=3)
    block = 4 * 64 + 3 * 8 * 16 + 16  # attention, MLP, two norms
    assert est.prune["weights"] == 2 * (2 * block + 2 * 10 * 8 + 8)
    assert est.prune["calibration activations"] == 2 * 4 * 4 * 8 * 2
    assert est.prune["statistics"] == (3 * 8 * 8 + 16 * 16) * 4
    forward = 2 * 4 * (3 * 16 + 4 * 8) * 2 + 2 * 4 * 16 * 4
    solve = 8 * 16 * 4 + 3 * 16 * 16 * 4
    assert est.prune["forward or solve"] == max(forward, solve)
    assert est.evaluate["logits"] == 3 * 10 * 2 + 3 * 10 * 4  # 3 positions with a target; the fp32 chunk
    assert est.evaluate["evaluation activations"] == 0 and est.host_peak == 0


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_offload_keeps_one_block_on_the_device(method):
    config = llama2_config("7b")
    whole = estimate_peak_memory(config, method=method)
    off = estimate_peak_memory(config, method=method, offload=True)
    s = Shapes.from_config(config)
    assert whole.prune["weights"] - off.prune["weights"] == (s.layers - 1) * s.block_params * 2
    assert off.host_peak == whole.prune["weights"]
    assert off.device_peak < whole.device_peak


def test_estimates_for_the_papers_models_are_in_the_expected_range():
    """fp16 LLaMA-2-7B is 12.6 GiB of weights: whole-model pruning needs more; offloaded 70B fits 80 GB."""
    wanda_7b = estimate_peak_memory(llama2_config("7b"), method="wanda")
    assert 12.5 * GiB < wanda_7b.prune["weights"] < 12.6 * GiB
    assert wanda_7b.device_peak > 16 * GiB
    assert estimate_peak_memory(llama2_config("70b"), method="sparsegpt", offload=True).device_peak < 40 * GiB
    assert estimate_peak_memory(llama2_config("70b"), method="wanda").device_peak > 128 * GiB
    magnitude = estimate_peak_memory(llama2_config("7b"), method="magnitude")
    assert "calibration activations" not in magnitude.prune


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="unknown method"):
        estimate_peak_memory(llama2_config("7b"), method="obs")
    with pytest.raises(ConfigError, match="dtype"):
        estimate_peak_memory(llama2_config("7b"), dtype=torch.int8)
    with pytest.raises(ConfigError, match="hidden_size"):
        estimate_peak_memory({"vocab_size": 10})
    with pytest.raises(ConfigError, match="vocab_size"):
        estimate_peak_memory({"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2})
    with pytest.raises(ConfigError, match="unknown LLaMA-2 size"):
        llama2_config("30b")
