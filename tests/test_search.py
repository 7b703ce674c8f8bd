"""DSA's allocation search (dlp_lib.search): the expression grammar and its operators, the seeded
evolution, the candidate cache (resume after a kill), the fitness on a real (tiny) model, the CLI."""

from __future__ import annotations

import json
import logging
import math
import random

import pandas as pd
import pytest
import torch

from dlp_lib import experiments as ex, reports
from dlp_lib.allocation import parse_dsa_graph
from dlp_lib.cli import search as search_cli
from dlp_lib.config import ConfigError
from dlp_lib.search import (
    DSA_README_GRAPH,
    POST_OPS,
    PRE_OPS,
    REDUCTIONS,
    CachedFitness,
    Candidate,
    Expression,
    ExpressionSpace,
    FitnessSettings,
    ProxyFitness,
    SearchConfig,
    search,
)


# ------------------------------------------------------------------------------------ expressions
def test_expression_parse_and_text_round_trip():
    expr = Expression.parse(DSA_README_GRAPH)
    assert expr == Expression(("ABSLOG",), "VAR", ("ATAN", "ASIN"))
    assert str(expr) == "W:(ABSLOG)-(VAR)-(ATAN,ASIN)"  # the dead (K) field is dropped
    assert Expression.parse(str(expr)) == expr
    assert Expression.parse("W:()-(NO_OP)-(NO_OP)") == Expression((), "MEAN", ())  # NO_OP: the mean, no transform
    with pytest.raises(ConfigError, match="exactly one reduction"):
        Expression.parse("W:()-(MEAN,VAR)-()")
    with pytest.raises(ConfigError, match="unknown DSA"):
        Expression.parse("W:(FOO)-(MEAN)-()")


def test_the_grammar_has_every_op_of_the_tables_but_no_op():
    assert "NO_OP" not in PRE_OPS + REDUCTIONS + POST_OPS
    assert len(PRE_OPS) == 9 and len(REDUCTIONS) == 7 and len(POST_OPS) == 12


@pytest.mark.parametrize("max_pre, max_post", [(2, 2), (0, 1), (3, 0)])
def test_every_random_mutated_and_crossed_expression_parses_and_stays_in_the_space(max_pre, max_post):
    space = ExpressionSpace(max_pre, max_post)
    rng = random.Random(7)
    population = [space.random(rng) for _ in range(50)]
    for _ in range(500):
        a, b = rng.choice(population), rng.choice(population)
        for child in (space.mutate(a, rng), space.crossover(a, b, rng), space.random(rng)):
            assert space.contains(child)
            parse_dsa_graph(str(child))  # the allocation code accepts it
            assert Expression.parse(str(child)) == child
        mutant = space.mutate(a, rng)
        assert mutant != a, "a mutation changes the expression"
        crossed = space.crossover(a, b, rng)
        assert crossed.pre in (a.pre, b.pre) and crossed.reduction in (a.reduction, b.reduction)
        assert crossed.post in (a.post, b.post)


def test_mutation_reaches_every_kind_of_edit():
    space = ExpressionSpace(2, 2)
    rng = random.Random(0)
    start = Expression(("ABS",), "MEAN", ("SIN",))
    lengths = {(len(m.pre), len(m.post)) for m in (space.mutate(start, rng) for _ in range(300))}
    assert {(0, 1), (2, 1), (1, 0), (1, 2), (1, 1)} <= lengths  # deletions, insertions, replacements


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"population": 1}, "population must be in .2, 1000."),
        ({"generations": 0}, "generations must be in .1, 10000."),
        ({"population": 4, "elite": 4}, "elite must be in"),
        ({"tournament": 0}, "tournament size"),
        ({"population": 4, "tournament": 5}, "tournament size"),
        ({"crossover": 1.5}, "crossover must be in .0, 1."),
        ({"mutation": -0.1}, "mutation must be in .0, 1."),
        ({"max_pre": -1}, "max_pre must be"),
        ({"initial": ("W:(ABS,ABS,ABS)-(MEAN)-()",)}, "outside the search space"),
        (
            {
                "population": 2,
                "elite": 1,
                "tournament": 2,
                "initial": ("W:()-(MEAN)-()", "W:()-(VAR)-()", "W:()-(STD)-()"),
            },
            "do not fit",
        ),
        ({"initial": ("W:(X)-(MEAN)-()",)}, "unknown DSA"),
    ],
)
def test_search_config_refuses_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**kwargs)


