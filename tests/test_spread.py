"""Noise in the numbers (dlp_lib.spread) and the reproduction check (dlp_lib.reproduction): seed
summaries, the bold rule, seed-by-seed orderings, the float-sensitivity tolerance and the cell-by-cell
comparison of fresh and committed tables, on hand-made numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlp_lib import reproduction, spread

ROOT = Path(__file__).resolve().parents[1]
# cells one of two committed runs may lack: float-sensitivity draws one side made, the OWL sweep the quick
# profile dropped and took back, EvoPress's rows and the newer allocations' rows (added later), the third
# seed no row runs any more, DSA's second seed (the searched and newer rows run seed 0 only), and the points
# notebooks 04-06 added (Wanda at 50%, four values of each
# hyper-parameter, 4:8)
NOT_IN_EARLIER_RUNS = (
    "float_sensitivity:|sparsity_sweep: method=\\w+, allocation=owl|allocation=(?:evopress|alphapruning|atp|lsa)"
    "|, seed=2$|allocation=dsa, seed=1$|sparsity_sweep: method=wanda, allocation=\\w+, sparsity=0.5$"
    "|hyperparameters: parameter=\\w+, value=(?:0.025|0.1|0.04|0.12|0.16|3.0|7.0|10.0)$|sparsity_type=4:8$"
)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reproduction"


def _runs(values: dict, deterministic=()) -> pd.DataFrame:
    """``{allocation: [ppl per seed]}`` -> records_frame-like rows of one pruner."""
    rows = []
    for allocation, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            rows.append(
                dict(
                    method="wanda",
                    allocation=allocation,
                    seed=seed,
                    perplexity=value,
                    uses_calibration=allocation not in deterministic,
                )
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- seed summaries
def test_seed_summary_gives_mean_std_range_and_seeds():
    summary = spread.seed_summary(_runs({"uniform": [10.0, 12.0, 14.0], "dlp": [5.0]}), ["method", "allocation"])
    uniform, dlp = summary.iloc[0], summary.iloc[1]
    assert (uniform["mean"], uniform["min"], uniform["max"], uniform["n"]) == (12.0, 10.0, 14.0, 3)
    assert uniform["std"] == pytest.approx(2.0) and uniform["seeds"] == "0,1,2"
    assert dlp["n"] == 1 and math.isnan(dlp["std"])


@pytest.mark.parametrize(
    "values, bold_allocation",
    [
        ({"uniform": [300, 320, 310], "owl": [250, 260, 255], "dlp": [200, 240, 220]}, "dlp"),  # 240 < 250
        ({"uniform": [300, 320, 310], "owl": [230, 260, 255], "dlp": [200, 240, 220]}, None),  # 240 > 230
        ({"uniform": [300, 320, 310], "owl": [250, 260, 255], "dlp": [200, 250, 220]}, None),  # a tie is no win
    ],
)
def test_bold_only_when_the_best_is_better_beyond_the_spread(values, bold_allocation):
    summary = spread.seed_summary(_runs(values), ["method", "allocation"])
    bold = spread.best_beyond_spread(summary, "method")
    expected = [a == bold_allocation for a in summary["allocation"]]
    assert bold.tolist() == expected


def test_bold_rule_for_accuracies_and_a_deterministic_cell():
    summary = spread.seed_summary(_runs({"uniform": [0.30], "dlp": [0.31, 0.33, 0.32]}), ["method", "allocation"])
    assert spread.best_beyond_spread(summary, "method", lower_is_better=False).tolist() == [False, True]
    summary = spread.seed_summary(_runs({"uniform": [0.32], "dlp": [0.31, 0.33, 0.32]}), ["method", "allocation"])
    assert spread.best_beyond_spread(summary, "method", lower_is_better=False).tolist() == [False, False]
    # one allocation alone is never bold
    summary = spread.seed_summary(_runs({"dlp": [1.0, 2.0]}), ["method", "allocation"])
    assert not spread.best_beyond_spread(summary, "method").any()


def test_a_row_on_fewer_seeds_than_the_others_is_never_bold_unless_deterministic():
    runs = _runs({"uniform": [300, 320], "dlp": [200, 240], "atp": [150]})
    runs["uses_calibration"] = True
    frame = spread.seed_summary(runs, ["method", "allocation"])
    summary = frame.assign(uses_calibration=True)
    assert not spread.best_beyond_spread(summary, "method").any()  # atp's one run: spread unknown
    # without the single row, DLP's range is apart from Uniform's: bold
    assert spread.best_beyond_spread(summary[summary["allocation"] != "atp"], "method").tolist() == [False, True]
    # a deterministic single run (no calibration) stands for every seed and may be bold
    summary = frame.assign(uses_calibration=frame["allocation"] != "atp")
    assert spread.best_beyond_spread(summary, "method").tolist() == [False, False, True]


def test_ordering_counts_seed_by_seed_with_a_deterministic_cell_for_every_seed():
    runs = _runs({"uniform": [300.0], "owl": [250, 310, 260], "dlp": [200, 240, 270]}, deterministic=("uniform",))
    values = spread.per_seed_values(runs, "allocation")
    assert values["uniform"].tolist() == [300.0, 300.0, 300.0]
    counts = spread.ordering_counts(values, ["dlp", "owl", "uniform"])
    # seed 0: 200<250<300 holds; seed 1: 240<310 but 310>300; seed 2: 270>260
    assert counts == {"n": 3, "chain": 1, "pairs": [("dlp", "owl", 2), ("owl", "uniform", 2)], "pair_n": [3, 3]}
    sentence = spread.ordering_sentence(values, {"dlp": "DLP", "owl": "OWL", "uniform": "Uniform"})
    assert sentence.startswith("DLP < OWL < Uniform (order of the means) holds in 1 of 3 seeds")
    assert "DLP < OWL: 2, OWL < Uniform: 2" in sentence


def test_orderings_count_a_row_run_on_fewer_seeds_only_where_it_ran():
    # DSA on seeds 0 and 1 only: the chain is judged on those two, its pair with DLP out of two
    runs = _runs({"uniform": [300.0, 310.0, 290.0], "dlp": [200.0, 240.0, 270.0], "dsa": [190.0, 250.0]})
    values = spread.per_seed_values(runs, "allocation")
    counts = spread.ordering_counts(values, ["dsa", "dlp", "uniform"])
    assert counts == {"n": 2, "chain": 1, "pairs": [("dsa", "dlp", 1), ("dlp", "uniform", 3)], "pair_n": [2, 3]}
    sentence = spread.ordering_sentence(values, {"dsa": "DSA", "dlp": "DLP", "uniform": "Uniform"})
    assert sentence == (
        "DSA < DLP < Uniform (order of the means) holds in 1 of 2 seeds (DSA < DLP: 1, DLP < Uniform: 3 of 3)"
    )


def test_ordering_sentence_of_accuracies_compares_the_numbers_with_the_greater_sign():
    runs = _runs({"uniform": [0.30, 0.31, 0.29], "dlp": [0.36, 0.30, 0.33]})
    values = spread.per_seed_values(runs, "allocation")
    sentence = spread.ordering_sentence(values, {"dlp": "DLP", "uniform": "Uniform"}, lower_is_better=False)
    # seed 0: 0.36 > 0.30 holds; seed 1: 0.30 < 0.31 does not; seed 2: 0.33 > 0.29 holds
    assert sentence.startswith("DLP > Uniform (order of the means, better first; higher is better) holds in 2 of 3")
    assert "<" not in sentence


# ------------------------------------------------------------------------------------- tolerance
def test_log_tolerance_from_hand_computed_values():
    values = [100.0, 110.0, 90.0, 105.0]
    sigma = float(np.std(np.log(values), ddof=1))
    assert spread.log_tolerance(values) == (pytest.approx(sigma), pytest.approx(3 * math.sqrt(2) * sigma))
    assert spread.log_tolerance([5.0, 5.0]) == (0.0, spread.TOLERANCE_FLOOR)
    assert spread.log_tolerance([5.0]) == (0.0, spread.TOLERANCE_FLOOR)


def _tolerances():
    frame = pd.DataFrame(
        [
            dict(method="wanda", allocation="uniform", sparsity=0.7, perturb=0.0, perplexity=700.0),
            dict(method="wanda", allocation="uniform", sparsity=0.7, perturb=1e-6, perplexity=770.0),
            dict(method="wanda", allocation="uniform", sparsity=0.7, perturb=1e-6, perplexity=650.0),
            dict(method="wanda", allocation="uniform", sparsity=0.8, perturb=0.0, perplexity=2e4),
            dict(method="wanda", allocation="uniform", sparsity=0.8, perturb=1e-6, perplexity=6e4),
            dict(method="wanda", allocation="uniform", sparsity=0.8, perturb=1e-6, perplexity=1e4),
        ]
    )
    return spread.tolerance_table(frame)


def test_tolerance_table_and_noise_dominated_cells():
    table = _tolerances()
    assert table["runs"].tolist() == [3, 3] and table["perplexity"].tolist() == [700.0, 2e4]
    sigma = float(np.std(np.log([700.0, 770.0, 650.0]), ddof=1))
    assert table["tolerance_log"].iloc[0] == pytest.approx(3 * math.sqrt(2) * sigma)
    assert table["tolerance_pct"].iloc[0] == pytest.approx(100 * math.expm1(3 * math.sqrt(2) * sigma))
    assert table["noise_dominated"].tolist() == [False, True]


def test_lookup_tolerance_measured_from_above_highest_and_unmeasured():
    table = _tolerances()
    at70, at80 = table["tolerance_log"].tolist()
    assert spread.lookup_tolerance(table, "wanda", 0.7) == (at70, "wanda 70% (measured)")
    assert spread.lookup_tolerance(table, "wanda", 0.5) == (at70, "wanda 70% (from 70%)")
    assert spread.lookup_tolerance(table, "wanda", 0.8)[0] == at80
    assert spread.lookup_tolerance(table, "wanda", 0.9)[0] == at80  # above every measured: the highest
    assert spread.lookup_tolerance(table, "magnitude", 0.7)[0] == spread.TOLERANCE_FLOOR
    assert spread.lookup_tolerance(table, "dense", 0.0)[0] == spread.TOLERANCE_FLOOR


def test_lookup_tolerance_above_a_pruners_measurements_borrows_a_larger_one():
    """SparseGPT measured at 70% only: its 80% point takes Wanda's 80% tolerance when that is larger,
    never a smaller one; at or below 70% its own applies."""
    wanda = _tolerances()
    sparsegpt = wanda[wanda["sparsity"] == 0.7].assign(method="sparsegpt", tolerance_log=0.05)
    table = pd.concat([wanda, sparsegpt], ignore_index=True)
    at80 = float(wanda["tolerance_log"].iloc[1])
    assert spread.lookup_tolerance(table, "sparsegpt", 0.8) == (
        at80,
        "wanda 80% (none measured for sparsegpt at 80% or above)",
    )
    assert spread.lookup_tolerance(table, "sparsegpt", 0.7) == (0.05, "sparsegpt 70% (measured)")
    assert spread.lookup_tolerance(table, "sparsegpt", 0.6) == (0.05, "sparsegpt 70% (from 70%)")
    large = table.assign(tolerance_log=np.where(table["method"] == "sparsegpt", 9.0, table["tolerance_log"]))
    assert spread.lookup_tolerance(large, "sparsegpt", 0.8) == (9.0, "sparsegpt 70% (from 70%)")


# ------------------------------------------------------------------------------ reproduction check
def _write_tables(folder: Path, sweep: list[tuple], tolerance: pd.DataFrame | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(sweep, columns=["method", "allocation", "sparsity", "perplexity"])
    frame.to_csv(folder / "sparsity_sweep.csv", index=False)
    if tolerance is not None:
        tolerance.to_csv(folder / reproduction.TOLERANCE_FILE, index=False)


def test_check_flags_a_planted_outlier_and_a_missing_cell(tmp_path, capsys):
    cells = [("wanda", "uniform", 0.7, 700.0), ("wanda", "owl", 0.7, 600.0), ("magnitude", "uniform", 0.7, 9e4)]
    _write_tables(tmp_path / "ref", cells, _tolerances())
    fresh = [("wanda", "uniform", 0.7, 720.0), ("wanda", "owl", 0.7, 600.0 * 1.8), ("magnitude", "uniform", 0.7, 9e4)]
    _write_tables(tmp_path / "fresh", fresh[:2] + [("wanda", "dlp", 0.7, 400.0)])
    result = reproduction.check_tables(tmp_path / "ref", tmp_path / "fresh")
    status = dict(zip(result["cell"], result["status"]))
    assert status == {
        "sparsity_sweep: method=wanda, allocation=uniform, sparsity=0.7": "ok",
        "sparsity_sweep: method=wanda, allocation=owl, sparsity=0.7": "outside tolerance",
        "sparsity_sweep: method=magnitude, allocation=uniform, sparsity=0.7": "missing in fresh",
        "sparsity_sweep: method=wanda, allocation=dlp, sparsity=0.7": "missing in reference",
    }
    assert reproduction.main(["--reference", str(tmp_path / "ref"), "--fresh", str(tmp_path / "fresh")]) == 1
    out = capsys.readouterr().out
    assert "compared 4 cells; 3 outside the reproduction tolerance or missing" in out
    assert "fresh/reference 1.800" in out


def test_check_passes_identical_tables_and_lists_noise_dominated_cells_apart(tmp_path, capsys):
    cells = [("wanda", "uniform", 0.7, 700.0), ("wanda", "uniform", 0.8, 2e4)]
    _write_tables(tmp_path / "ref", cells, _tolerances())
    _write_tables(tmp_path / "same", cells)
    assert reproduction.main(["--reference", str(tmp_path / "ref"), "--fresh", str(tmp_path / "same")]) == 0
    assert "compared 2 cells; 0 outside" in capsys.readouterr().out
    # a noise-dominated cell outside its (wide) tolerance is listed but does not fail the check
    _write_tables(tmp_path / "moved", [cells[0], ("wanda", "uniform", 0.8, 2e4 * 100)])
    assert reproduction.main(["--reference", str(tmp_path / "ref"), "--fresh", str(tmp_path / "moved")]) == 0
    out = capsys.readouterr().out
    assert "noise-dominated (expected to move on another machine):" in out and "unexpected" not in out


def _write_search(folder: Path, expressions: list[str]):
    rows = [{"generation": g, "best": 100.0 - g, "best_expression": e} for g, e in enumerate(expressions)]
    pd.DataFrame(rows).to_csv(folder / reproduction.SEARCH_FILE, index=False)


def test_dsa_cells_from_another_searched_expression_are_listed_apart(tmp_path, capsys):
    """Magnitude's DSA cell has magnitude's near-zero tolerance, but its allocation comes from a search
    whose fitness is float-sensitive: when the fresh search ended on another expression, the moved cell
    is listed as not comparable and does not fail the check; with the same expression it fails as any
    other cell would, and a moved non-DSA cell fails in either case."""
    cells = [("magnitude", "uniform", 0.7, 9e4), ("magnitude", "dsa", 0.7, 3.6e4), ("wanda", "dsa", 0.7, 335.0)]
    _write_tables(tmp_path / "ref", cells, _tolerances())
    _write_search(tmp_path / "ref", ["W:(SIGMOID)-(MEAN)-()", "W:(SIGMOID)-(MEAN)-(EXP)"])
    moved = [cells[0], ("magnitude", "dsa", 0.7, 4.4e4), cells[2]]
    _write_tables(tmp_path / "other", moved)
    _write_search(tmp_path / "other", ["W:(SIGMOID)-(MEAN)-()", "W:(SIGMOID)-(MEAN)-(EXP)-(SQRT)"])
    args = ["--reference", str(tmp_path / "ref"), "--fresh"]
    assert reproduction.main([*args, str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert "different expressions: W:(SIGMOID)-(MEAN)-(EXP) (reference), W:(SIGMOID)-(MEAN)-(EXP)-(SQRT) (fresh)" in out
    assert "DSA or EvoPress with another searched result" in out and "method=magnitude, allocation=dsa" in out
    assert "unexpected" not in out

    _write_tables(tmp_path / "same", moved)
    _write_search(tmp_path / "same", ["W:(SIGMOID)-(MEAN)-(EXP)"])
    result = reproduction.check_tables(tmp_path / "ref", tmp_path / "same")
    assert reproduction.unexpected(result)["cell"].tolist() == [
        "sparsity_sweep: method=magnitude, allocation=dsa, sparsity=0.7"
    ]
    _write_tables(tmp_path / "both", [(*cells[0][:3], 1.2e5), *moved[1:]])
    _write_search(tmp_path / "both", ["W:(SIGMOID)-(MEAN)-(EXP)-(SQRT)"])
    result = reproduction.check_tables(tmp_path / "ref", tmp_path / "both")
    assert dict(zip(result["cell"], result["status"])) == {
        "sparsity_sweep: method=magnitude, allocation=uniform, sparsity=0.7": "outside tolerance",
        "sparsity_sweep: method=magnitude, allocation=dsa, sparsity=0.7": reproduction.OTHER_EXPRESSION,
        "sparsity_sweep: method=wanda, allocation=dsa, sparsity=0.7": "ok",
    }
    assert reproduction.main([*args, str(tmp_path / "both")]) == 1


def test_evopress_cells_from_another_searched_allocation_are_listed_apart(tmp_path):
    """A pruner's EvoPress cells are not comparable when its two searches ended on different allocations
    (the last ``parent_key`` of ``evopress_search.csv``); with the same allocation they are checked as usual."""
    cells = [("wanda", "uniform", 0.7, 590.0), ("wanda", "evopress", 0.7, 350.0)]
    _write_tables(tmp_path / "ref", cells, _tolerances())
    moved = [cells[0], ("wanda", "evopress", 0.7, 900.0)]
    for folder, key in (("ref", "a1"), ("other", "b2"), ("same", "a1")):
        if folder != "ref":
            _write_tables(tmp_path / folder, moved)
        rows = [{"method": "wanda", "generation": g, "parent_key": k} for g, k in enumerate(["u0", key])]
        pd.DataFrame(rows).to_csv(tmp_path / folder / reproduction.EVOPRESS_FILE, index=False)
    assert reproduction.searched_allocations(tmp_path / "other") == {"wanda": "b2"}
    other = reproduction.check_tables(tmp_path / "ref", tmp_path / "other")
    status = dict(zip(other["cell"], other["status"]))
    assert status["sparsity_sweep: method=wanda, allocation=evopress, sparsity=0.7"] == reproduction.OTHER_EXPRESSION
    assert reproduction.unexpected(other).empty
    same = reproduction.check_tables(tmp_path / "ref", tmp_path / "same")
    assert reproduction.unexpected(same)["cell"].tolist() == [
        "sparsity_sweep: method=wanda, allocation=evopress, sparsity=0.7"
    ]


def test_check_errors_clearly(tmp_path):
    _write_tables(tmp_path / "ref", [("wanda", "uniform", 0.7, 700.0)])
    (tmp_path / "fresh").mkdir()
    with pytest.raises(FileNotFoundError, match="reproduction_tolerance.csv not found"):
        reproduction.check_tables(tmp_path / "ref", tmp_path / "fresh")
    with pytest.raises(FileNotFoundError, match="sparsity_sweep.csv not found"):
        reproduction.check_tables(tmp_path / "ref", tmp_path / "fresh", _tolerances())
    with pytest.raises(SystemExit):
        reproduction.main(["--reference", str(tmp_path / "nope"), "--fresh", str(tmp_path / "fresh")])


def test_the_committed_tolerance_covers_the_fresh_clone_numbers_of_issue_10(tmp_path):
    """The numbers a fresh clone gave on two other CPUs (tests/fixtures/reproduction/README.md) against
    the cells committed then, with the committed reproduction tolerance (tables/): every 70% cell lies
    within it (the largest move, Wanda-OWL -11%, against Wanda's ±25% measured with 4 draws), and the 80%
    cells, which moved by factors up to 7, are noise-dominated, so ``make check-reproduction`` does not
    fail on them even where they lie outside (Wanda-DLP's factor 6.9 against the committed ±494%)."""
    tolerances = pd.read_csv(ROOT / "tables" / reproduction.TOLERANCE_FILE)
    result = reproduction.check_tables(FIXTURES / "committed", FIXTURES / "fresh_clone", tolerances)
    assert len(result) == 9
    bad = reproduction.flagged(result)
    assert bad["noise_dominated"].all() and bad["cell"].str.endswith("sparsity=0.8").all()
    at80 = result["cell"].str.endswith("sparsity=0.8")
    assert result.loc[at80, "noise_dominated"].all() and not result.loc[~at80, "noise_dominated"].any()
    assert result.loc[at80, "log_ratio"].abs().max() > math.log(6)  # what "noise-dominated" means here
    # a planted outlier among them is flagged: Wanda-DLP 70% doubled
    fresh = pd.read_csv(FIXTURES / "fresh_clone" / "sparsity_sweep.csv")
    fresh.loc[
        (fresh["allocation"] == "dlp") & (fresh["sparsity"] == 0.7) & (fresh["method"] == "wanda"), "perplexity"
    ] *= 2
    fresh.to_csv(tmp_path / "sparsity_sweep.csv", index=False)
    flagged = reproduction.flagged(reproduction.check_tables(FIXTURES / "committed", tmp_path, tolerances))
    unexpected = flagged[~flagged["noise_dominated"]]
    assert unexpected["cell"].tolist() == ["sparsity_sweep: method=wanda, allocation=dlp, sparsity=0.7"]


def test_the_committed_tolerance_covers_an_amd_epyc_run_of_the_same_profile():
    """tests/fixtures/reproduction/amd_epyc_cfe313b: the quick profile's tables as committed at cfe313b,
    made on an AMD EPYC (AVX-512) with the same code, data and seeds as the committed tables (an Intel Xeon,
    2026-12-05), but two float-sensitivity draws of the Uniform cells only. With the committed
    tolerance every cell both sides have agrees, in either direction (SparseGPT moves up to x1.16). The
    cfe313b run's own tolerance (3 runs of Uniform cells: SparseGPT ±12%) flags SparseGPT cells: the
    defect that made the quick profile measure more draws and DLP's cells too."""
    tolerances = pd.read_csv(ROOT / "tables" / reproduction.TOLERANCE_FILE)
    amd = FIXTURES / "amd_epyc_cfe313b"
    for reference, fresh in ((ROOT / "tables", amd), (amd, ROOT / "tables")):
        result = reproduction.check_tables(reference, fresh, tolerances)
        compared = result[~result["status"].str.startswith("missing")]
        assert len(compared) >= 65  # every cell of the tables but the draws and rows one side lacks
        assert reproduction.unexpected(compared).empty, reproduction.report(compared)
        missing = result[result["status"].str.startswith("missing")]
        # draws only one side made, and the OWL sweep the quick profile dropped
        assert missing["cell"].str.contains(NOT_IN_EARLIER_RUNS).all()
        moved = compared.loc[compared["cell"].str.contains("method=sparsegpt"), "log_ratio"].abs().max()
        assert moved > math.log(1.15)  # the check is not passing on identical numbers
        # the main table's means over seeds 0-2 there and 0-1 here are not the same cell: listed apart, never
        # failing the check, while each seed's run is compared (magnitude's to 6 digits)
        other = compared[compared["status"] == reproduction.OTHER_SEEDS]
        assert len(other) == 11 and other["cell"].str.startswith("main_table: ").all()
        assert "means over other calibration seeds" in reproduction.report(compared)
        runs = compared[compared["cell"].str.startswith("main_table_runs: method=magnitude, allocation=owl")]
        assert len(runs) == 2 and (runs["log_ratio"].abs() < 1e-5).all()
    old = reproduction.check_tables(amd, ROOT / "tables")
    old = reproduction.unexpected(old[~old["status"].str.startswith("missing")])
    assert len(old) >= 1 and old["cell"].str.contains("method=sparsegpt").all()


def test_each_cpus_tolerance_covers_the_other_cpus_run_an_independent_check():
    """tests/fixtures/reproduction/intel_xeon_47d598e: the quick profile's tables as committed at 47d598e,
    made on an Intel Xeon (AVX-512) with 6 draws per float-sensitivity cell; the committed tables are the
    same data and seeds on a later Intel Xeon run (2026-12-05), with the tolerance of 4 draws measured
    there (an independent test: neither run shaped the other's tolerance). Either run's own tolerance
    covers every cell both have, in either direction; magnitude masks come from the weights alone and
    agree to 6 digits; only DSA's cells differ in kind (each CPU's search found another expression)."""
    intel = FIXTURES / "intel_xeon_47d598e"
    for reference, fresh in ((intel, ROOT / "tables"), (ROOT / "tables", intel)):
        result = reproduction.check_tables(reference, fresh)  # the reference's own tolerance
        compared = result[~result["status"].str.startswith("missing")]
        assert len(compared) >= 75  # every cell but the draws and rows one side lacks
        assert reproduction.unexpected(compared).empty, reproduction.report(compared)
        other = compared[compared["status"] == reproduction.OTHER_EXPRESSION]
        assert other["cell"].str.contains("allocation=dsa").all()
        sparsegpt = compared.loc[compared["cell"].str.contains("method=sparsegpt"), "log_ratio"].abs()
        assert sparsegpt.max() > math.log(1.05)  # the check passes on real moves, not identical numbers
        magnitude = compared["cell"].str.contains("method=magnitude") & ~compared["cell"].str.contains("=dsa")
        magnitude &= compared["status"] != reproduction.OTHER_SEEDS
        assert magnitude.sum() >= 4 and (compared.loc[magnitude, "log_ratio"].abs() < 1e-5).all()
        missing = result[result["status"].str.startswith("missing")]  # only what the profiles run differently
        assert missing["cell"].str.contains(NOT_IN_EARLIER_RUNS).all()


def test_a_main_table_mean_takes_its_pruners_tolerance_at_the_nominal_sparsity(tmp_path):
    """The main table has no sparsity column: its achieved sparsity (SparseGPT's 70.0007%) stands in,
    rounded to the whole percent, so its means are checked with the 70% tolerance (±39% or so) rather than
    the noise-dominated 80% one: a SparseGPT mean 1.5x the committed one fails the check."""
    tables = ROOT / "tables"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for path in tables.glob("*.csv"):
        (fresh / path.name).write_bytes(path.read_bytes())
    main = pd.read_csv(tables / "main_table.csv")
    assert (main.loc[main["method"] == "sparsegpt", "achieved_sparsity"] > 0.7).all()
    result = reproduction.check_tables(tables, fresh)
    sgpt = result[result["cell"] == "main_table: method=sparsegpt, allocation=uniform"].iloc[0]
    assert sgpt["source"] == "sparsegpt 70% (measured)" and not sgpt["noise_dominated"]
    main.loc[(main["method"] == "sparsegpt") & (main["allocation"] == "uniform"), "perplexity"] *= 1.5
    main.to_csv(fresh / "main_table.csv", index=False)
    bad = reproduction.unexpected(reproduction.check_tables(tables, fresh))
    assert bad["cell"].tolist() == ["main_table: method=sparsegpt, allocation=uniform"]
