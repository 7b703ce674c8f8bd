"""Layer-wise allocation (docs/methods.md#allocations): the OWL/DLP/DSA template, statistics, DSA graphs,
N:M per block."""

from __future__ import annotations

import math
import re
import statistics

import numpy as np
import pytest
import torch

from dlp_lib.allocation import (
    DSA_REDUCTION,
    affine_densities,
    allocate,
    dlp_unimportance,
    dsa_value,
    nm_per_block,
    owl_outlier_ratio,
    parse_dsa_graph,
)
from dlp_lib.config import ConfigError, PruneConfig

WIDTH_FIELD = {"owl": "owl_lambda", "dlp": "dlp_alpha", "dsa": "dsa_lambda"}


def _stat(n=32, seed=0, low=0.5, high=3.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=n)


def _weighted_mean(d, w):
    d, w = np.asarray(d, dtype=np.float64), np.asarray(w, dtype=np.float64)
    return float((d * w).sum() / w.sum())


# ------------------------------------------------------------------------------ reference formulas (spec §3.1-3.3)
def _ref_owl(x, s, lam):
    D = np.asarray(x, dtype=np.float64)
    D = (D - D.min()) / (D.max() - D.min()) * (2 * lam)
    return D - D.mean() + (1 - s)


def _ref_dlp(x, s, alpha):
    x = np.asarray(x, dtype=np.float64)
    imp = 1 - x / x.sum()
    imp = (imp - imp.min()) / (imp.max() - imp.min()) * (2 * alpha)
    return imp - imp.mean() + (1 - s)


def _ref_dsa(v, s, lam):
    v = np.asarray(v, dtype=np.float64)
    v = (v - v.min()) / (v.max() - v.min())
    v = 1 - v
    v = (v - v.min()) / (v.max() - v.min()) * (2 * lam)
    return v - v.mean() + (1 - s)


# ------------------------------------------------------------------------------ the template
@pytest.mark.parametrize("direction", [+1.0, -1.0])
@pytest.mark.parametrize("s,width", [(0.7, 0.08), (0.5, 0.15), (0.3, 0.2)])
def test_affine_densities_mean_and_range(direction, s, width):
    d = affine_densities(_stat(seed=int(s * 10)), s, width, direction)
    assert d.dtype == torch.float64
    assert float(d.mean()) == pytest.approx(1 - s, abs=1e-14)
    assert float(d.max() - d.min()) == pytest.approx(2 * width, abs=1e-14)