def test_fitness_settings_refuse_bad_settings():
    with pytest.raises(ConfigError, match="unknown prune method"):
        FitnessSettings(method="wanda_dlp")
    with pytest.raises(ConfigError, match="sparsity must be in"):
        FitnessSettings(sparsity=1.0)
    with pytest.raises(ConfigError, match="windows must be positive"):
        FitnessSettings(windows=0)
    with pytest.raises(ConfigError, match="dsa_lambda must be >= 0"):
        FitnessSettings(dsa_lambda=-0.1)
    with pytest.raises(ConfigError, match="unknown sparsegpt_hessian 'tf32'"):
        FitnessSettings(sparsegpt_hessian="tf32")


def test_fitness_settings_name_sparsegpts_hessian_arithmetic_only_where_it_is_not_the_reference():
    """The candidates' cache key: SparseGPT's "auto" on CUDA is the half Hessian and says so; on a CPU, and for
    Wanda, the settings are those of a search made before the option (cached candidates keep their keys)."""
    assert FitnessSettings(method="sparsegpt", device="cuda").to_dict()["sparsegpt_hessian"] == "half"
    for settings in (FitnessSettings(method="sparsegpt"), FitnessSettings(device="cuda", sparsegpt_hessian="half")):
        assert not {"sparsegpt_hessian", "sparsegpt_sweep"} & set(settings.to_dict())
    pruning = FitnessSettings(method="sparsegpt", device="cuda", sparsegpt_sweep="torch").prune_config("", "uniform")
    assert (pruning.sparsegpt_sweep, pruning.sparsegpt_hessian, pruning.allocation) == ("torch", "half", "uniform")


# ------------------------------------------------------------------------- the evolution on a stub
class StubFitness(CachedFitness):
    """A deterministic fitness without a model: per-block values from the expression's ops; ASIN makes
    an expression invalid; densities round the values so that some expressions share them."""

    def __init__(self, directory, fail_after: int | None = None):
        super().__init__(directory)
        self.runs = 0
        self.fail_after = fail_after

    def _statistics(self, expressions):
        out = {}
        for e in expressions:
            expr = Expression.parse(e)
            if "ASIN" in expr.post:
                out[e] = f"DSA expression {e!r} is not finite on block 1 (nan); choose another expression"
            else:
                base = REDUCTIONS.index(expr.reduction) + 1
                out[e] = [(base + b) ** (1 + len(expr.pre)) + 0.5 * len(expr.post) * (b % 2) for b in range(4)]
        return out

    def _densities(self, expression, statistic):
        spread = max(statistic) - min(statistic)
        return [0.3 + (0.0 if spread == 0 else 0.1 * (round(v, 6) - min(statistic)) / spread - 0.05) for v in statistic]

    def _run(self, densities):
        if self.fail_after is not None and self.runs >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.runs += 1
        return 100.0 + sum((d - 0.3 + 0.02 * i) ** 2 for i, d in enumerate(densities)) * 1e4


CONFIG = SearchConfig(population=6, generations=4, seed=3, initial=(DSA_README_GRAPH, "W:()-(MEAN)-()"))


def _same(a, b) -> bool:
    """The same evolution: best, history (what came from the cache aside) and candidates."""

    def key(result):
        history = [{k: v for k, v in h.items() if k != "from_cache"} for h in result.history]
        candidates = [(c["expression"], c["fitness"], c["generation"]) for c in result.candidates]
        return result.best.expression, result.best.fitness, history, candidates

    return key(a) == key(b)


def test_same_seed_gives_the_same_populations_and_result(tmp_path):
    a = search(StubFitness(tmp_path / "a"), CONFIG, progress=False)
    b = search(StubFitness(tmp_path / "b"), CONFIG, progress=False)
    assert _same(a, b)
    other = search(StubFitness(tmp_path / "c"), SearchConfig(**{**CONFIG.to_dict(), "seed": 4}), progress=False)
    assert {c["expression"] for c in other.candidates} != {c["expression"] for c in a.candidates}


