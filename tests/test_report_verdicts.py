"""What the notebooks say about each point, from hand-computed cases: zero-shot standard errors, the bold rule
on accuracies, cells below chance, hyper-parameter values and sweep points against their reference beyond the
tolerance, and how many blocks an N:M allocation moves."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dlp_lib import reports
from dlp_lib.reports.zero_shot import _leads_beyond_se


def test_the_mean_over_tasks_has_the_root_sum_of_squares_error():
    # two tasks with standard errors 0.03 and 0.04: sqrt(0.0009 + 0.0016) / 2 = 0.025
    assert reports.mean_standard_error([0.03, 0.04]) == pytest.approx(0.025)
    # seven tasks of 100 examples at p = 0.5: 0.05 / sqrt(7) = 0.0189, the "about 2 points" of the quick profile
    assert reports.mean_standard_error([0.05] * 7) == pytest.approx(0.05 / math.sqrt(7))


def _summary(rows):
    return pd.DataFrame(
        [dict(method="wanda", allocation=a, mean=m, mean_acc_se=se) for a, m, se in rows], index=range(len(rows))
    )


def test_the_best_accuracy_is_bold_only_beyond_twice_the_error_of_the_difference():
    # gap 0.06 against 2 * sqrt(0.02^2 + 0.02^2) = 0.0566: beyond
    assert _leads_beyond_se(_summary([("uniform", 0.30, 0.02), ("dlp", 0.36, 0.02)])).tolist() == [False, True]
    # gap 0.05: within
    assert _leads_beyond_se(_summary([("uniform", 0.30, 0.02), ("dlp", 0.35, 0.02)])).tolist() == [False, False]


def test_cells_more_than_two_errors_below_chance_are_listed():
    numbers = pd.DataFrame(
        [
            # BoolQ 0.32 +- 0.047: 0.5 - 0.094 = 0.406 > 0.32, below; ARC-c 0.23 +- 0.042: 0.166 < 0.23, not
            dict(
                method="dense",
                allocation="none",
                boolq=0.32,
                boolq_se=0.047,
                arc_challenge=0.23,
                arc_challenge_se=0.042,
            ),  # fmt: skip
        ]
    )
    assert reports.below_chance(numbers, ["boolq", "arc_challenge"]) == [("dense", "none", "boolq", 0.32, 0.047)]


def test_hyper_parameter_values_against_the_default_beyond_the_tolerance():
    table = pd.DataFrame(
        [
            dict(parameter="dlp_alpha", value=0.05, perplexity=437.6, tolerance_pct=31.0),
            dict(parameter="dlp_alpha", value=0.15, perplexity=346.8, tolerance_pct=31.0),
            dict(parameter="dlp_alpha", value=0.20, perplexity=300.0, tolerance_pct=31.0),
            dict(parameter="dlp_alpha", value=0.0, perplexity=float("nan"), tolerance_pct=float("nan")),
            dict(parameter="owl_m", value=7.0, perplexity=500.0, tolerance_pct=31.0),  # no default run: no verdict
        ]
    )
    # 437.6 / 346.8 = 1.262 < 1.31: within; 300 / 346.8 = 0.865 > 1 / 1.31: within
    verdicts = reports.against_default(table, {"dlp_alpha": 0.15, "owl_m": 5.0})
    assert verdicts.tolist() == ["within tolerance", "default", "within tolerance", "", ""]
    table.loc[0, "perplexity"] = 460.0  # 460 / 346.8 = 1.326 > 1.31
    assert reports.against_default(table, {"dlp_alpha": 0.15, "owl_m": 5.0})[0] == "higher beyond tolerance"


def test_sweep_points_against_uniform_at_the_same_sparsity():
    sweep = pd.DataFrame(
        [
            dict(method="wanda", sparsity=0.8, allocation="uniform", perplexity=4000.0, tolerance_pct=50.0),
            dict(method="wanda", sparsity=0.8, allocation="dlp", perplexity=2000.0, tolerance_pct=40.0),
            dict(method="wanda", sparsity=0.8, allocation="owl", perplexity=3000.0, tolerance_pct=40.0),
        ]
    )
    out = reports.against_uniform(sweep)
    assert out["allocation"].tolist() == ["dlp", "owl"]
    assert out["ratio_pct"].tolist() == pytest.approx([-50.0, -25.0])
    # the larger tolerance is Uniform's 50%: ln 2 > ln 1.5 beyond, ln(4/3) < ln 1.5 within
    assert out["verdict"].tolist() == ["lower beyond tolerance", "within tolerance"]


def test_nm_rows_count_the_blocks_each_allocation_moves():
    def record(allocation, block_nm):
        prune = dict(method="wanda", sparsity=0.5, sparsity_type="2:4", allocation=allocation)
        return {
            "config": {"model": "m", "prune": prune, "seed": 0, "nsamples": 8, "seqlen": 256},
            "allocation": {"block_nm": block_nm} if block_nm else None,
            "pruning": {"achieved_sparsity": 0.5},
            "perplexity": {"perplexity": 100.0},
            "timings": {"prune": 1.0},
        }

    table = reports.nm_table([record("uniform", None), record("dlp", [[1, 4], [2, 4], [2, 4], [3, 4]])])
    assert table["blocks_moved"].tolist() == [0, 2]
    assert table["block_n_counts"].tolist() == ["uniform", "1: 1, 2: 2, 3: 1"]
    assert table["block_n_range"].tolist() == ["uniform", "1–3"]
