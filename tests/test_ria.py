"""RIA (dlp_lib.ria): a hand-computed case, properties, and parity with the authors' code.

Parity (tests/fixtures/parity/ria.json, see tests/fixtures/parity/README.md): the authors' prune_ria on the
embedded SmolLM2-135M with the 16 calibration windows recorded, for three matrices, the statistic it used
(scaler_row), its mask and some of its scores. From that statistic and the dense weight, ria_score gives
the same fp32 scores bit for bit (the same float expression) and the masks are compared exactly: 50%
unstructured (whole-matrix threshold), 2:4, and 2:4 with heuristic channel reallocation.
The integration test recomputes the block-0 statistic with dlp_lib's own calibration pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlp_lib.ria import channel_reallocation, relative_importance, ria_mask, ria_nm_mask, ria_score

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "parity" / "ria.json"

W = torch.tensor([[1.0, -2.0, 3.0], [4.0, 0.0, -1.0]])
R = torch.tensor([16.0, 1.0, 81.0])  # sqrt(r) = 4, 1, 9; ** 0.5 = 2, 1, 3


def test_hand_computed_scores():
    # |W| = [[1, 2, 3], [4, 0, 1]]: row sums 6, 5; column sums 5, 2, 4
    ri = torch.tensor([[1 / 5 + 1 / 6, 2 / 2 + 2 / 6, 3 / 4 + 3 / 6], [4 / 5 + 4 / 5, 0.0, 1 / 4 + 1 / 5]])
    torch.testing.assert_close(relative_importance(W), ri)
    expected = torch.tensor([[22 / 30, 4 / 3, 3.75], [3.2, 0.0, 1.35]])
    score = ria_score(W, R)
    assert score.dtype == torch.float32 and score.shape == W.shape
    torch.testing.assert_close(score, expected)
    torch.testing.assert_close(ria_score(W, R, a=1.0), ri * torch.tensor([4.0, 1.0, 9.0]))
    torch.testing.assert_close(ria_score(W, R, a=0.0), ri)  # the authors' "ri" method


def test_hand_computed_masks():
    score = ria_score(W, R)  # sorted: 0, 0.733, 1.333, 1.35, 3.2, 3.75
    # the reference's whole-matrix rule: prune every score <= sorted[int(6 * 0.5)] = 1.35, i.e. 4 of 6
    assert ria_mask(score, 0.5).tolist() == [[True, True, False], [False, True, True]]
    assert ria_mask(score, 0.5, per_row=True).tolist() == [[True, False, False], [False, True, False]]
    assert not ria_mask(score, 0.0).any()


def test_zero_row_or_column_scores_zero():
    weight = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    score = ria_score(weight, torch.ones(2))
    assert torch.isfinite(score).all()
    assert score[:, 0].eq(0).all() and score[2].eq(0).all()
    assert score[0, 1] == pytest.approx(1 / 3 + 1.0)


def test_hand_computed_nm_and_reallocation():
    score = torch.tensor([[5.0, 1.0, 4.0, 2.0, 0.0, 3.0, 9.0, 8.0]])
    assert torch.nonzero(ria_nm_mask(score, 2, 4)[0]).flatten().tolist() == [1, 3, 4, 5]
    # columns by ascending sum: 7 6 5 4 3 2 1 0; chunks [7 6] [5 4] [3 2] [1 0], every second flipped:
    # groups (7 4 3 0) and (6 5 2 1), whose two lowest are 7 4 and 6 5
    score = torch.tensor([[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    assert channel_reallocation(score, 4).tolist() == [7, 4, 3, 0, 6, 5, 2, 1]
    assert torch.nonzero(ria_nm_mask(score, 2, 4, reallocation=True)[0]).flatten().tolist() == [4, 5, 6, 7]
    assert torch.nonzero(ria_nm_mask(score, 2, 4)[0]).flatten().tolist() == [2, 3, 6, 7]


@pytest.fixture
def random_layer():
    g = torch.Generator().manual_seed(0)
    return torch.randn(24, 64, generator=g), torch.rand(64, generator=g) * 10


def test_properties(random_layer):
    weight, norms = random_layer
    score = ria_score(weight, norms)
    assert score.shape == weight.shape and score.dtype == torch.float32 and (score >= 0).all()
    assert ria_score(weight.to(torch.bfloat16), norms).dtype == torch.float32
    # scaling r scales every score by the same factor: no mask changes
    torch.testing.assert_close(ria_score(weight, norms * 7.0), score * 7.0**0.25)
    for sparsity in (0.3, 0.5, 0.7):
        assert ria_mask(score, sparsity).sum() == int(score.numel() * sparsity) + 1  # the reference's extra one
        assert (ria_mask(score, sparsity, per_row=True).sum(1) == int(64 * sparsity)).all()
    nm = ria_nm_mask(score, 2, 4)
    assert (nm.reshape(24, 16, 4).sum(-1) == 2).all()
    index = channel_reallocation(score, 4)
    assert sorted(index.tolist()) == list(range(64))
    realloc = ria_nm_mask(score, 2, 4, reallocation=True)
    assert (realloc[:, index].reshape(24, 16, 4).sum(-1) == 2).all()  # N:M in the permuted order
    # the reallocation aims to keep more total score than direct N:M (the reference logs both)
    assert score[~realloc].sum() >= score[~nm].sum() * 0.99
    with pytest.raises(ValueError):
        ria_score(weight, norms[:10])
    with pytest.raises(ValueError):
        channel_reallocation(score[:, :62], 4)


def _replica_reallocation(score: torch.Tensor, m: int) -> torch.Tensor:
    """The reference's index construction, written independently (chunk bounds by int(cols * (ii - 1) / m))."""
    cols = score.shape[1]
    sorted_idx = torch.sort(torch.sum(score, dim=0))[1]
    index = torch.zeros_like(sorted_idx)
    for ii in range(1, m + 1):
        part = sorted_idx[int(cols * (ii - 1) / m) : int(cols * ii / m)]
        index[ii - 1 :: m] = part if ii % 2 == 1 else part.flip(0)
    return index


