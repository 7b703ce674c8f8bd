"""Perplexity over fixed windows (docs/methods.md#perplexity): exp of the mean over windows of each window's
mean next-token cross-entropy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib.evaluation import perplexity


def _windows(n=7, tokens=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (n, tokens), generator=g)


def _by_hand(model, windows) -> float:
    losses = []
    with torch.no_grad():
        for window in windows:
            logits = model(input_ids=window.unsqueeze(0)).logits[0].double()
            log_probs = logits[:-1] - torch.logsumexp(logits[:-1], dim=-1, keepdim=True)
            nll = -log_probs.gather(1, window[1:].unsqueeze(1)).squeeze(1)
            losses.append(nll.mean().item())
    return math.exp(sum(losses) / len(losses))


def test_perplexity_matches_hand_computation(tiny_model):
    windows = _windows()
    result = perplexity(tiny_model, windows, batch_size=2, progress=False)
    assert result["perplexity"] == pytest.approx(_by_hand(tiny_model, windows), rel=1e-5)
    assert result["windows"] == 7
    assert result["tokens"] == 7 * 16
    # a random model is close to uniform, but not exactly: the comparison is not vacuous
    assert abs(result["perplexity"] - 128) > 1e-3


def test_perplexity_is_mean_of_window_losses_not_of_tokens_across_windows():
    """With windows of equal length the two coincide; check the per-window form on two subsets."""
    model = make_tiny_model("llama")
    windows = _windows(n=4)
    single = [math.log(perplexity(model, w.unsqueeze(0), progress=False)["perplexity"]) for w in windows]
    whole = perplexity(model, windows, batch_size=4, progress=False)["perplexity"]
    assert whole == pytest.approx(math.exp(sum(single) / len(single)), rel=1e-6)
    assert len({round(v, 6) for v in single}) == 4  # the windows really differ


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_batch_size_does_not_change_perplexity(arch):
    model = make_tiny_model(arch)
    windows = _windows(n=7)
    one = perplexity(model, windows, batch_size=1, progress=False)
    three = perplexity(model, windows, batch_size=3, progress=False)  # batches of 3, 3, 1
    assert one["windows"] == three["windows"] == 7
    assert three["perplexity"] == pytest.approx(one["perplexity"], rel=1e-6)


def test_uniform_logits_give_vocabulary_size():
    model = make_tiny_model("llama", vocab_size=96)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    result = perplexity(model, _windows(n=3) % 96, batch_size=2, progress=False)
    assert result["perplexity"] == pytest.approx(96, rel=1e-6)


class _UniformModel(torch.nn.Module):
    """Returns all-zero logits over ``vocab`` tokens, whatever the input."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.embed = torch.nn.Embedding(vocab, 4)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, use_cache=False, logits_to_keep=None):
        positions = input_ids.shape[1] if logits_to_keep is None else len(logits_to_keep)
        return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], positions, self.vocab))


@pytest.mark.parametrize("vocab", [50, 1000])
def test_uniform_wrapper_gives_vocabulary_size(vocab):
    windows = torch.randint(0, vocab, (5, 9), generator=torch.Generator().manual_seed(1))
    result = perplexity(_UniformModel(vocab), windows, batch_size=2, progress=False)
    assert result["perplexity"] == pytest.approx(vocab, rel=1e-6)  # fp32 loss
    assert result["windows"] == 5 and result["tokens"] == 45


def test_perfect_predictor_gives_one():
    """A model that puts all mass on the true next token (here: the sequence is constant) -> ppl 1."""

    class Constant(_UniformModel):
        def forward(self, input_ids, use_cache=False, logits_to_keep=None):
            positions = input_ids.shape[1] if logits_to_keep is None else len(logits_to_keep)
            logits = torch.full((input_ids.shape[0], positions, self.vocab), -1e4)
            logits[..., 3] = 1e4
            return SimpleNamespace(logits=logits)

    windows = torch.full((2, 8), 3)
    assert perplexity(Constant(10), windows, progress=False)["perplexity"] == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_window_losses_match_cross_entropy_across_chunks(dtype):
    """3 windows x 199 predicted positions = 597 rows: three chunks of the chunked loss."""
    import torch.nn.functional as F

    from dlp_lib.evaluation import _window_losses

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1000, (3, 200), generator=g)
    logits = (4 * torch.randn(3, 199, 1000, generator=g)).to(dtype)
    expected = F.cross_entropy(logits.double().reshape(-1, 1000), ids[:, 1:].reshape(-1), reduction="none")
    got = _window_losses(logits, ids)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert torch.allclose(got.double(), expected.view(3, -1).mean(dim=1), rtol=1e-6, atol=0)