def test_owl_and_dlp_move_in_opposite_directions():
    x = _stat(seed=1)
    owl = affine_densities(x, 0.7, 0.1, +1.0).numpy()
    dlp = affine_densities(x, 0.7, 0.1, -1.0).numpy()
    assert owl.argmax() == x.argmax() and owl.argmin() == x.argmin()  # more outliers -> denser
    assert dlp.argmax() == x.argmin() and dlp.argmin() == x.argmax()  # larger statistic -> sparser
    np.testing.assert_allclose(owl - 0.3, -(dlp - 0.3), atol=1e-15)
    order = np.argsort(x)
    assert (np.diff(owl[order]) > 0).all() and (np.diff(dlp[order]) < 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_equals_reference_step_by_step(seed):
    x = _stat(n=32, seed=seed, low=0.01, high=10.0)
    s = 0.7
    np.testing.assert_allclose(affine_densities(x, s, 0.08, +1.0).numpy(), _ref_owl(x, s, 0.08), rtol=0, atol=1e-12)
    np.testing.assert_allclose(affine_densities(x, s, 0.15, -1.0).numpy(), _ref_dlp(x, s, 0.15), rtol=0, atol=1e-12)
    np.testing.assert_allclose(affine_densities(x, s, 0.08, -1.0).numpy(), _ref_dsa(x, s, 0.08), rtol=0, atol=1e-12)
    # and through allocate() with the config's widths
    for allocation, ref, width in (("owl", _ref_owl, 0.08), ("dlp", _ref_dlp, 0.15), ("dsa", _ref_dsa, 0.08)):
        config = PruneConfig(allocation=allocation, sparsity=s, **{WIDTH_FIELD[allocation]: width})
        np.testing.assert_allclose(allocate(list(x), config).numpy(), ref(x, s, width), rtol=0, atol=1e-12)


@pytest.mark.parametrize("allocation", ["owl", "dlp", "dsa"])
def test_weighted_mean_is_target_density_with_unequal_blocks(allocation):
    x = _stat(n=12, seed=3)
    weights = np.random.default_rng(4).integers(1_000, 50_000, size=12)
    config = PruneConfig(allocation=allocation, sparsity=0.6, **{WIDTH_FIELD[allocation]: 0.1})
    d = allocate(x, config, weights=weights).numpy()
    assert _weighted_mean(d, weights) == pytest.approx(0.4, abs=1e-14)
    assert d.max() - d.min() == pytest.approx(0.2, abs=1e-14)
    assert abs(d.mean() - 0.4) > 1e-6  # the plain mean is not what is matched


@pytest.mark.parametrize("allocation", ["uniform", "owl", "dlp", "dsa"])
def test_all_equal_statistic_gives_uniform(allocation):
    config = PruneConfig(allocation=allocation, sparsity=0.7)
    d = allocate([2.5] * 8, config)
    assert d.tolist() == pytest.approx([0.3] * 8, abs=1e-15)


def test_uniform_ignores_the_statistic():
    d = allocate([1.0, 5.0, 3.0], PruneConfig(allocation="uniform", sparsity=0.4))
    assert d.tolist() == pytest.approx([0.6, 0.6, 0.6], abs=1e-15)


def _exact_largest_width(x, s, direction, weights=None):
    x = np.asarray(x, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    z = direction * (x - _weighted_mean(x, w)) / (x.max() - x.min())
    # d = (1-s) + 2 * width * z must stay in (0, 1]
    return min(s / (2 * z.max()), (1 - s) / (2 * -z.min()))


@pytest.mark.parametrize("allocation", ["owl", "dlp", "dsa"])
@pytest.mark.parametrize("s", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("weighted", [False, True])
def test_allocate_refuses_too_large_width_and_names_the_limit(allocation, s, weighted):
    x = _stat(n=16, seed=5) ** 3  # skewed, so the upper and lower limits differ
    weights = np.random.default_rng(6).integers(1, 100, size=16) if weighted else None
    direction = +1.0 if allocation == "owl" else -1.0
    limit = _exact_largest_width(x, s, direction, weights)
    field = WIDTH_FIELD[allocation]

    with pytest.raises(ConfigError) as info:
        allocate(x, PruneConfig(allocation=allocation, sparsity=s, **{field: limit * 1.001}), weights=weights)
    message = str(info.value)
    assert field in message
    found = re.search(r"largest allowed value at sparsity \S+ is ([0-9.]+)", message)
    assert found, message
    assert float(found.group(1)) == pytest.approx(limit, abs=5.1e-5)

    d = allocate(x, PruneConfig(allocation=allocation, sparsity=s, **{field: limit * 0.999}), weights=weights)
    assert float(d.min()) > 0 and float(d.max()) <= 1.0
    assert _weighted_mean(d, np.ones(16) if weights is None else weights) == pytest.approx(1 - s, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("allocation,width,s", [("owl", 0.5, 0.7), ("dlp", 0.45, 0.5), ("dsa", 0.9, 0.8)])
def test_clip_densities_stays_in_range_and_keeps_weighted_mean(seed, allocation, width, s):
    x = _stat(n=20, seed=seed) ** 2
    weights = np.random.default_rng(seed + 100).integers(1, 20, size=20)
    config = PruneConfig(allocation=allocation, sparsity=s, clip_densities=True, **{WIDTH_FIELD[allocation]: width})
    with pytest.raises(ConfigError):  # the same width is refused without clipping
        allocate(x, PruneConfig(allocation=allocation, sparsity=s, **{WIDTH_FIELD[allocation]: width}), weights)
    d = allocate(x, config, weights=weights).numpy()
    assert d.min() >= 0.01 - 1e-12 and d.max() <= 1.0 + 1e-12
    assert _weighted_mean(d, weights) == pytest.approx(1 - s, abs=1e-9)
    # clipping keeps the direction of the allocation (weakly)
    denser_first = np.argsort(-x if allocation == "owl" else x, kind="stable")
    assert (np.diff(d[denser_first]) <= 1e-12).all()


# ------------------------------------------------------------------------------ block statistics
def test_owl_outlier_ratio_hand_cases():
    scores = torch.tensor([1.0] * 9 + [11.0])  # mean 2
    assert owl_outlier_ratio(scores, 5.0) == pytest.approx(10.0)  # 11 > 10: 1 of 10 -> 10 %
    assert owl_outlier_ratio(scores, 5.5) == 0.0  # 11 > 11 is false (strict)
    assert owl_outlier_ratio(scores, 0.4) == pytest.approx(100.0)  # everything > 0.8
    assert owl_outlier_ratio(torch.tensor([0.0, 0.0, 0.0, 4.0]), 3.0) == pytest.approx(25.0)


def test_dlp_unimportance_hand_cases():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    assert dlp_unimportance(scores, "mean") == pytest.approx(22.0)
    assert dlp_unimportance(scores, "median") == pytest.approx(3.0)
    negative = torch.tensor([-5.0, -1.0, -3.0])
    assert dlp_unimportance(negative, "mean") == pytest.approx(3.0)  # absolute value
    assert dlp_unimportance(negative, "median") == pytest.approx(3.0)


# ------------------------------------------------------------------------------ DSA graphs (spec §3.3)
def test_parse_dsa_graph_readme_string():
    assert parse_dsa_graph("W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)") == (["ABSLOG"], ["VAR"], ["ATAN", "ASIN"])
    assert parse_dsa_graph("W:(ABSLOG)-(VAR)-(ATAN,ASIN)") == (["ABSLOG"], ["VAR"], ["ATAN", "ASIN"])
    assert parse_dsa_graph("W:(ABS,POW)-(MEAN)-()") == (["ABS", "POW"], ["MEAN"], [])


def test_dsa_value_readme_graph_on_small_vector():
    scores = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.0])
    before = scores.clone()
    # ABSLOG: an exact 0 counts as 1 -> log 1 = 0; VAR is unbiased (n - 1)
    logs = [math.log(0.5), 0.0, math.log(2.0), math.log(4.0), 0.0]
    expected = math.asin(math.atan(statistics.variance(logs)))
    assert dsa_value(scores, "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)") == pytest.approx(expected, rel=1e-12)
    assert torch.equal(scores, before)  # the caller's scores are not modified in place


def test_dsa_value_without_reduction_takes_the_mean():
    scores = torch.tensor([1.0, 2.0, 6.0])
    assert dsa_value(scores, "W:(POW)-()-()") == pytest.approx((1 + 4 + 36) / 3, rel=1e-12)


@pytest.mark.parametrize(
    "scores,graph",
    [
        (torch.tensor([1e-10, 1.0, 1e10]), "W:(ABSLOG)-(VAR)-(ATAN,ASIN)"),  # var > tan(1): asin domain -> NaN
        (torch.tensor([1000.0, 999.0]), "W:(EXP)-(MEAN)-()"),  # inf
        (torch.tensor([800.0]), "W:()-(MEAN)-(EXP)"),  # overflow in the scalar transform
        (torch.tensor([0.0, 0.0]), "W:()-(MEAN)-(LOG)"),  # log(0)
    ],
)
def test_dsa_value_not_finite_raises_naming_the_block(scores, graph):
    with pytest.raises(ConfigError, match="block 3"):
        dsa_value(scores, graph, block=3)


@pytest.mark.parametrize(
    "graph,needle",
    [
        ("W:(FOO)-(VAR)-(ATAN)", "FOO"),  # unknown op
        ("W:(ABS)-(VAR)-(BAR)", "BAR"),
        ("W:(VAR)-(ABS)-(ATAN)", "VAR"),  # ops in the wrong field
        ("W:(ABS)-(VAR)-(9)", "9"),  # DSA's own wanda_owl_var string: '9' is no transform
        ("W:(ABS)-(GRAM)-(ATAN)", "GRAM"),  # matrix-only reductions
        ("W:(ABS)-(DETERMINANT)-(ATAN)", "DETERMINANT"),
        ("W:(ABS)-(SLOGDET)-()", "SLOGDET"),
    ],
)
def test_parse_dsa_graph_refuses_bad_ops(graph, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_dsa_graph(graph)


@pytest.mark.parametrize(
    "graph",
    ["W:(ABS)-(VAR)", "(ABS)-(VAR)-(ATAN)", "X:(ABS)-(VAR)-(ATAN)", "W:(ABS)-(VAR)-(ATAN)-(7)-(8)", "", "W:"],
)
def test_parse_dsa_graph_refuses_malformed_strings(graph):
    with pytest.raises(ConfigError):
        parse_dsa_graph(graph)


@pytest.mark.parametrize(
    "graph,where",
    [
        ("W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(", "expected a number or ')' at character 31, found the end"),
        ("W:(SIGMOID)junk(MEAN)junk()-(banana", "expected '-' or the end at character 12, found 'j'"),
        ("W:(ABS,,POW)-(MEAN)-()", "expected an op name at character 8, found ','"),
        ("W:(ABS)-(MEAN)-() ", "at character 18, found ' '"),
        ("W:(ABS)-(MEAN)-(X Y)", "expected ',' or ')' at character 19, found 'Y'"),
        ("W:(ABS)-(MEAN)-(ATAN)-(x)", "at character 24, found 'x'"),
        ("W:(ABS)-(VAR)-(ATAN)-(7)-(8)", "expected the end at character 25, found '-'"),
        ("W:(ABS)(VAR)(ATAN)", "expected '-' or the end at character 8, found '('"),
        ("W:(ABS)-(VAR)-(ATAN", "at character 20, found the end"),
        ("w:(ABS)-(VAR)-(ATAN)", "expected 'W:' at character 1, found 'w'"),
    ],
)
def test_parse_dsa_graph_reads_the_whole_string_and_points_at_the_fault(graph, where):
    """Nothing outside the grammar is skipped: the old reader kept the (...) groups and ignored the rest."""
    with pytest.raises(ConfigError, match=re.escape(where)):
        parse_dsa_graph(graph)


def test_parse_dsa_graph_allows_spaces_inside_fields_and_an_empty_transform():
    assert parse_dsa_graph("W:( abs , pow )-( mean )-( )") == (["ABS", "POW"], ["MEAN"], [])
    assert parse_dsa_graph("W:(SIGMOID,SIGMOID)-(MEAN)-()-( 7 )") == (["SIGMOID", "SIGMOID"], ["MEAN"], [])
    with pytest.raises(ConfigError, match="a DSA expression is a string"):
        parse_dsa_graph(None)


# ------------------------------------------------------------------------------ N:M per block
def test_nm_per_block_hand_cases():
    assert nm_per_block([0.75, 0.5, 0.25], 2, 4) == [1, 2, 3]
    # ideal 8*(1-d) = [0.8, 4, 4, 7.2] (mean 4), clamped to [0, 7] -> floor [0, 4, 4, 7], one unit left
    # for the largest remainder (block 0)
    assert nm_per_block([0.9, 0.5, 0.5, 0.1], 4, 8) == [1, 4, 4, 7]
    assert nm_per_block([0.3] * 5, 5, 8) == [5] * 5


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 4), (4, 8), (5, 8), (2, 8), (7, 8)])
@pytest.mark.parametrize("seed", range(6))
def test_nm_per_block_properties(n, m, seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 40))
    spread = [0.05, 0.2, 0.5, 1.0, 3.0, 10.0][seed]
    densities = np.clip(0.5 + spread * rng.standard_normal(size), 0.0, 1.0)
    zeros = nm_per_block(densities, n, m)
    assert len(zeros) == size
    assert all(isinstance(z, int) and 0 <= z <= m - 1 for z in zeros)
    assert sum(zeros) == n * size  # average exactly N
    for i in range(size):
        for j in range(size):
            if densities[i] > densities[j]:
                assert zeros[i] <= zeros[j], (densities[i], densities[j], zeros[i], zeros[j])


