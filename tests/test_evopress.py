"""EvoPress's search (dlp_lib.search.levels, kl, evopress): the ladder keeps the total exactly, the database
is the pruners' own masks, the KL fitness, seeded and resumable evolution, and the allocation in a run."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib import pipeline
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.masks import per_row_mask
from dlp_lib.prune import dense_input_norms, prune_model
from dlp_lib.scores import wanda_score
from dlp_lib.search import evopress as evo
from dlp_lib.search.kl import KLFitness, StitchedModel
from dlp_lib.search.levels import Unit, build_database, build_ladder, exact_sparsity, model_units
from dlp_lib.sparsegpt import sparsegpt_prune
from dlp_lib.stats import Hessian


def test_ladder_by_hand():
    # two linears of 4 x 8 and 2 x 8: smallest steps 4 and 2 weights, lcm 4; target 0.5*0.5/2*64 = 8 -> step 8
    units = [Unit("0.a", 0, ("0.a",), ((4, 8),)), Unit("0.b", 0, ("0.b",), ((2, 8),))]
    ladder = build_ladder(units, 0.5, num_levels=2, reference_size=64)
    assert ladder.step == 8
    assert ladder.base == ((4,), (4,)) and ladder.per_level == ((2,), (4,))
    assert (ladder.low, ladder.high) == ((-2, -1), (1, 0))  # 4 + 2*2 would prune all 8 of a row of a
    assert ladder.row_counts(0, -2) == (0,) and ladder.row_counts(1, -1) == (0,)
    assert ladder.pruned_weights([0, 0]) == 4 * 4 + 2 * 4
    assert ladder.pruned_weights([1, -1]) == 4 * 6 + 2 * 0 == ladder.pruned_weights([0, 0])
    assert ladder.linear_sparsities([1, -1]) == {"0.a": 0.75, "0.b": 0.0}
    assert ladder.block_sparsities([1, -1]) == [24 / 48]


def test_block_units_move_every_linear_by_whole_rows():
    model = make_tiny_model("llama")
    units = model_units(model, "block")
    assert [u.name for u in units] == ["0", "1", "2"] and len(units[0].linears) == 7
    ladder = build_ladder(units, 0.6, 4, 32 * 32)
    for u in range(len(units)):
        for level in range(ladder.low[u], ladder.high[u] + 1):
            counts = ladder.row_counts(u, level)
            # one common sparsity per unit: count / cols moves alike in every linear
            fractions = {(k - b) / c for k, b, (_, c) in zip(counts, ladder.base[u], units[u].shapes)}
            assert len(fractions) == 1


@pytest.mark.parametrize("cols", [7, 96, 576, 1536, 4096, 11008])
def test_exact_sparsity_gives_the_count_back(cols):
    for count in range(0, cols, max(1, cols // 97)):
        s = exact_sparsity(count, cols, 3)
        assert int(cols * s) == count and int(3 * cols * s) == 3 * count and s < 1


@pytest.mark.parametrize("granularity", ["linear", "block"])
def test_mutation_keeps_the_total_sparsity_exactly(granularity):
    ladder = build_ladder(model_units(make_tiny_model("qwen2"), granularity), 0.7, 3, 32 * 32)
    total = ladder.pruned_weights([0] * len(ladder.units))
    rng = random.Random(0)
    parent = [0] * len(ladder.units)
    for _ in range(300):
        child = evo.mutate(parent, ladder, rng, max_flips=3)
        assert ladder.pruned_weights(child) == total
        assert sum(abs(a - b) for a, b in zip(child, parent)) <= 6
        assert all(lo <= v <= hi for v, lo, hi in zip(child, ladder.low, ladder.high))
        parent = child
    children = evo.offspring_of(parent, ladder, random.Random(1), 16, 3)
    assert len({tuple(c) for c in children}) == 16 and parent not in children


def test_the_pruned_model_has_exactly_the_ladders_zeros():
    model = make_tiny_model("llama")
    ladder = build_ladder(model_units(model), 0.7, 3, 32 * 32)
    levels = evo.mutate([0] * len(ladder.units), ladder, random.Random(3), 3)
    levels = evo.mutate(levels, ladder, random.Random(4), 3)
    sparsities = ladder.linear_sparsities(levels)
    targets = [
        {name: sparsities[f"{i}.{name}"] for name in linear_sublayers(b)} for i, b in enumerate(decoder_blocks(model))
    ]
    windows = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    report = prune_model(model, PruneConfig("wanda", 0.7), windows, targets, progress=False)
    zeros = sum(int((lin.weight == 0).sum()) for b in decoder_blocks(model) for lin in linear_sublayers(b).values())
    assert zeros == ladder.pruned_weights(levels)
    assert report.linear_targets == sparsities
    assert report.block_targets == pytest.approx(ladder.block_sparsities(levels), abs=1e-12)


def _hessians(model, windows, batch_size):
    """Each linear's Hessian of the dense model's activations, through forward hooks (not the database's path)."""
    stats, hooks = {}, []
    for i, block in enumerate(decoder_blocks(model)):
        for name, linear in linear_sublayers(block).items():
            stat = stats[f"{i}.{name}"] = Hessian(linear.in_features)
            hooks.append(
                linear.register_forward_hook(
                    lambda m, a, o, s=stat: s.add(a[0].reshape(a[0].shape[0], -1, a[0].shape[-1]))
                )
            )
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            model(windows[start : start + batch_size])
    for hook in hooks:
        hook.remove()
    return stats


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_database_levels_are_the_pruners_own_weights_bit_for_bit(method):
    model = make_tiny_model("llama")
    windows = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    ladder = build_ladder(model_units(model), 0.6, 2, 32 * 32)
    norms = dense_input_norms(model, windows, 2, progress=False) if method == "wanda" else None
    hessians = _hessians(model, windows, 2) if method == "sparsegpt" else None
    database = build_database(model, ladder, method, windows, norms, batch_size=2, progress=False)
    checked = 0
    for u, unit in enumerate(ladder.units):
        i, name = unit.linears[0].split(".", 1)
        weight = linear_sublayers(decoder_blocks(model)[int(i)])[name].weight.detach()
        for level in range(ladder.low[u], ladder.high[u] + 1):
            s = ladder.linear_sparsity(u, 0, level)
            if method == "wanda":
                direct = weight.masked_fill(per_row_mask(wanda_score(weight, norms[int(i)][name]), s), 0)
            else:
                direct = sparsegpt_prune(weight, hessians[unit.linears[0]].matrix, s)[0]
            assert torch.equal(database.weight(unit.linears[0], level), direct)
            checked += 1
    assert checked == sum(h - lo + 1 for lo, h in zip(ladder.low, ladder.high))


def test_kl_of_the_dense_model_is_zero_and_grows_with_sparsity():
    model = make_tiny_model("llama")
    windows = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    norms = dense_input_norms(model, windows, 2, progress=False)
    fitness = KLFitness(model, windows, progress=False)
    assert fitness(range(4)) == 0.0
    kls = []
    for sparsity in (0.3, 0.5, 0.7, 0.9):
        ladder = build_ladder(model_units(model), sparsity, 2, 32 * 32)
        stitched = StitchedModel(model, build_database(model, ladder, "wanda", windows, norms, progress=False))
        stitched.set([0] * len(ladder.units))
        kls.append(fitness(range(4)))
        for linear, dense in zip(stitched.linears.values(), [stitched.database.dense[k] for k in stitched.linears]):
            linear.weight.data = dense  # back to dense for the next ladder
    assert 0 < kls[0] < kls[1] < kls[2] < kls[3]


def _timeless(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _toy_score(levels, ids):
    """A deterministic stand-in fitness: a quadratic bowl plus a window-dependent tilt."""
    return sum((v - (u % 3 - 1)) ** 2 for u, v in enumerate(levels)) + 0.01 * sum(ids) * levels[0]


def test_same_seed_same_history_and_elitism():
    ladder = build_ladder([Unit(f"0.{k}", 0, (f"0.{k}",), ((8, 16),)) for k in range(6)], 0.5, 3, 256)
    config = evo.EvoPressConfig(generations=12, offspring=6, survivors=(3, 1), tokens=(16, 32))
    runs = [evo.evolve(_toy_score, ladder, config, [1, 2], 4, progress=False) for _ in range(2)]
    assert _timeless(runs[0]["history"]) == _timeless(runs[1]["history"]) and runs[0]["parent"] == runs[1]["parent"]
    other = evo.evolve(
        _toy_score, ladder, evo.EvoPressConfig(**{**config.to_dict(), "search_seed": 1}), [1, 2], 4, progress=False
    )
    assert _timeless(other["history"]) != _timeless(runs[0]["history"])
    for h in runs[0]["history"]:
        assert ladder.pruned_weights(h["parent"]) == ladder.pruned_weights([0] * 6)
        assert [s["candidates"] for s in h["stages"]][0] == 6
    assert runs[0]["history"][-1]["fitness"] < _toy_score([0] * 6, [])


@pytest.fixture
def tiny_search(tiny_model_dir, text_file):
    settings = evo.EvoPressSettings(
        model=str(tiny_model_dir), method="wanda", sparsity=0.6, num_levels=2, calibration=str(text_file),
        nsamples=2, seqlen=16, windows=4, window_seqlen=16, batch_size=2,
    )  # fmt: skip
    return settings, evo.EvoPressConfig(generations=4, offspring=4, survivors=(2, 1), tokens=(16, 32))


def test_a_killed_search_resumes_and_ends_where_an_unbroken_one_does(tiny_search, tmp_path, monkeypatch):
    settings, config = tiny_search
    unbroken = evo.evopress_search(settings, config, progress=False, cache_dir=tmp_path / "a")
    assert unbroken["levels"] == unbroken["history"][-1]["parent"]
    writes = []
    real = evo.write_json_atomic

    def dying(path, obj):
        real(path, obj)
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt  # killed after the second generation's checkpoint

    monkeypatch.setattr(evo, "write_json_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        evo.evopress_search(settings, config, progress=False, cache_dir=tmp_path / "b")
    monkeypatch.setattr(evo, "write_json_atomic", real)
    assert len(json.loads(writes[-1].read_text())["history"]) == 2
    resumed = evo.evopress_search(settings, config, progress=False, cache_dir=tmp_path / "b")
    assert _timeless(resumed["history"]) == _timeless(unbroken["history"])
    for key in ("levels", "fitness", "linear_sparsities", "checked", "key"):
        assert resumed[key] == unbroken[key]


def test_the_found_allocation_runs_with_every_pruner(tiny_search, tiny_model_dir, text_file, tmp_path):
    settings, config = tiny_search
    result = evo.evopress_search(settings, config, progress=False, cache_dir=tmp_path)
    assert result["pruned_weights"] == build_ladder_total(result)
    path = tmp_path / "found.json"
    evo.save_evopress(result, path)
    run = dict(
        model=str(tiny_model_dir),
        calibration=str(text_file),
        eval=str(text_file),
        nsamples=2,
        seqlen=16,
        eval_windows=2,
    )
    for method in ("magnitude", "wanda", "sparsegpt"):
        config_ = pipeline.RunConfig(prune=PruneConfig(method, 0.6, allocation="evopress", evopress=str(path)), **run)
        record = pipeline.run(config_, progress=False)
        assert record["allocation"]["key"] == config_.to_dict()["prune"]["evopress"]
        achieved = record["pruning"]["linear_achieved"]
        if method == "wanda":  # per-row counts: exactly the searched sparsity of every linear
            assert achieved == pytest.approx(result["linear_sparsities"], abs=1e-12)
    moved = tmp_path / "elsewhere.json"
    moved.write_text(path.read_text())
    assert (
        PruneConfig("wanda", 0.6, allocation="evopress", evopress=str(moved)).to_dict()
        == PruneConfig("wanda", 0.6, allocation="evopress", evopress=str(path)).to_dict()
    )


def build_ladder_total(result):
    sizes, sparsities = result["linear_sizes"], result["linear_sparsities"]
    return round(sum(sizes[k] * sparsities[k] for k in sizes))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(allocation="evopress"), "needs a saved search"),
        (dict(allocation="evopress", evopress="/nonexistent/evo.json"), "no EvoPress search result"),
    ],
)
def test_evopress_allocation_refuses_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PruneConfig("wanda", 0.7, **kwargs)