def test_search_bookkeeping(tmp_path):
    result = search(StubFitness(tmp_path), CONFIG, progress=False)
    expressions = [c["expression"] for c in result.candidates]
    assert len(expressions) == len(set(expressions)), "no expression is evaluated twice"
    assert len(expressions) <= CONFIG.evaluations() == 6 + 3 * 4
    assert [h["generation"] for h in result.history] == [0, 1, 2, 3]
    bests = [h["best"] for h in result.history]
    assert bests == sorted(bests, reverse=True), "the best so far never gets worse (elitism)"
    assert result.best.fitness == min(c["fitness"] for c in result.candidates if c["fitness"] is not None)
    invalid = [c for c in result.candidates if c["expression"] == "W:(ABSLOG)-(VAR)-(ATAN,ASIN)"][0]
    assert invalid["fitness"] is None and "not finite on block 1" in invalid["reason"]
    assert result.candidates[-1]["fitness"] is None, "invalid candidates rank last"
    assert [c["rank"] for c in result.candidates] == list(range(len(expressions)))
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON: no Infinity


def test_a_killed_search_resumes_from_the_cache(tmp_path):
    fresh = StubFitness(tmp_path / "fresh")
    uninterrupted = search(fresh, CONFIG, progress=False)
    assert fresh.runs >= 6
    done = fresh.runs // 2
    killed = StubFitness(tmp_path / "resume", fail_after=done)
    with pytest.raises(KeyboardInterrupt):
        search(killed, CONFIG, progress=False)
    assert killed.runs == done and len(list((tmp_path / "resume").glob("*.json"))) >= done
    again = StubFitness(tmp_path / "resume")
    resumed = search(again, CONFIG, progress=False)
    assert again.runs == fresh.runs - done, "the runs done before the kill are read from the cache, not run again"
    assert _same(resumed, uninterrupted)
    assert resumed.history[0]["from_cache"] > 0


def test_expressions_with_the_same_densities_share_one_run(tmp_path):
    fitness = StubFitness(tmp_path)
    # same reduction and pre length, transforms of the same count: the same per-block values
    first, twin = fitness.evaluate(["W:(ABS)-(VAR)-(SIN)", "W:(EXP)-(VAR)-(COS)"])
    assert fitness.runs == 1
    assert twin.shared_with == first.expression and twin.fitness == first.fitness and twin.densities == first.densities
    # a new process reads the cache and still shares
    again = StubFitness(tmp_path)
    (third,) = again.evaluate(["W:(TANH)-(VAR)-(TAN)"])
    assert again.runs == 0 and third.shared_with == first.expression


def test_a_corrupt_cached_candidate_is_evaluated_again(tmp_path, caplog):
    fitness = StubFitness(tmp_path)
    (candidate,) = fitness.evaluate(["W:()-(STD)-()"])
    path = fitness._path(candidate.expression)
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="dlp_lib.search"):
        again = StubFitness(tmp_path)
        (recomputed,) = again.evaluate(["W:()-(STD)-()"])
    assert "ignoring unreadable search candidate" in caplog.text
    assert again.runs == 1 and recomputed.fitness == candidate.fitness
    assert json.loads(path.read_text())["fitness"] == candidate.fitness


def test_candidate_json_round_trip_keeps_inf():
    bad = Candidate("W:()-(MEAN)-(LOG,LOG)", math.inf, "not finite")
    assert bad.to_dict()["fitness"] is None
    assert Candidate.from_dict(bad.to_dict()).fitness == math.inf and not bad.valid


# ------------------------------------------------------------------------------ on a tiny real model
@pytest.fixture(scope="module")
def tiny_fitness(tiny_model_dir, tmp_path_factory):
    settings = FitnessSettings(
        model=str(tiny_model_dir),
        calibration="wiki-extracts",
        sparsity=0.6,
        nsamples=2,
        seqlen=16,
        windows=2,
        batch_size=2,
    )
    return ProxyFitness(settings, progress=False, cache_dir=tmp_path_factory.mktemp("dsa"))


def test_an_invalid_expression_has_infinite_fitness_and_its_reason(tiny_fitness):
    # log of a mean score below 1 is negative; its log is not defined
    (candidate,) = tiny_fitness.evaluate(["W:()-(MEAN)-(LOG,LOG)"])
    assert candidate.fitness == math.inf and not candidate.valid
    assert "is not finite on block 0" in candidate.reason and candidate.densities is None