def test_reallocation_matches_replica(random_layer):
    score = ria_score(*random_layer)
    for m in (4, 8):
        assert torch.equal(channel_reallocation(score, m), _replica_reallocation(score, m))


# ---------------------------------------------------------------------------------------------------------
# Parity with the authors' code


@pytest.fixture(scope="module")
def fixture():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def dense_weights(fixture):
    from safetensors.torch import load_file

    from dlp_lib.models import embedded_model_dir

    keys = {f"model.layers.{key}.weight" for run in fixture["runs"].values() for key in run}
    tensors = load_file(str(embedded_model_dir() / "model.safetensors"))
    return {key[len("model.layers.") : -len(".weight")]: tensors[key].float() for key in keys}


def decode(b64: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(b64), dtype="<f4").copy())


def mask_of(run: str, score: torch.Tensor, sparsity: float) -> torch.Tensor:
    if run == "unstructured":
        return ria_mask(score, sparsity)
    return ria_nm_mask(score, 2, 4, reallocation=run.endswith("reallocation"))


def assert_same_mask(mask: torch.Tensor, entry: dict) -> None:
    assert mask.sum(1).tolist() == entry["pruned_per_row"]
    for row, indices in enumerate(entry["pruned_idx_first_rows"]):
        assert torch.nonzero(mask[row]).flatten().tolist() == indices
    packed = np.packbits(mask.numpy().reshape(-1))
    assert hashlib.sha256(packed.tobytes()).hexdigest() == entry["mask_packbits_sha256"]


@pytest.mark.parametrize("run", ["unstructured", "2:4", "2:4+reallocation"])
def test_parity_with_reference(run, fixture, dense_weights):
    assert fixture["a"] == 0.5
    for key, entry in fixture["runs"][run].items():
        weight = dense_weights[key]
        assert list(weight.shape) == entry["shape"]
        score = ria_score(weight, decode(entry["scaler_row_f32le_b64"]), a=fixture["a"])
        # the same float expression; its row and column sums may round differently on another CPU's
        # vector kernels (an AMD EPYC differs in the 8th digit), so to float32 rounding, and the masks exactly
        for row, col, value in entry["score_samples"]:
            assert score[row, col].item() == pytest.approx(value, rel=1e-6, abs=0)
        if "threshold" in entry:
            k = int(score.numel() * fixture["sparsity"])
            assert torch.sort(score.flatten()).values[k].item() == pytest.approx(entry["threshold"], rel=1e-6, abs=0)
        mask = mask_of(run, score, fixture["sparsity"])
        assert int(mask.sum()) == entry["pruned_total"]
        assert_same_mask(mask, entry)


@pytest.mark.integration
def test_block0_statistic_matches_reference(fixture, dense_weights):
    """dlp_lib's own calibration pass (dense block 0 = the authors' block 0 inputs) gives their scaler_row
    to float rounding, and with it the same unstructured masks."""
    from dlp_lib.models import load_model
    from dlp_lib.pipeline import cached_dense_norms

    calibration = torch.tensor(json.loads((FIXTURE.parent / "windows.json").read_text())["calibration"])
    model, _ = load_model()
    norms, _ = cached_dense_norms(model, calibration, batch_size=8, progress=False)
    for key, entry in fixture["runs"]["unstructured"].items():
        block, name = key.split(".", 1)
        if block != "0":
            continue
        ours, theirs = norms[0][name].float().cpu(), decode(entry["scaler_row_f32le_b64"])
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
        mask = ria_mask(ria_score(dense_weights[key], ours), fixture["sparsity"])
        assert mask.sum(1).tolist() == entry["pruned_per_row"]