def test_evopress_allocation_refuses_another_sparsity_nm_and_another_model(tmp_path):
    model = make_tiny_model("llama")
    ladder = build_ladder(model_units(model), 0.6, 2, 32 * 32)
    levels = [0] * len(ladder.units)
    result = {
        "format": evo.FORMAT, "key": "k", "sparsity": 0.6, "settings": {"model": "tiny"}, "config": {}, "fitness": 0.1,
        "linear_sparsities": ladder.linear_sparsities(levels), "block_sparsities": ladder.block_sparsities(levels),
        "linear_sizes": {k: r * c for u in ladder.units for k, (r, c) in zip(u.linears, u.shapes)},
    }  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    with pytest.raises(ConfigError, match="--sparsity_ratio 0.6"):
        PruneConfig("wanda", 0.7, allocation="evopress", evopress=str(path))
    with pytest.raises(ConfigError, match="N:M"):
        PruneConfig("wanda", 0.5, sparsity_type="2:4", allocation="evopress", evopress=str(path))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an EvoPress search result"):
        PruneConfig("wanda", 0.6, allocation="evopress", evopress=str(tmp_path / "bad.json"))
    assert len(pipeline.evopress_block_targets(result, model)) == 3
    with pytest.raises(ConfigError, match="another model"):
        pipeline.evopress_block_targets(result, make_tiny_model("opt"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(survivors=(2, 2)), "end at 1"),
        (dict(survivors=(1, 2)), "end at 1"),
        (dict(survivors=(4,), tokens=(16, 32)), "one survivor count per selection stage"),
        (dict(offspring=2, survivors=(4, 1)), "at least as many offspring"),
        (dict(generations=0), r"generations must be in \[1, 100000\]"),
    ],
)
def test_evopress_config_refuses_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        evo.EvoPressConfig(**kwargs)