def test_a_density_outside_0_1_has_infinite_fitness_and_its_reason(tiny_model_dir, tmp_path):
    settings = FitnessSettings(
        model=str(tiny_model_dir),
        calibration="wiki-extracts",
        sparsity=0.9,  # mean density 0.1 spread over 0.9 across 3 blocks: the lowest is below 0 whatever the scores
        dsa_lambda=0.45,
        nsamples=2,
        seqlen=16,
        windows=2,
    )
    (candidate,) = ProxyFitness(settings, progress=False, cache_dir=tmp_path).evaluate(["W:()-(MEAN)-()"])
    assert candidate.fitness == math.inf and "outside (0, 1]" in candidate.reason
    assert candidate.statistic is not None and len(candidate.statistic) == 3


def test_fitness_on_a_model_is_deterministic_and_restores_the_dense_weights(tiny_fitness, tiny_model_dir, tmp_path):
    a, b = tiny_fitness.evaluate(["W:()-(MEAN)-()", "W:(POW)-(STD)-(SIN)"])
    assert a.valid and b.valid and a.fitness != b.fitness
    weights = torch.tensor(tiny_fitness.sizes, dtype=torch.float64)
    mean_density = float((torch.tensor(a.densities, dtype=torch.float64) * weights).sum() / weights.sum())
    assert mean_density == pytest.approx(0.4, abs=1e-12)
    assert max(a.densities) - min(a.densities) == pytest.approx(2 * 0.08)
    # a fresh evaluator (empty cache) evaluates them in the other order: the same numbers, bit for bit
    fresh = ProxyFitness(tiny_fitness.settings, progress=False, cache_dir=tmp_path)
    b2, a2 = fresh.evaluate(["W:(POW)-(STD)-(SIN)", "W:()-(MEAN)-()"])
    assert (a2.fitness, b2.fitness) == (a.fitness, b.fitness)
    fresh.restore()
    for linears, dense in zip(fresh.linears, fresh.dense):
        for name, linear in linears.items():
            assert torch.equal(linear.weight, dense[name])


def test_reference_allocations_get_the_same_proxy(tiny_fitness):
    uniform = tiny_fitness.allocation_fitness("uniform")
    dlp = tiny_fitness.allocation_fitness("dlp", dlp_alpha=0.1)
    assert uniform.densities == [pytest.approx(0.4)] * 3 and uniform.valid and dlp.valid
    assert tiny_fitness.allocation_fitness("uniform").fitness == uniform.fitness  # cached


def test_search_on_a_tiny_model(tiny_fitness):
    result = search(tiny_fitness, SearchConfig(population=3, generations=2, elite=1, seed=0), progress=False)
    assert result.best.valid and len(result.history) == 2
    assert result.fitness["settings"]["method"] == "wanda" and len(result.fitness["model"]) == 16


# --------------------------------------------------------------------------------------------- CLI
def test_cli_refuses_bad_flags_before_loading_the_model(monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr("dlp_lib.models.load_model", no_loading)
    monkeypatch.setattr("dlp_lib.heap.keep_freed_memory", no_loading)  # nor the process's heap changed
    for flags, message in [
        (["--population", "1"], "population must be in [2, 1000]"),
        (["--prune_method", "wanda_dlp"], "unknown prune method"),
        (["--sparsity_ratio", "1.0"], "sparsity must be in"),
        (["--initial", "W:(FOO)-(MEAN)-()"], "unknown DSA pre-process op"),
        (["--calibration", "/no/such/file.txt"], "no/such/file"),
        (["--model", "/no/such/model"], "no/such/model"),
        (["--search_windows", "0"], "windows must be positive"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
    ]:
        assert search_cli.main(flags) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("dlp-search: error:") and message in err, (flags, err)


def test_cli_runs_a_search_and_prints_the_command_that_applies_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    heap_settings = []
    monkeypatch.setattr("dlp_lib.heap.keep_freed_memory", lambda: heap_settings.append(1) or True)
    flags = ["--model", str(tiny_model_dir), "--sparsity_ratio", "0.6", "--nsamples", "2", "--seqlen", "16"]
    flags += ["--calibration", "wiki-extracts"]  # another model's default is the hub's C4
    flags += ["--search_windows", "2", "--population", "3", "--generations", "2", "--elite", "1", "--quiet"]
    assert search_cli.main([*flags, "--save", str(tmp_path / "out" / "search.json")]) == 0
    assert heap_settings == [1]  # the Makefile's MALLOC_* settings, applied by the command itself
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "search.json").read_text())
    best = saved["best"]["expression"]
    assert f"best        {best}" in out
    assert f'dlp-prune --prune_method wanda --allocation dsa --dsa_graph "{best}" --Lamda 0.08' in out
    # the same search again: every candidate from the cache, the same result
    assert search_cli.main(flags) == 0
    assert "0 computed now" in capsys.readouterr().out


