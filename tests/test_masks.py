"""Masks (docs/methods.md#pruners): True marks a weight to prune."""

from __future__ import annotations

import pytest
import torch

from dlp_lib.masks import (
    cumulative_score_mask,
    kth_smallest,
    kth_smallest_by_topk,
    nm_mask,
    per_row_mask,
    variant_mask,
    whole_matrix_mask,
)

T, F = True, False


def _rand(rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, generator=g)


# ------------------------------------------------------------------------------ per_row_mask (Wanda)
def test_per_row_mask_hand_case_with_ties_broken_by_column_order():
    score = torch.tensor([[3.0, 1.0, 1.0, 2.0], [0.0, 5.0, 0.0, 0.0]])
    # s=0.5 -> int(4*0.5)=2 per row. Row 0: 1(col1), 1(col2). Row 1: the three 0s tie -> cols 0, 2 first.
    assert per_row_mask(score, 0.5).tolist() == [[F, T, T, F], [T, F, T, F]]
    # s=0.25 -> 1 per row: first of the tied minima.
    assert per_row_mask(score, 0.25).tolist() == [[F, T, F, F], [T, F, F, F]]
    # s=0.75 -> 3 per row.
    assert per_row_mask(score, 0.75).tolist() == [[F, T, T, T], [T, F, T, T]]


def test_per_row_mask_all_equal_row_prunes_leftmost_columns():
    score = torch.ones(3, 8)
    mask = per_row_mask(score, 0.5)
    assert mask[:, :4].all() and not mask[:, 4:].any()


@pytest.mark.parametrize("shape", [(3, 10), (5, 7), (1, 128), (8, 33)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.7, 0.99])
def test_per_row_mask_prunes_exactly_int_din_s_lowest_per_row(shape, sparsity):
    score = _rand(*shape, seed=shape[1])
    mask = per_row_mask(score, sparsity)
    k = int(shape[1] * sparsity)
    assert mask.dtype == torch.bool and mask.shape == score.shape
    assert mask.sum(dim=1).tolist() == [k] * shape[0]
    if 0 < k < shape[1]:
        pruned_max = torch.where(mask, score, torch.full_like(score, -1.0)).max(dim=1).values
        kept_min = torch.where(~mask, score, torch.full_like(score, 2.0)).min(dim=1).values
        assert (pruned_max < kept_min).all()


def _stable_sort_mask(score, sparsity):
    """The reference code's definition: the first int(d_in * s) indices of a stable sort per row."""
    k = int(score.shape[1] * sparsity)
    order = torch.sort(score, dim=1, stable=True).indices[:, :k]
    return torch.zeros_like(score, dtype=torch.bool).scatter_(1, order, True)


@pytest.mark.parametrize("sparsity", [0.01, 0.3, 0.5, 0.7, 0.8, 0.99])
@pytest.mark.parametrize("levels", [3, 50, None])
def test_per_row_mask_equals_the_stable_sort_bit_for_bit(sparsity, levels):
    """The selection-based mask is the stable sort's, also with many ties (scores on a few levels)."""
    g = torch.Generator().manual_seed(levels or 0)
    score = torch.rand(64, 96, generator=g)
    if levels:
        score = (score * levels).floor()
    assert torch.equal(per_row_mask(score, sparsity), _stable_sort_mask(score, sparsity))


def test_per_row_mask_rows_with_nan_or_inf_follow_the_stable_sort():
    score = _rand(4, 12, seed=5)
    score[1, 3] = float("nan")  # a stable sort puts NaN last: it is never pruned before finite scores
    score[2, 0] = float("inf")
    score[3, 5] = float("-inf")
    assert torch.equal(per_row_mask(score, 0.5), _stable_sort_mask(score, 0.5))
    assert not per_row_mask(score, 0.5)[1, 3]


# ------------------------------------------------------------------------------ whole_matrix_mask (magnitude)
def test_whole_matrix_mask_hand_case_prunes_one_more_than_int_numel_s():
    score = torch.tensor([[0.5, 0.1, 0.8, 0.3], [0.7, 0.2, 0.6, 0.4]])
    # s=0.5: sorted[int(8*0.5)] = sorted[4] = 0.5 -> prune <= 0.5 (5 entries).
    assert whole_matrix_mask(score, 0.5).tolist() == [[T, T, F, T], [F, T, F, T]]
    # s=0.25: sorted[2] = 0.3 -> prune 0.1, 0.2, 0.3.
    assert whole_matrix_mask(score, 0.25).tolist() == [[F, T, F, T], [F, T, F, F]]
    # s=0.1: sorted[0] = 0.1 -> one entry.
    assert whole_matrix_mask(score, 0.1).tolist() == [[F, T, F, F], [F, F, F, F]]
    # s=0: nothing.
    assert not whole_matrix_mask(score, 0.0).any()