def test_evopress_settings_and_stages_refuse_bad_settings():
    with pytest.raises(ConfigError, match="wanda or sparsegpt"):
        evo.EvoPressSettings(method="magnitude")
    with pytest.raises(ConfigError, match="granularity"):
        evo.EvoPressSettings(granularity="head")
    with pytest.raises(ConfigError, match="sparsity"):
        evo.EvoPressSettings(sparsity=1.0)
    with pytest.raises(ConfigError, match="whole number of search windows"):
        evo.EvoPressConfig(tokens=(100, 200)).stage_windows(64, 8)
    with pytest.raises(ConfigError, match="at most the 2"):
        evo.EvoPressConfig(tokens=(64, 256)).stage_windows(64, 2)


def test_cli_refuses_bad_flags_before_loading_the_model(monkeypatch, capsys):
    from dlp_lib.cli import evopress as cli

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr(evo, "EvoPressProblem", refuse)
    for flags, message in [
        (["--prune_method", "magnitude"], "wanda or sparsegpt"),
        (["--tokens", "100,200"], "whole number of search windows"),
        (["--survivors", "2,2"], "end at 1"),
        (["--sparsity_ratio", "1.5"], "sparsity"),
        (["--survivors", "two"], "comma-separated"),
    ]:
        assert cli.main(flags) == 2
        assert message in capsys.readouterr().err