def test_dlp_prune_accepts_the_found_expression_as_dsa_graph():
    from dlp_lib.cli import build_parser, build_prune_config

    args = build_parser().parse_args(["--allocation", "dsa", "--dsa_graph", "W:(SIGMOID)-(L1_NORM)-()"])
    assert build_prune_config(args).dsa_graph == "W:(SIGMOID)-(L1_NORM)-()"


# ------------------------------------------------------------------------ notebook helpers (10, 03)
def test_main_specs_gain_one_dsa_row_per_pruner():
    prof = ex.profile("quick")
    plain = ex.main_specs(prof)
    with_dsa = ex.main_specs(prof, dsa_graph="W:()-(MEAN)-()")
    dsa = [s for s in with_dsa if s.get("allocation") == "dsa"]
    assert [s["method"] for s in dsa] == prof["main_methods"] and len(with_dsa) == len(plain) + 3
    assert all(s["dsa_graph"] == "W:()-(MEAN)-()" for s in dsa)
    config = ex.run_config(prof, **dsa[0])
    assert config.prune.dsa_graph == "W:()-(MEAN)-()" and config.prune.dsa_lambda == 0.08
    assert ex.table_allocations(prof) == ["uniform", "owl", "dlp", "dsa", "evopress", "alphapruning", "atp", "lsa"]


def test_dsa_search_settings_follow_the_profile():
    prof = ex.profile("quick")
    settings, config = ex.dsa_search_settings(prof)
    assert (settings.sparsity, settings.dsa_lambda, settings.calibration) == (0.7, 0.08, "wiki-extracts")
    assert (settings.nsamples, settings.seqlen, settings.windows) == (4, 128, 8)
    assert (config.population, config.generations, config.initial) == (8, 5, (DSA_README_GRAPH,))
    assert ex.dsa_search_seconds(prof) < 15 * 60


def test_proxy_check_picks_spread_over_the_ranking():
    candidates = [{"expression": f"e{i}", "fitness": 100.0 + i, "rank": i, "shared_with": None} for i in range(10)]
    candidates[3]["shared_with"] = "e2"
    candidates.append({"expression": "bad", "fitness": None, "rank": 10, "shared_with": None})
    picks = ex.proxy_check_picks({"candidates": candidates}, 4)
    assert [p["expression"] for p in picks] == ["e0", "e4", "e6", "e9"]  # of the 9 distinct valid: 0, 3, 5, 8
    assert len(ex.proxy_check_picks({"candidates": candidates}, 20)) == 9
    # one pick is the best (it divided by zero when more than one candidate was distinct)
    assert [p["expression"] for p in ex.proxy_check_picks({"candidates": candidates}, 1)] == ["e0"]


def test_spearman_hand_cases():
    assert ex.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ex.spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4) vs (2, 1, 4, 3): d^2 = 4, rho = 1 - 6*4 / (4*15) = 0.6
    assert ex.spearman([1, 2, 3, 4], [20, 10, 40, 30]) == pytest.approx(0.6)


