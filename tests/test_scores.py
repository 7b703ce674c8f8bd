"""Per-weight scores (docs/methods.md: "Magnitude", "Wanda", "One template for OWL, DLP and DSA")."""

from __future__ import annotations

import pytest
import torch

from dlp_lib.allocation import dlp_unimportance, dsa_value, owl_outlier_ratio
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.scores import block_statistics, block_wanda_scores, magnitude_score, wanda_score


def test_magnitude_score_is_abs_fp32():
    w = torch.tensor([[1.5, -2.0], [0.0, -0.25]], dtype=torch.float16)
    score = magnitude_score(w)
    assert score.dtype == torch.float32
    assert score.tolist() == [[1.5, 2.0], [0.0, 0.25]]


def test_wanda_score_hand_case():
    w = torch.tensor([[1.0, -2.0], [-3.0, 4.0]])
    r = torch.tensor([4.0, 9.0])  # sqrt -> [2, 3], one factor per input column
    assert wanda_score(w, r).tolist() == [[2.0, 6.0], [6.0, 12.0]]


def test_wanda_score_fp16_weight_gives_fp32():
    w = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float16)
    r = torch.tensor([1.0, 0.25, 16.0])
    score = wanda_score(w, r)
    assert score.dtype == torch.float32
    assert score.tolist() == [[0.5, 0.5, 8.0]]


def _block(seed):
    g = torch.Generator().manual_seed(seed)
    weights = {
        "q": torch.randn(2, 3, generator=g),
        "k": torch.randn(1, 3, generator=g),
        "up": torch.randn(4, 2, generator=g),
    }
    norms = {"up": torch.rand(2, generator=g), "k": torch.rand(3, generator=g), "q": torch.rand(3, generator=g)}
    return weights, norms


def test_block_wanda_scores_concatenates_in_weight_order():
    weights, norms = _block(0)
    scores = block_wanda_scores(weights, norms)
    assert scores.shape == (6 + 3 + 8,)
    assert scores.dtype == torch.float32
    assert torch.equal(scores[:6], wanda_score(weights["q"], norms["q"]).flatten())
    assert torch.equal(scores[6:9], wanda_score(weights["k"], norms["k"]).flatten())
    assert torch.equal(scores[9:], wanda_score(weights["up"], norms["up"]).flatten())
    # reordering the weights reorders the concatenation (norms are looked up by name)
    reordered = {"up": weights["up"], "q": weights["q"], "k": weights["k"]}
    assert torch.equal(block_wanda_scores(reordered, norms)[:8], scores[9:])


@pytest.mark.parametrize(
    "allocation,kwargs",
    [
        ("owl", {"owl_m": 2.0}),
        ("owl", {"owl_m": 1.0}),
        ("dlp", {"dlp_statistic": "mean"}),
        ("dlp", {"dlp_statistic": "median"}),
        ("dsa", {"dsa_graph": "W:(ABS)-(MEAN)-(TANH)"}),
        ("uniform", {}),
    ],
)
def test_block_statistics_dispatch(allocation, kwargs):
    blocks = [_block(seed) for seed in range(3)]
    weights = [b[0] for b in blocks]
    norms = [b[1] for b in blocks]
    config = PruneConfig(allocation=allocation, **kwargs)
    values = block_statistics(weights, norms, config)
    assert len(values) == 3
    for value, (w, n) in zip(values, blocks):
        scores = block_wanda_scores(w, n)
        if allocation == "owl":
            expected = owl_outlier_ratio(scores, kwargs["owl_m"])
        elif allocation == "dlp":
            expected = dlp_unimportance(scores, kwargs["dlp_statistic"])
        elif allocation == "dsa":
            expected = dsa_value(scores, kwargs["dsa_graph"])
        else:
            expected = 0.0
        assert value == pytest.approx(expected, rel=1e-12, abs=0)
    if allocation != "uniform":
        assert len(set(values)) > 1  # the blocks differ, so must their statistics


def test_block_statistics_dsa_error_names_the_block():
    blocks = [_block(seed) for seed in range(3)]
    weights = [b[0] for b in blocks]
    norms = [b[1] for b in blocks]
    weights[1] = {name: torch.zeros_like(w) for name, w in weights[1].items()}  # mean score 0 -> log(0)
    config = PruneConfig(allocation="dsa", dsa_graph="W:()-(MEAN)-(LOG)")
    with pytest.raises(ConfigError, match="block 1"):
        block_statistics(weights, norms, config)
