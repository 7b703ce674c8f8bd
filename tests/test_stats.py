"""Calibration statistics (docs/methods.md: InputNorms in "Wanda", Hessian in "SparseGPT") and the hook
context manager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlp_lib import stats
from dlp_lib.stats import Hessian, InputNorms, record_inputs, symmetric_rank_update


def _windows(n=6, tokens=5, d_in=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, tokens, d_in, generator=g)


HAND = torch.tensor([[[1.0, 2.0], [3.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])  # 2 windows x 2 tokens x 2 inputs


# ------------------------------------------------------------------------------ InputNorms
def test_input_norms_hand_case():
    stat = InputNorms(2)
    stat.add(HAND)
    # column sums of squares: 1+9+0+1 = 11 and 4+0+1+1 = 6, over N = 2 windows (not 4 tokens)
    assert stat.mean.tolist() == [5.5, 3.0]
    assert stat.windows == 2


def test_input_norms_matches_definition_and_is_batch_invariant():
    x = _windows()
    expected = (x.double() ** 2).sum(dim=(0, 1)) / x.shape[0]

    one = InputNorms(4)
    for window in x:  # one window at a time, (tokens, d_in)
        one.add(window)
    one_3d = InputNorms(4)
    for window in x:  # one window at a time, (1, tokens, d_in)
        one_3d.add(window.unsqueeze(0))
    batched = InputNorms(4)
    batched.add(x[:3])
    batched.add(x[3:])

    for stat in (one, one_3d, batched):
        assert stat.windows == 6
        assert stat.mean.dtype == torch.float32
        torch.testing.assert_close(stat.mean.double(), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(one.mean, batched.mean, rtol=1e-6, atol=1e-7)


def test_input_norms_fp16_input_accumulates_fp32():
    x = _windows(seed=1).half()
    stat = InputNorms(4)
    stat.add(x)
    expected = (x.double() ** 2).sum(dim=(0, 1)) / x.shape[0]
    assert stat.mean.dtype == torch.float32
    torch.testing.assert_close(stat.mean.double(), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ Hessian
def test_hessian_hand_case():
    stat = Hessian(2)
    stat.add(HAND)
    # X^T X over the 4 tokens = [[11, 3], [3, 6]], times 2/N with N = 2 windows
    torch.testing.assert_close(stat.matrix, torch.tensor([[11.0, 3.0], [3.0, 6.0]]))
    assert stat.windows == 2


def test_hessian_matches_definition_and_is_batch_invariant():
    x = _windows(n=6, tokens=7, d_in=5, seed=2)
    flat = x.reshape(-1, 5).double()
    expected = 2.0 / 6 * flat.T @ flat

    one = Hessian(5)
    for window in x:
        one.add(window)  # (tokens, d_in) = one window
    batched = Hessian(5)
    batched.add(x[:3])
    batched.add(x[3:])
    mixed = Hessian(5)
    mixed.add(x[:1])
    mixed.add(x[1])
    mixed.add(x[2:6])

    for stat in (one, batched, mixed):
        assert stat.windows == 6
        assert stat.matrix.dtype == torch.float32
        torch.testing.assert_close(stat.matrix.double(), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stat.matrix, stat.matrix.T)


@pytest.mark.parametrize("d, tokens", [(100, 64), (128, 300), (576, 512), (700, 1024), (1536, 257)])
def test_symmetric_rank_update_is_the_full_product_up_to_rounding(d, tokens):
    """The banded upper triangle plus its mirror is ``H + x^T x``, symmetric to the bit, and no further
    from the exact (float64) result than the full fp32 product: for one band (d <= 128), bands that
    divide d and a last narrow band, from a non-zero H as the running update starts. Whether it also
    equals the full product bit for bit depends on the BLAS: it does with MKL on the AMD EPYC that made
    the committed results; on an Intel Xeon MKL picks other kernels by shape and most entries differ in
    their last bits (equally close to the exact values)."""
    g = torch.Generator().manual_seed(d)
    start = torch.randn(d, d, generator=g)
    start = start @ start.t() / d
    x = torch.randn(tokens, d, generator=g) * 0.3
    banded = start.clone()
    symmetric_rank_update(banded, x)
    exact = start.double() + x.double().t() @ x.double()
    full = start.clone().addmm_(x.t(), x)
    banded_error, full_error = (float((h.double() - exact).abs().max()) for h in (banded, full))
    assert banded_error <= 2 * full_error
    assert torch.equal(banded, banded.t())


# ---------------------------------------------- the half Hessian (sparsegpt_hessian="half"; tensor cores on CUDA)
def _half_batches(dtype, d=200, seed=3):
    """Batches of 2, 1 and 3 windows of half-precision activations, d wide (several bands of the update)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(w, 16, d, generator=g) * 2).to(dtype) for w in (2, 1, 3)]


