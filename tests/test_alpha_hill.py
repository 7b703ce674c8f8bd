"""AlphaPruning (dlp_lib.alpha_hill): hand-computed spectra, the mapping's properties, and parity with the
authors' code.

Parity (tests/fixtures/parity/alphapruning.json, see tests/fixtures/parity/README.md): the authors'
net_esd_estimator on the embedded SmolLM2-135M gave every linear's PL_Alpha_Hill (their default
xmin_peak and xmin_mid, the model loaded in fp32 and in fp16), and their ww_sparsity the per-linear
sparsities at 70%. They fit in float32 from float32 singular values; dlp_lib fits in float64 from float64
eigenvalues, so alphas agree to a tolerance (5e-4 here; the largest gap on the embedded model is 1.5e-4),
and the mapping, fed their alphas, agrees to 1e-6 (their scale factor rounds s * sum(P) to float32).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dlp_lib.alpha_hill import alpha_largest_epsilon, alpha_sparsities, eigenvalues, hill_alpha, spectrum_alpha
from dlp_lib.config import ConfigError

FIXTURE = json.loads((Path(__file__).resolve().parent / "fixtures" / "parity" / "alphapruning.json").read_text())
LINEARS = 7


def diagonal_weight(eigs) -> torch.Tensor:
    """A square weight whose W^T W has exactly the eigenvalues ``eigs``."""
    return torch.diag(torch.tensor(eigs, dtype=torch.float64).sqrt()).float()


def test_eigenvalues_are_squared_singular_values_ascending():
    torch.manual_seed(0)
    weight = torch.randn(5, 9)
    expected = torch.linalg.svdvals(weight.double()).square().sort().values
    for w in (weight, weight.T):
        torch.testing.assert_close(eigenvalues(w), expected, rtol=1e-10, atol=1e-12)


def test_hand_computed_hill_estimates():
    # eigenvalues 1, e, e^2, e^3: logs 0, 1, 2, 3
    weight = diagonal_weight([1.0, math.e, math.e**2, math.e**3])
    # xmin_mid: i = 2, n = 2, sum of logs from i = 5, alpha = 1 + 2 / (5 - 2 * 2) = 3
    assert hill_alpha(weight, "xmin_mid") == pytest.approx(3.0, abs=1e-6)  # the weight is float32
    # xmin_peak: the histogram's fullest bin is the first (ties go to the first), edge log10 = 0, so the
    # cut-offs are the eigenvalues <= 1.5: only i = 0, alpha = 1 + 4 / (0 + 1 + 2 + 3) = 5/3
    assert hill_alpha(weight, "xmin_peak") == pytest.approx(5 / 3, abs=1e-6)


def test_peak_estimator_keeps_the_smallest_ks_distance():
    # four eigenvalues within 0.15% make the fullest bin the top one, so every cut-off is tried; the
    # estimate must be the Hill estimate whose KS distance is smallest (the first of equal ones)
    weight = diagonal_weight([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 21.01, 21.02, 21.03])
    eigs = eigenvalues(weight)
    logs = eigs.log()
    candidates = []
    for i in range(len(eigs) - 1):
        n = len(eigs) - i
        alpha = 1 + n / float(logs[i:].sum() - n * logs[i])
        seq = torch.arange(n, dtype=torch.float64)
        d = float((1 - torch.exp((1 - alpha) * (logs[i:] - logs[i])) - seq / n).abs().max()) if alpha > 1 else 1.0
        candidates.append((d, i, alpha))
    best = min(candidates)  # smallest D, then the smallest index
    assert hill_alpha(weight, "xmin_peak") == pytest.approx(best[2], abs=1e-9)


def test_bad_inputs_refused():
    with pytest.raises(ConfigError, match="unknown AlphaPruning estimator"):
        hill_alpha(torch.eye(3), "xmin_max")
    with pytest.raises(ConfigError, match="fewer than 2 non-zero singular values"):
        hill_alpha(torch.zeros(4, 4))
    with pytest.raises(ConfigError, match="epsilon must be in"):
        alpha_sparsities([1.0, 2.0], 0.5, 1.5)


def test_mapping_properties():
    scores = [2.0, 3.0, 5.0, 4.0]
    sizes = [10.0, 10.0, 30.0, 50.0]
    s = alpha_sparsities(scores, 0.6, 0.2, sizes)
    # parameter-weighted mean sparsity is the target, order follows the scores, range ratio (1+e)/(1-e)
    assert float((s * torch.tensor(sizes)).sum() / sum(sizes)) == pytest.approx(0.6, abs=1e-12)
    assert s.argsort().tolist() == [0, 1, 3, 2]
    assert float(s.max() / s.min()) == pytest.approx(1.2 / 0.8, abs=1e-12)
    torch.testing.assert_close(alpha_sparsities(scores, 0.6, 0.0), torch.full((4,), 0.6, dtype=torch.float64))
    torch.testing.assert_close(alpha_sparsities([1.0, 1.0], 0.6, 0.3), torch.full((2,), 0.6, dtype=torch.float64))


def test_largest_epsilon_is_where_a_block_reaches_sparsity_one():
    scores, sizes, sparsity = [1.0, 2.0, 4.0], [1.0, 1.0, 2.0], 0.7
    limit = alpha_largest_epsilon(scores, sparsity, sizes)
    assert 0 < limit < 1
    below = alpha_sparsities(scores, sparsity, limit * (1 - 1e-9), sizes)
    assert float(below.max()) == pytest.approx(1.0, abs=1e-6) and float(below.max()) < 1.0
    with pytest.raises(ConfigError, match=f"use an epsilon below {limit:.4f}"):
        alpha_sparsities(scores, sparsity, min(1.0, limit * 1.01), sizes)


# ---------------------------------------------------------------------------------- parity
def per_block(values: list[float]) -> list[float]:
    return [sum(values[i : i + LINEARS]) / LINEARS for i in range(0, len(values), LINEARS)]


@pytest.mark.parametrize("estimator", ["xmin_peak", "xmin_mid"])
@pytest.mark.parametrize("epsilon", [0.2, 0.3])
def test_mapping_matches_the_authors_on_their_alphas(estimator, epsilon):
    tag = "peak" if estimator == "xmin_peak" else "mid"
    ratios = FIXTURE[f"ratios_alpha_{tag}_fp32_eps{epsilon}_block_wise"]
    scores = per_block(FIXTURE[f"alpha_{tag}_fp32"])
    expected = torch.tensor(ratios[::LINEARS], dtype=torch.float64)
    if float(expected.max()) >= 1.0:  # the authors give a block sparsity > 1 (70%, xmin_peak, 0.3): refused here
        with pytest.raises(ConfigError, match="sparsity of 1.0195"):
            alpha_sparsities(scores, 0.7, epsilon)
        return
    torch.testing.assert_close(alpha_sparsities(scores, 0.7, epsilon), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("epsilon", [0.2, 0.3])
def test_mapping_matches_the_authors_llama_7b(epsilon):
    # their shipped LLaMA-7B alphas (32 blocks of 7 linears; every block the same size)
    scores = per_block(FIXTURE["llama7b_alpha_peak"])
    expected = torch.tensor(FIXTURE[f"llama7b_ratios_eps{epsilon}"][::LINEARS], dtype=torch.float64)
    torch.testing.assert_close(alpha_sparsities(scores, 0.7, epsilon), expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def embedded_spectra():
    from transformers import AutoModelForCausalLM

    from dlp_lib.layers import decoder_blocks, linear_sublayers
    from dlp_lib.models import embedded_model_dir

    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()), dtype=torch.float32)
    blocks = [linear_sublayers(b) for b in decoder_blocks(model)]
    assert [f"{i}.{n}" for i, block in enumerate(blocks) for n in block] == FIXTURE["names"]
    return [eigenvalues(lin.weight) for block in blocks for lin in block.values()]


@pytest.mark.integration
@pytest.mark.parametrize("estimator", ["xmin_peak", "xmin_mid"])
def test_alphas_match_the_authors_on_the_embedded_model(embedded_spectra, estimator):
    tag = "peak" if estimator == "xmin_peak" else "mid"
    ours = torch.tensor([spectrum_alpha(eigs, estimator) for eigs in embedded_spectra], dtype=torch.float64)
    reference = torch.tensor(FIXTURE[f"alpha_{tag}_fp32"], dtype=torch.float64)
    torch.testing.assert_close(ours, reference, rtol=0, atol=5e-4)
