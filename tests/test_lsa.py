"""LSA (dlp_lib.lsa): the greedy error by hand and by brute force, the allocation's properties, and parity
with the authors' code.

Parity (tests/fixtures/parity/lsa.json, see tests/fixtures/parity/README.md): the authors' layersp/blk.py
on the embedded SmolLM2-135M with the 16 calibration windows gave every linear's error, every block's
statistic and the sparsities at 70% (their beta 0.15). dlp_lib's Hessians sum the same products in
another order, so a greedy near-tie can go the other way: errors agree to 1e-4 relative (3.5e-5 is the
largest gap over all 210 linears); the mapping, fed their statistics, agrees to 1e-6 (they compute in
float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlp_lib.allocation import allocate
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.lsa import LSA_BETAS, lsa_block_statistic, lsa_default_beta, lsa_error

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "parity"
FIXTURE = json.loads((FIXTURE_DIR / "lsa.json").read_text())


def test_hand_computed_error():
    # one row w = (1, 2, 3, 4), H = identity plus H_01 = H_10 = 0.5; remove 2 of the group of 4:
    # first the smallest w_j^2 H_jj: column 0 (cost 1); then column 1 costs 4 + 2*2*1*0.5 = 6, columns
    # 2, 3 cost 9, 16: column 1. Total 1 + 6 = 7 = e^T H e with e = (1, 2, 0, 0).
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    h = torch.eye(4)
    h[0, 1] = h[1, 0] = 0.5
    assert lsa_error(w, h, group=4, fraction=0.5) == pytest.approx(7.0)
    # a negative cross term makes the second weight cheaper than its own square: w = (1, -2, ...)
    w2 = torch.tensor([[1.0, -2.0, 3.0, 4.0]])
    assert lsa_error(w2, h, group=4, fraction=0.5) == pytest.approx(1.0 + 4.0 - 2.0)


def test_greedy_error_is_a_quadratic_form_over_groups():
    # two groups of 3, one weight removed from each: the second group's cost includes the cross term
    # with the first group's removal; the total equals e^T H e of the removed weights
    torch.manual_seed(1)
    x = torch.randn(50, 6)
    h = x.T @ x / 50
    w = torch.randn(4, 6)
    total = 0.0
    for row in w:
        removed = []
        for start in (0, 3):
            costs = {}
            for j in range(start, start + 3):
                e = torch.zeros(6)
                for i in removed + [j]:
                    e[i] = row[i]
                costs[j] = float(e @ h @ e)
            removed.append(min(costs, key=costs.get))
        e = torch.zeros(6)
        e[removed] = row[removed]
        total += float(e @ h @ e)
    assert lsa_error(w, h, group=3, fraction=0.34) == pytest.approx(total, rel=1e-5)


def test_bad_settings_refused():
    with pytest.raises(ConfigError, match="lsa_group must be a positive whole number"):
        lsa_error(torch.ones(2, 4), torch.eye(4), group=0)
    with pytest.raises(ConfigError, match="remove at least one"):
        lsa_error(torch.ones(2, 4), torch.eye(4), group=4, fraction=0.1)
    with pytest.raises(ConfigError, match="last group of a 6-column weight has 2 columns"):
        lsa_error(torch.ones(2, 6), torch.eye(6), group=4, fraction=0.75)
    with pytest.raises(ConfigError, match="no beta at sparsity 0.9"):
        lsa_default_beta(0.95)
    with pytest.raises(ConfigError, match="no beta at sparsity 0.9"):
        PruneConfig("wanda", 0.9, allocation="lsa")
    PruneConfig("wanda", 0.9, allocation="lsa", lsa_beta=0.02)  # an explicit width needs no table


def test_default_beta_follows_the_authors_table():
    assert [lsa_default_beta(s) for s in (0.05, 0.5, 0.6, 0.7, 0.75, 0.8)] == [0.08, 0.04, 0.10, 0.15, 0.15, 0.12]
    assert PruneConfig("wanda", 0.7, allocation="lsa").width == LSA_BETAS[7]
    assert PruneConfig("wanda", 0.7, allocation="lsa", lsa_beta=0.05).width == 0.05


def test_mapping_matches_the_authors():
    config = PruneConfig("wanda", FIXTURE["sparsity"], allocation="lsa")
    assert config.width == FIXTURE["alpha"]
    densities = allocate(FIXTURE["block_statistic"], config)
    expected = 1.0 - torch.tensor(FIXTURE["ratios"], dtype=torch.float64)
    torch.testing.assert_close(densities, expected, rtol=0, atol=1e-6)
    # larger error -> sparser; the mean is the target; the range is 2 beta
    order = torch.tensor(FIXTURE["block_statistic"]).argsort()
    assert torch.all(densities[order].diff() <= 0)
    assert float(densities.mean()) == pytest.approx(0.3, abs=1e-12)
    assert float(densities.max() - densities.min()) == pytest.approx(0.3, abs=1e-12)


def test_block_statistic_is_the_magnitude_of_the_mean():
    for errors, statistic in zip(FIXTURE["per_linear_error"][:5], FIXTURE["block_statistic"]):
        assert lsa_block_statistic(dict(zip(FIXTURE["linear_order"], errors))) == pytest.approx(statistic, rel=1e-6)
    assert lsa_block_statistic({"a": -3.0, "b": 1.0}) == 1.0


@pytest.mark.integration
def test_block_zero_errors_match_the_authors():
    from transformers import AutoModelForCausalLM

    from dlp_lib.layers import capture_block_inputs, decoder_blocks, linear_sublayers
    from dlp_lib.models import embedded_model_dir
    from dlp_lib.prune import _run_with_statistics
    from dlp_lib.stats import Hessian

    windows = json.loads((FIXTURE_DIR / "windows.json").read_text())["calibration"]
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()), dtype=torch.float32)
    block = decoder_blocks(model)[0]
    linears = linear_sublayers(block)
    assert list(linears) == FIXTURE["linear_order"]
    with torch.no_grad():
        inputs = capture_block_inputs(model, torch.tensor(windows), batch_size=8)
        stats, _ = _run_with_statistics(block, inputs, linears, Hessian, keep_outputs=False)
    ours = [lsa_error(linear.weight, stats[name].matrix) for name, linear in linears.items()]
    torch.testing.assert_close(
        torch.tensor(ours, dtype=torch.float64),
        torch.tensor(FIXTURE["per_linear_error"][0], dtype=torch.float64),
        rtol=1e-4,
        atol=0,
    )


@pytest.fixture
def c_loop():
    from dlp_lib.lsa import compiled_greedy

    if compiled_greedy() is None:
        pytest.skip("no C compiler: LSA's C loop cannot be built")


@pytest.mark.parametrize("shape, group", [((37, 72), 16), ((5, 64), 64), ((200, 320), 128)])
def test_c_loop_gives_the_torch_loops_bits(c_loop, shape, group):
    # random weights and a correlated Hessian; ties (repeated weights and zeros) and a last, narrower group
    generator = torch.Generator().manual_seed(shape[0])
    w = torch.randn(shape, generator=generator)
    w[:, ::7] = 0.0
    w[0] = 1.0  # a row of equal costs under a diagonal-heavy Hessian: first-of-equals decides
    x = torch.randn(3 * shape[1], shape[1], generator=generator)
    h = x.T @ x / x.shape[0] + torch.eye(shape[1])
    a = lsa_error(w, h, group=group, fraction=0.5, loop="torch")
    b = lsa_error(w, h, group=group, fraction=0.5)
    assert torch.tensor(a).view(torch.int32) == torch.tensor(b).view(torch.int32)
    h[1, 2] = h[2, 1] = float("nan")  # a NaN counts as least in both loops
    assert str(lsa_error(w, h, 16, 0.5, "torch")) == str(lsa_error(w, h, 16, 0.5))


def test_without_a_c_compiler_the_torch_loop_runs(monkeypatch, tmp_path, caplog):
    from dlp_lib.lsa import compiled_greedy

    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path))
    w, h = torch.randn(8, 32), torch.eye(32)
    expected = lsa_error(w, h, group=16, loop="torch")
    try:
        for cc in (str(tmp_path / "no-such-cc"), "false"):
            compiled_greedy.cache_clear()
            monkeypatch.setenv("CC", cc)
            caplog.clear()
            with caplog.at_level("WARNING", logger="dlp_lib.lsa"):
                assert lsa_error(w, h, group=16) == expected
            assert "using the PyTorch loop" in caplog.text
        assert not list((tmp_path / "kernels").glob("*")), "a failed build leaves no library behind"
        with pytest.raises(ConfigError, match="loop must be"):
            lsa_error(w, h, group=16, loop="c")
    finally:
        compiled_greedy.cache_clear()