def _runs(per_seed: dict) -> pd.DataFrame:
    rows = [
        dict(method="wanda", allocation=a, seed=s, perplexity=v, uses_calibration=True)
        for a, values in per_seed.items()
        for s, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_dsa_versus_claims_an_ordering_only_beyond_spread_and_tolerance():
    prof = ex.profile("quick")
    runs = _runs({"uniform": [600, 580, 590], "owl": [330, 300, 320], "dlp": [330, 320, 325], "dsa": [310, 305, 315]})
    tolerance = pd.DataFrame([dict(method="wanda", allocation="uniform", sparsity=0.7, tolerance_log=math.log(1.1))])
    versus = reports.dsa_versus(runs, prof, "wanda", tolerance).set_index("versus")
    assert versus.loc["uniform", "searched_better_seeds"] == 3 and versus.loc["uniform", "ranges_apart"]
    assert versus.loc["uniform", "beyond_tolerance"] and versus.loc["uniform", "tolerance_pct"] == pytest.approx(10.0)
    assert versus.loc["owl", "searched_better_seeds"] == 2 and not versus.loc["owl", "ranges_apart"]
    assert versus.loc["dlp", "ratio"] == pytest.approx(325 / 310) and not versus.loc["dlp", "beyond_tolerance"]
    lines = reports.dsa_verdicts(versus.reset_index())
    assert lines[0].startswith(
        "DSA (searched) beats Uniform: 310.00 vs 590.00 (Uniform 90% higher); DSA better in 3 of 3"
    )
    assert lines[0].endswith("an ordering.")
    assert "min–max ranges overlap" in lines[1] and lines[1].endswith("no claimed ordering.")
    assert "min–max ranges apart, within the ±10% reproduction tolerance" in lines[2]
    assert lines[2].endswith("no claimed ordering.")
    assert reports.dsa_versus(runs[runs["allocation"] != "dsa"], prof, "wanda").empty


def test_dsa_search_summary_names_the_best_expression_and_its_command():
    settings, config = ex.dsa_search_settings(ex.profile("quick"))
    candidates = [
        {"expression": "W:()-(MEAN)-()", "fitness": 41.234, "shared_with": None},
        {"expression": "W:()-(VAR)-()", "fitness": 50.0, "shared_with": "W:()-(MEAN)-()"},
        {"expression": "W:(LOG)-(VAR)-()", "fitness": None, "shared_with": None},
    ]
    result = {"best": candidates[0], "candidates": candidates, "seconds": 12.4}
    text = reports.dsa_search_summary(result, settings, config)
    assert "- **best expression**: `W:()-(MEAN)-()` (proxy perplexity 41.23)\n" in text
    assert (
        '`dlp-prune --prune_method wanda --allocation dsa --dsa_graph "W:()-(MEAN)-()" --Lamda 0.08 '
        "--sparsity_ratio 0.7`" in text
    )
    assert "3 expressions evaluated (1 shared an earlier one's densities, 1 invalid), 12 s when it ran" in text
    assert "population 8 × 5 generations" in text and "4 × 128 calibration tokens" in text
    nothing = reports.dsa_search_summary({**result, "best": candidates[2]}, settings, config)
    assert "none; every candidate was invalid" in nothing and "dlp-prune" not in nothing


# ------------------------------------------------------------------------------ a space too small
def test_space_size_counts_every_expression():
    from dlp_lib.search import POST_OPS, PRE_OPS, ExpressionSpace

    assert ExpressionSpace(0, 0).size() == len(REDUCTIONS) == 7
    assert ExpressionSpace(1, 0).size() == (1 + len(PRE_OPS)) * 7
    assert ExpressionSpace(2, 1).size() == (1 + len(PRE_OPS) + len(PRE_OPS) ** 2) * 7 * (1 + len(POST_OPS))


def test_a_population_the_space_cannot_hold_is_refused_up_front():
    """max_pre 0 and max_post 0 leave 7 expressions: a population of 10 used to draw forever."""
    with pytest.raises(ConfigError, match="holds 7 expressions .* at most 7"):
        SearchConfig(population=10, max_pre=0, max_post=0, initial=("W:()-(MEAN)-()",))


def test_a_search_that_exhausts_its_space_stops_and_says_so(tmp_path, caplog):
    """Population 3 for 6 generations in a space of 7: it used to hang once all 7 were tried."""
    config = SearchConfig(population=3, generations=6, elite=1, max_pre=0, max_post=0, initial=("W:()-(MEAN)-()",))
    with caplog.at_level("WARNING", logger="dlp_lib.search"):
        result = search(StubFitness(tmp_path), config, progress=False)
    assert len(result.candidates) == 7 and len(result.history) == 3  # 3 + 2 + 2 new; then 0 left, not 2
    assert "stopping after generation 3 of 6" in caplog.text


def test_candidates_of_a_revised_op_get_new_cache_entries(tmp_path):
    """GEOMETRIC_MEAN changed arithmetic: its candidates cached before are not served again; others are."""
    from dlp_lib.cache import stable_hash

    fitness = StubFitness(tmp_path)
    assert fitness._path("W:()-(MEAN)-()").name == f"{stable_hash('W:()-(MEAN)-()')}.json"
    revised = "W:()-(GEOMETRIC_MEAN)-()"
    assert fitness._path(revised).name != f"{stable_hash(revised)}.json"