def _accumulated(batches, d=200, half=False):
    stat = Hessian(d, half=half)
    for x in batches:
        stat.add(x)
    return stat.matrix


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_half_hessian_is_2_over_n_times_the_sum_of_x_xT(dtype):
    """On a CPU the half arithmetic forms the products from exact fp32 copies of the half-precision inputs
    (CUDA: torch.mm's fp32 output on tensor cores), so it is the definition up to the fp32 sums' rounding."""
    batches = _half_batches(dtype)
    exact = sum(x.double().reshape(-1, 200).t() @ x.double().reshape(-1, 200) for x in batches) * 2 / 6
    half = _accumulated(batches, half=True)
    torch.testing.assert_close(half.double(), exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))
    assert torch.equal(half, half.t())


def test_the_half_hessian_differs_from_the_fp32_one_only_in_rounding():
    batches = _half_batches(torch.bfloat16)
    half, fp32 = _accumulated(batches, half=True), _accumulated(batches)
    scale = float(fp32.abs().max())
    assert not torch.equal(half, fp32)  # another rounding: the scale after the sums (2/N, N = 2, 3, 6), not before
    torch.testing.assert_close(half, fp32, rtol=2e-6, atol=2e-6 * scale)


def test_the_half_hessian_with_power_of_two_scales_equals_the_fp32_one_on_a_cpu():
    """With every sqrt(2/N) a power of two the scale is exact in either place, and a CPU sums the same products
    with the same matrix product: the two arithmetics agree bit for bit (bench/hessian.py batches by 3)."""
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(w, 4, 200, generator=g) * 2).to(torch.bfloat16) for w in (2, 6, 24)]  # N = 2, 8, 32
    assert torch.equal(_accumulated(batches, half=True), _accumulated(batches))


def test_fp32_activations_keep_the_reference_arithmetic_under_half():
    """The half arithmetic applies to bf16/fp16 activations; an fp32 model's Hessian stays the reference's."""
    batches = [x.float() for x in _half_batches(torch.bfloat16)]
    assert torch.equal(_accumulated(batches, half=True), _accumulated(batches))


def test_half_product_on_a_cpu_is_the_product_of_exact_fp32_copies():
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(64, 48, generator=g).to(torch.bfloat16) for _ in range(2))
    assert torch.equal(stats.half_product(a.t(), b), a.float().t() @ b.float())


def test_record_inputs_records_every_call_and_removes_hooks():
    torch.manual_seed(0)
    modules = {"a": nn.Linear(3, 2), "b": nn.Linear(2, 1)}
    seen = []
    x1, x2 = torch.randn(4, 3), torch.randn(5, 3)
    with record_inputs(modules, lambda name, inp: seen.append((name, inp))):
        modules["b"](modules["a"](x1))
        modules["a"](x2)
    assert [name for name, _ in seen] == ["a", "b", "a"]
    assert torch.equal(seen[0][1], x1) and torch.equal(seen[2][1], x2)
    assert torch.allclose(seen[1][1], modules["a"](x1))
    assert all(len(m._forward_pre_hooks) == 0 for m in modules.values())
    modules["a"](x1)
    assert len(seen) == 3


def test_record_inputs_removes_hooks_when_the_forward_raises():
    modules = {"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}
    seen = []
    with pytest.raises(RuntimeError):
        with record_inputs(modules, lambda name, inp: seen.append(name)):
            modules["a"](torch.randn(2, 3))
            modules["b"](torch.randn(2, 7))  # wrong input size: the forward itself raises
    assert seen == ["a", "b"], "the input is recorded before the module runs"
    assert all(len(m._forward_pre_hooks) == 0 for m in modules.values())


def test_record_inputs_removes_hooks_when_the_recorder_raises():
    module = nn.Linear(3, 2)

    def record(name, inp):
        raise KeyError(name)

    ran = []
    module.register_forward_hook(lambda *args: ran.append(True))
    with pytest.raises(KeyError):
        with record_inputs({"a": module}, record):
            module(torch.randn(2, 3))
    assert len(module._forward_pre_hooks) == 0
    assert ran == [], "a recorder that raises stops the module before it runs"
