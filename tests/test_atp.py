"""ATP's linear ramp against the authors' main.py (tests/fixtures/parity/atp.json: their ratios for 30
blocks at 50% and 70% over search.sh's beta grid, and where their range check says "Illegal beta")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlp_lib.atp import atp_beta_grid, atp_densities
from dlp_lib.errors import ConfigError

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "parity" / "atp.json").read_text())
RUNS = FIXTURE["runs"]
LEGAL = [r for r in RUNS if not r["illegal"]]
ILLEGAL = [r for r in RUNS if r["illegal"]]


def run_id(run):
    return f"{run['sparsity']}-{run['beta_text']}"


def test_hand_computed_ramp_for_three_blocks():
    # s_l = s - beta (L - 1) / 2 + l beta: 0.5 - 0.1, 0.5, 0.5 + 0.1 -> densities 0.6, 0.5, 0.4
    assert atp_densities(3, 0.5, 0.1).tolist() == pytest.approx([0.6, 0.5, 0.4], abs=1e-15)


@pytest.mark.parametrize("run", LEGAL, ids=run_id)
def test_densities_are_the_authors_ratios(run):
    densities = atp_densities(FIXTURE["n_blocks"], run["sparsity"], run["beta"])
    expected = 1.0 - torch.tensor(run["sparsity_ratios"], dtype=torch.float64)
    assert torch.allclose(densities, expected, rtol=0, atol=1e-12)
    assert float(densities.mean()) == pytest.approx(1.0 - run["sparsity"], abs=1e-12)
    assert bool((densities[1:] < densities[:-1]).all())  # deeper blocks are sparser


@pytest.mark.parametrize("run", ILLEGAL, ids=run_id)
def test_a_beta_the_authors_call_illegal_is_refused(run):
    with pytest.raises(ConfigError, match="beta"):
        atp_densities(FIXTURE["n_blocks"], run["sparsity"], run["beta"])


def test_the_search_grid_is_the_authors_legal_betas():
    for sparsity in sorted({r["sparsity"] for r in RUNS}):
        legal = [r["beta"] for r in RUNS if r["sparsity"] == sparsity and not r["illegal"]]
        assert atp_beta_grid(FIXTURE["n_blocks"], sparsity) == pytest.approx(tuple(legal), abs=1e-12)