def test_nm_per_block_denser_block_never_gets_more_zeros_after_clamping():
    densities = [0.001, 0.66, 1.0, 1.0, 0.015]
    # ideal 4*(1-d) shifted to mean 1 = [3.14, 0.50, -0.86, -0.86, 3.08] -> clamped [3, 0.5, 0, 0, 3];
    # one unit too many: it must come off block 4 (denser than block 0), not block 0.
    zeros = nm_per_block(densities, 1, 4)
    assert sum(zeros) == 5
    assert zeros[0] >= zeros[4]


@pytest.mark.parametrize("x,s,width", [([0.0, 0.0, 1.0], 0.5, 1.0), ([0.0, 1.0], 0.5, 0.6)])
def test_clip_densities_keeps_mean_when_every_block_is_clipped(x, s, width):
    config = PruneConfig(allocation="owl", sparsity=s, owl_lambda=width, clip_densities=True)
    d = allocate(x, config).numpy()
    assert d.min() >= 0.01 - 1e-12 and d.max() <= 1.0 + 1e-12
    assert d.mean() == pytest.approx(1 - s, abs=1e-9)  # feasible, e.g. [0.25, 0.25, 1] and [0.01, 0.99]


# ------------------------------------------------------------------------------ GEOMETRIC_MEAN
def test_geometric_mean_in_log_space_where_the_product_underflows():
    """The reference's prod(x) ** (1/n) is 0 for a block of a million scores of 0.01 (the op was the uniform
    allocation in disguise); in log space it is 0.01, and equal to the reference where the product is finite."""
    gm = DSA_REDUCTION["GEOMETRIC_MEAN"]
    short = torch.tensor([1.0, 2.0, 4.0, 0.5], dtype=torch.float64)
    assert gm(short).item() == pytest.approx((torch.prod(short) ** 0.25).item(), rel=1e-12)
    block = torch.full((10**6,), 0.01, dtype=torch.float64)
    assert (torch.prod(block) ** 1e-6).item() == 0.0 and gm(block).item() == pytest.approx(0.01, rel=1e-9)
    assert gm(torch.tensor([3.0, 0.0, 5.0], dtype=torch.float64)).item() == 0.0
    assert gm(torch.tensor([-1.0, -4.0], dtype=torch.float64)).item() == pytest.approx(2.0)
    assert math.isnan(gm(torch.tensor([-1.0, 4.0], dtype=torch.float64)).item())  # no real root, as the reference
    # so expressions with it now tell blocks apart: two blocks whose scores differ in scale get different values
    small, large = torch.full((10**5,), 1e-3), torch.full((10**5,), 1e-2)
    assert dsa_value(small, "W:()-(GEOMETRIC_MEAN)-()") != dsa_value(large, "W:()-(GEOMETRIC_MEAN)-()")