def test_whole_matrix_mask_ties_are_all_pruned():
    score = torch.tensor([[1.0, 2.0, 2.0, 3.0], [2.0, 4.0, 5.0, 6.0]])
    # s=0.25: sorted = [1,2,2,2,3,4,5,6], sorted[2] = 2 -> prune 1 and all three 2s.
    assert whole_matrix_mask(score, 0.25).tolist() == [[T, T, T, F], [T, F, F, F]]
    # s=0.9: int(7.2)=7 -> sorted[7] = 6 -> everything.
    assert whole_matrix_mask(score, 0.9).all()


@pytest.mark.parametrize("sparsity", [0.01, 0.3, 0.5, 0.7, 0.9])
def test_whole_matrix_mask_count_without_ties(sparsity):
    score = _rand(16, 24, seed=3)
    mask = whole_matrix_mask(score, sparsity)
    k = int(score.numel() * sparsity)
    assert int(mask.sum()) == k + 1
    threshold = torch.sort(score.flatten()).values[k]
    assert torch.equal(mask, score <= threshold)


# ------------------------------------------------------------------------------ nm_mask
def test_nm_mask_hand_case():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 5.0, 8.0, 6.0, 7.0], [0.1, 4.0, 0.3, 0.2, 9.0, 1.0, 2.0, 3.0]])
    assert nm_mask(score, 2, 4).tolist() == [[F, T, F, T, T, F, T, F], [T, F, F, T, F, T, T, F]]
    assert nm_mask(score, 1, 4).tolist() == [[F, T, F, F, T, F, F, F], [T, F, F, F, F, T, F, F]]
    # 4:8 on the whole row: the 4 smallest of 8.
    assert nm_mask(score, 4, 8).tolist() == [[T, T, T, T, F, F, F, F], [T, F, T, T, F, T, F, F]]


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 4), (4, 8), (5, 8)])
def test_nm_mask_exactly_n_smallest_per_group(n, m):
    score = _rand(16, 64, seed=n * 10 + m)
    mask = nm_mask(score, n, m)
    groups_mask = mask.reshape(16, 64 // m, m)
    groups = score.reshape(16, 64 // m, m)
    assert (groups_mask.sum(-1) == n).all()
    pruned_max = torch.where(groups_mask, groups, torch.full_like(groups, -1.0)).max(-1).values
    kept_min = torch.where(~groups_mask, groups, torch.full_like(groups, 2.0)).min(-1).values
    assert (pruned_max < kept_min).all()


def test_nm_mask_refuses_columns_not_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of M=4"):
        nm_mask(torch.rand(2, 6), 2, 4)


# ------------------------------------------------------------------------------ Wanda variant (spec §2.2)
def test_cumulative_score_mask_hand_case():
    score = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 1.0, 1.0, 8.0]])
    # alpha=0.4. Row 0: total 10, cumsum [1,3,6,10] <= 4 -> 2 kept -> threshold 2 -> prune 1, 2.
    # Row 1: total 20, sorted [1,1,8,10], cumsum [1,2,10,20] <= 8 -> threshold 1 -> prune both 1s.
    assert cumulative_score_mask(score, 0.4).tolist() == [[T, T, F, F], [F, T, T, F]]
    # alpha=0.5. Row 0: cumsum <= 5 -> threshold 2. Row 1: cumsum <= 10 -> threshold 8 -> prune 1, 1, 8.
    assert cumulative_score_mask(score, 0.5).tolist() == [[T, T, F, F], [F, T, T, T]]


def test_cumulative_score_mask_smallest_above_budget_prunes_whole_row():
    score = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 1.0, 1.0, 8.0]])
    # alpha=0.05. Row 0: even the smallest (1) > 0.5 -> index -1 -> the row maximum -> whole row (quirk).
    # Row 1: 1 <= 1 -> threshold 1 -> the two 1s.
    assert cumulative_score_mask(score, 0.05).tolist() == [[T, T, T, T], [F, T, T, F]]


def test_variant_mask_survives_a_constant_row():
    score = _rand(8, 64, seed=0)
    score[3] = 1.0  # a constant row: at small alpha no cumulative sum fits the budget
    mask = variant_mask(score, 0.1)
    assert mask.shape == score.shape
    assert mask[3].all()  # ties: a constant row is pruned whole whatever alpha


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_variant_mask_reaches_target_sparsity(target):
    score = _rand(64, 256, seed=7)
    mask = variant_mask(score, target)
    assert abs(mask.float().mean().item() - target) <= 0.001
    # Per row it is a threshold mask: every pruned score <= every kept score of that row.
    pruned_max = torch.where(mask, score, torch.full_like(score, -1.0)).max(dim=1).values
    kept_min = torch.where(~mask, score, torch.full_like(score, 2.0)).min(dim=1).values
    assert (pruned_max < kept_min).all()


