"""Inference helpers (dlp_lib.inference): N:M checks, sparse storage on the CPU, 2:4 on CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.inference import (
    CPU_FORMATS,
    PatternError,
    SparseLinear,
    check_nm_pattern,
    nm_violations,
    semi_structured_unavailable,
    sparse_weight,
    storage_bytes,
    to_semi_structured,
    to_sparse_format,
)
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.prune import prune_model

CUDA_24 = semi_structured_unavailable() is None


def _pruned(arch="llama", config=None, windows=None):
    model = make_tiny_model(arch)
    prune_model(model, config or PruneConfig("magnitude", 0.5, sparsity_type="2:4"), windows, progress=False)
    return model


# ------------------------------------------------------------------------------------- pattern checks
def test_nm_violations_hand_case():
    weight = torch.tensor(
        [
            [0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 4.0],  # 2 zeros, 2 zeros: fine
            [1.0, 2.0, 0.0, 3.0, 0.0, 0.0, 0.0, 5.0],  # 1 zero (bad), 3 zeros
            [1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 0.0, 0.0],  # 0 zeros (bad), 3 zeros
        ]
    )
    assert nm_violations(weight, 2, 4) == (2, 6, (1, 0))
    assert nm_violations(weight, 1, 4) == (1, 6, (2, 0))
    assert nm_violations(weight[:1], 2, 4) == (0, 2, None)


def test_nm_violations_bad_arguments():
    with pytest.raises(ConfigError, match="0 < N < M"):
        nm_violations(torch.zeros(2, 8), 4, 4)
    with pytest.raises(PatternError, match="input size 6 is not a multiple of M=4"):
        nm_violations(torch.zeros(2, 6), 2, 4)


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_check_nm_pattern_accepts_a_2_4_pruned_model(arch):
    model = _pruned(arch)
    linears = sum(len(linear_sublayers(b)) for b in decoder_blocks(model))
    assert check_nm_pattern(model, 2, 4) == linears


def test_check_nm_pattern_names_the_first_linear_that_is_not_2_4(tiny_windows):
    dense = make_tiny_model("llama")
    with pytest.raises(PatternError, match=r"block 0 self_attn\.q_proj is not 2:4 sparse: 256 of 256 groups"):
        check_nm_pattern(dense, 2, 4)
    model = _pruned()
    decoder_blocks(model)[1].mlp.up_proj.weight.data[3, 8:11] = 1.0  # a 2:4 group with at most one zero
    with pytest.raises(PatternError, match=r"block 1 mlp\.up_proj .* 1 of \d+ groups .* row 3, columns 8-11"):
        check_nm_pattern(model, 2, 4)
    unstructured = _pruned(config=PruneConfig("wanda", 0.7), windows=tiny_windows)
    with pytest.raises(PatternError, match="--sparsity_type 2:4"):
        check_nm_pattern(unstructured, 2, 4)


# ------------------------------------------------------------------------------------ CPU sparse formats
@pytest.mark.parametrize("fmt", CPU_FORMATS)
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparse_weight_round_trip_is_exact(fmt, pattern):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(24, 32, generator=g)
    if pattern == "2:4":
        groups = weight.reshape(24, 8, 4)
        lowest = groups.abs().topk(2, dim=-1, largest=False).indices
        weight = groups.scatter(-1, lowest, 0.0).reshape(24, 32)
    else:
        weight[torch.rand(24, 32, generator=g) < 0.7] = 0.0
    sparse = sparse_weight(weight, fmt)
    assert torch.equal(sparse.to_dense(), weight)


def test_storage_bytes_hand_counts():
    weight = torch.zeros(4, 8)
    weight[0, 1], weight[2, 3], weight[2, 7] = 1.0, 2.0, 3.0
    assert storage_bytes(weight) == 4 * 8 * 4
    assert storage_bytes(sparse_weight(weight, "csr")) == 5 * 8 + 3 * 8 + 3 * 4  # crow, col (int64), values
    assert storage_bytes(sparse_weight(weight, "coo")) == 2 * 3 * 8 + 3 * 4
    assert storage_bytes(sparse_weight(weight, "csc")) == 9 * 8 + 3 * 8 + 3 * 4


def test_sparse_weight_unknown_format():
    with pytest.raises(ConfigError, match="unknown sparse format 'ell'; use one of csr, csc, coo"):
        sparse_weight(torch.zeros(2, 4), "ell")


@pytest.mark.parametrize("fmt", CPU_FORMATS)
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_sparse_format_model_gives_the_dense_outputs(fmt, arch, tiny_windows):
    """A 70%-pruned tiny model with every decoder linear in sparse storage gives the dense model's
    logits up to float summation order."""
    model = _pruned(arch, PruneConfig("wanda", 0.7), tiny_windows)
    with torch.no_grad():
        expected = model(input_ids=tiny_windows[:3]).logits
        replaced = to_sparse_format(model, fmt)
        got = model(input_ids=tiny_windows[:3]).logits
    assert replaced == 3 * len(linear_sublayers(decoder_blocks(make_tiny_model(arch))[0]))
    assert all(isinstance(m, SparseLinear) for b in decoder_blocks(model) for m in _linear_like(b))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _linear_like(block):
    return [m for m in block.modules() if isinstance(m, (torch.nn.Linear, SparseLinear))]


# -------------------------------------------------------------------------------- 2:4 on a GPU (CUDA)
@pytest.mark.skipif(CUDA_24, reason="checks the refusal on a machine without usable 2:4 kernels")
def test_to_semi_structured_refuses_without_a_gpu():
    with pytest.raises(ConfigError, match="2:4 kernels need"):
        to_semi_structured(_pruned())


@pytest.mark.skipif(not CUDA_24, reason=semi_structured_unavailable() or "")
@pytest.mark.parametrize("backend", ["cusparselt", "cutlass"])
def test_semi_structured_round_trip_and_outputs_on_cuda(backend):
    from dlp_lib.inference import semi_structured_weight

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(128, 128, generator=g)
    groups = weight.reshape(128, 32, 4)
    weight = groups.scatter(-1, groups.abs().topk(2, dim=-1, largest=False).indices, 0.0).reshape(128, 128)
    weight = weight.to("cuda", torch.float16)
    try:
        sparse = semi_structured_weight(weight, backend)
    except RuntimeError as err:  # e.g. CUTLASS on sm90: reported by the benchmark, not a library bug
        pytest.skip(f"{backend}: {err}")
    assert torch.equal(sparse.to_dense(), weight)
    x = torch.randn(64, 128, generator=g).to("cuda", torch.float16)
    torch.testing.assert_close(torch.nn.functional.linear(x, sparse), x @ weight.t(), rtol=1e-2, atol=1e-2)