def test_cli_searches_and_dlp_prune_applies_the_result(tiny_model_dir, text_file, tmp_path, monkeypatch, capsys):
    from dlp_lib.cli import evopress as cli, main as dlp_prune

    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "evo.json"
    flags = ["--model", str(tiny_model_dir), "--calibration", str(text_file), "--sparsity_ratio", "0.6"]
    flags += [
        "--nsamples",
        "2",
        "--seqlen",
        "16",
        "--search_windows",
        "4",
        "--window_seqlen",
        "16",
        "--num_levels",
        "2",
    ]
    flags += ["--generations", "2", "--offspring", "4", "--survivors", "2,1", "--tokens", "16,32", "--device", "cpu"]
    assert cli.main([*flags, "--quiet", "--save", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"--allocation evopress --evopress {out}" in printed
    saved = json.loads(out.read_text())
    assert saved["sparsity"] == 0.6 and len(saved["history"]) == 2
    record = tmp_path / "record.json"
    args = ["--model", str(tiny_model_dir), "--calibration", str(text_file), "--eval", str(text_file)]
    args += ["--nsamples", "2", "--seqlen", "16", "--eval_windows", "2", "--device", "cpu", "--quiet"]
    assert (
        dlp_prune(
            [
                *args,
                "--prune_method",
                "wanda",
                "--allocation",
                "evopress",
                "--evopress",
                str(out),
                "--save",
                str(record),
            ]
        )
        == 0
    )
    assert dlp_prune([*args, "--prune_method", "wanda", "--evopress", str(out)]) == 2
    assert "add --allocation evopress" in capsys.readouterr().err