# ------------------------------------------------------------------------------ kth_smallest
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape, k", [((257,), 1), ((257,), 180), ((257,), 257), ((6, 40), 28), ((6, 40), 1)])
def test_kth_smallest_equals_kthvalue_with_ties(dtype, shape, k):
    """NumPy's selection (CPU, finite values) and torch.kthvalue give the same k-th order statistic,
    with many ties (values rounded to a few levels) and with negative zeros."""
    g = torch.Generator().manual_seed(k)
    values = (torch.randn(shape, generator=g) * 4).round().to(dtype)
    values[..., 0] = -0.0
    expected = torch.kthvalue(values, k, dim=-1, keepdim=True).values
    got = kth_smallest(values, k)
    assert got.shape == expected.shape and got.dtype == dtype
    assert torch.equal(got, expected)


def test_kth_smallest_with_nan_takes_kthvalue():
    values = torch.tensor([[3.0, float("nan"), 1.0, 2.0], [4.0, 3.0, 2.0, 1.0]])
    expected = torch.kthvalue(values, 2, dim=-1, keepdim=True).values
    assert torch.equal(kth_smallest(values, 2), expected)


# ------------------------------------------------------------- kth_smallest on CUDA: by topk (checked on a CPU)
def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as values (NaN equal to NaN; of tied zeros either sign may be selected)."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(1,), (257,), (6, 40), (3, 5, 17)])
def test_kth_smallest_by_topk_equals_kthvalue_for_every_k(dtype, shape):
    """The CUDA selection against ``torch.kthvalue`` at every k: many ties (a few levels), negative and
    positive zeros, infinities of both signs, rows with some NaN and a row of NaN only."""
    g = torch.Generator().manual_seed(len(shape))
    values = (torch.randn(shape, generator=g) * 3).round().to(dtype)
    zeros = values == 0
    values[zeros] = torch.where(torch.rand(shape, generator=g)[zeros] < 0.5, -0.0, 0.0).to(dtype)
    if shape[-1] > 3:
        values[..., 1] = float("inf")
        values[..., 2] = -float("inf")
    if len(shape) > 1:
        values[0, ..., torch.rand(shape[-1], generator=g) < 0.3] = float("nan")  # some NaN in the first row(s)
        values[1] = float("nan")  # a row of NaN only
    for k in range(1, shape[-1] + 1):
        expected = torch.kthvalue(values, k, dim=-1, keepdim=True).values
        assert _same_values(kth_smallest_by_topk(values, k), expected), k


def test_kth_smallest_by_topk_hand_case_with_nan():
    """NaN counts as larger than every number (torch.sort's order): k = 3 of [3, NaN, 1, 2] is 3, k = 4 is NaN."""
    values = torch.tensor([[3.0, float("nan"), 1.0, 2.0]])
    assert [kth_smallest_by_topk(values, k).item() for k in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert kth_smallest_by_topk(values, 4).isnan().all()


@pytest.mark.parametrize("k", [0, 5])
def test_kth_smallest_by_topk_refuses_a_k_outside_the_row(k):
    with pytest.raises(ValueError, match=f"k={k} is outside 1..4"):
        kth_smallest_by_topk(torch.zeros(2, 4), k)


def test_on_cuda_kth_smallest_takes_topk_not_kthvalue(monkeypatch):
    """The dispatch: a CUDA tensor goes to kth_smallest_by_topk (stood in for by a tensor whose device
    says CUDA), never to torch.kthvalue, whose CUDA kernel is 50-150x slower on these sizes."""
    import dlp_lib.masks as masks

    calls = []

    class OnCuda:
        device = torch.device("cuda")
        dtype = torch.float32

    monkeypatch.setattr(masks, "kth_smallest_by_topk", lambda values, k: calls.append(k) or "topk")
    monkeypatch.setattr(torch, "kthvalue", lambda *args, **kwargs: pytest.fail("torch.kthvalue on CUDA"))
    assert masks.kth_smallest(OnCuda(), 3) == "topk" and calls == [3]


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_masks_from_the_topk_selection_equal_the_cpus(monkeypatch, sparsity):
    """Wanda's per-row and magnitude's whole-matrix masks (and so SparseGPT's per-block ones) built on the
    topk selection, as on CUDA, equal the CPU's bit for bit, ties and all."""
    import dlp_lib.masks as masks

    score = (_rand(16, 64, seed=4) * 8).round()
    expected = (per_row_mask(score, sparsity), whole_matrix_mask(score, sparsity))
    monkeypatch.setattr(masks, "kth_smallest", kth_smallest_by_topk)
    assert torch.equal(masks.per_row_mask(score, sparsity), expected[0])
    assert torch.equal(masks.whole_matrix_mask(score, sparsity), expected[1])
