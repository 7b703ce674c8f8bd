"""The command line through its public entry point, ``dlp_lib.cli.main``, in-process on a tiny model."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dlp_lib import pipeline
from dlp_lib.cli import main
from dlp_lib.results import load_record


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own dlp_lib cache (windows, dense statistics), so no test reads another's."""
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))


def run_ok(args, capsys):
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_wanda_uniform_end_to_end(tiny_args, tmp_path, capsys):
    out_path = tmp_path / "out.json"
    out = run_ok([*tiny_args, "--prune_method", "wanda", "--sparsity_ratio", "0.5", "--save", str(out_path)], capsys)
    record = load_record(out_path)
    assert record is not None
    prune = record["config"]["prune"]
    assert (prune["method"], prune["allocation"], prune["sparsity"]) == ("wanda", "uniform", 0.5)
    # Wanda zeroes exactly int(d_in * 0.5) weights per row; every d_in of the tiny model is even.
    assert record["pruning"]["overall_achieved"] == 0.5
    assert record["pruning"]["block_achieved"] == [0.5, 0.5, 0.5]
    assert all(v == 0.5 for v in record["pruning"]["linear_achieved"].values())
    assert record["allocation"] is None
    ppl = record["perplexity"]
    assert math.isfinite(ppl["perplexity"]) and ppl["perplexity"] > 1
    assert ppl["windows"] == 4 and ppl["tokens"] == 4 * 32
    assert record["config"]["nsamples"] == 4 and record["config"]["seqlen"] == 32
    assert record["versions"]["torch"] and record["timings"]["total"] > 0
    # the human summary on stdout
    assert f"{ppl['perplexity']:.4f}" in out and "0.5000" in out and str(out_path) in out
    # no temporary files left beside the record
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["out.json"]


def test_wanda_dlp_sets_allocation_and_records_densities(tiny_args, tmp_path, capsys):
    out_path = tmp_path / "dlp.json"
    run_ok([*tiny_args, "--prune_method", "wanda_dlp", "--sparsity_ratio", "0.5", "--save", str(out_path)], capsys)
    record = load_record(out_path)
    assert record["config"]["prune"]["allocation"] == "dlp"
    assert record["config"]["prune"]["dlp_alpha"] == 0.15
    densities = record["allocation"]["densities"]
    assert len(densities) == 3
    assert sum(densities) / 3 == pytest.approx(0.5, abs=1e-9)  # all blocks have the same size
    assert max(densities) - min(densities) == pytest.approx(0.30, abs=1e-9)  # DLP's range is 2 * alpha
    assert record["pruning"]["block_targets"] == pytest.approx([1 - d for d in densities])
    # each block is pruned to its own target (to within one weight per row)
    for achieved, density in zip(record["pruning"]["block_achieved"], densities):
        assert achieved == pytest.approx(1 - density, abs=1 / 32)
    assert record["pruning"]["overall_achieved"] == pytest.approx(0.5, abs=0.01)


def test_explicit_allocation_flag_and_hyperparameters(tiny_args, tmp_path, capsys):
    out_path = tmp_path / "owl.json"
    args = [*tiny_args, "--prune_method", "magnitude", "--allocation", "owl", "--Lamda", "0.05", "--Hyper_m", "3",
            "--sparsity_ratio", "0.6", "--eval", "none", "--save", str(out_path)]  # fmt: skip
    run_ok(args, capsys)
    record = load_record(out_path)
    prune = record["config"]["prune"]
    assert (prune["method"], prune["allocation"], prune["owl_lambda"], prune["owl_m"]) == ("magnitude", "owl", 0.05, 3)
    assert "perplexity" not in record and record["config"]["eval"] is None
    assert sum(record["allocation"]["densities"]) / 3 == pytest.approx(0.4, abs=1e-9)


def test_perturbation_flags_are_recorded(tiny_args, tmp_path, capsys):
    out_path = tmp_path / "perturbed.json"
    args = [*tiny_args, "--prune_method", "wanda", "--perturb", "1e-6", "--perturb_seed", "3", "--eval", "none",
            "--save", str(out_path)]  # fmt: skip
    run_ok(args, capsys)
    prune = load_record(out_path)["config"]["prune"]
    assert (prune["perturb"], prune["perturb_seed"]) == (1e-6, 3)


def test_sparsegpt_arithmetic_flags_are_recorded_where_they_change_the_result(tiny_args, tmp_path, capsys):
    """--sparsegpt_hessian half is in the record's configuration (and so its key); the sweep, which changes
    no weight, only in what ran (``pruning.sparsegpt``); an fp32 model applies the fp32 Hessian either way."""
    out_path = tmp_path / "half.json"
    args = [*tiny_args, "--prune_method", "sparsegpt", "--sparsegpt_hessian", "half", "--sparsegpt_sweep", "torch",
            "--eval", "none", "--save", str(out_path)]  # fmt: skip
    run_ok(args, capsys)
    record = load_record(out_path)
    assert (
        record["config"]["prune"]["sparsegpt_hessian"] == "half" and "sparsegpt_sweep" not in record["config"]["prune"]
    )
    assert record["pruning"]["sparsegpt"] == {"sweep": ["torch"], "hessian": "fp32"}


def test_a_sparsegpt_loop_this_device_cannot_run_exits_2_before_loading(tiny_args, capsys, no_loading, monkeypatch):
    from dlp_lib import sparsegpt

    monkeypatch.setattr(sparsegpt.solver, "interpreted", lambda: False)
    assert main([*tiny_args, "--prune_method", "sparsegpt", "--sparsegpt_sweep", "triton"]) == 2
    assert "the Triton sweep runs on CUDA, not cpu; use --sparsegpt_sweep auto or torch" in capsys.readouterr().err
    monkeypatch.setenv("DLP_SPARSEGPT_HESSIAN", "tensor-cores")
    assert main([*tiny_args, "--prune_method", "sparsegpt"]) == 2
    assert "DLP_SPARSEGPT_HESSIAN is no longer read" in capsys.readouterr().err


def test_dense_records_no_pruning(tiny_args, tmp_path, capsys):
    out_dir = tmp_path / "records"
    run_ok([*tiny_args, "--prune_method", "dense", "--save", f"{out_dir}/"], capsys)
    (path,) = out_dir.glob("*.json")  # a directory (the papers' scripts pass one) gets <config hash>.json
    record = json.loads(path.read_text())
    assert record["config"]["prune"] is None
    assert "allocation" not in record
    assert record["pruning"]["overall_achieved"] < 0.01  # a random dense model has (almost) no exact zeros
    assert math.isfinite(record["perplexity"]["perplexity"])


def test_nm_uses_n_over_m_and_warns_on_a_differing_ratio(tiny_args, tmp_path, capsys, caplog):
    out_path = tmp_path / "nm.json"
    args = [*tiny_args, "--prune_method", "wanda", "--sparsity_type", "2:4", "--sparsity_ratio", "0.7",
            "--eval", "none", "--save", str(out_path)]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dlp_lib"):
        run_ok(args, capsys)
    assert any("ignoring --sparsity_ratio 0.7" in r.getMessage() for r in caplog.records)
    record = load_record(out_path)
    assert record["config"]["prune"]["sparsity"] == 0.5
    assert record["config"]["prune"]["sparsity_type"] == "2:4"
    assert record["pruning"]["overall_achieved"] == 0.5


def test_save_model_flag_writes_a_loadable_directory(tiny_args, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "pruned"
    run_ok([*tiny_args, "--prune_method", "magnitude", "--sparsity_ratio", "0.5", "--eval", "none",
            "--save_model", str(model_dir)], capsys)  # fmt: skip
    summary = json.loads((model_dir / "sparsity.json").read_text())
    assert summary["overall"] == pytest.approx(0.5, abs=1e-3)
    assert summary["pruning"]["method"] == "magnitude"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    weight = model.model.layers[0].mlp.down_proj.weight
    assert float((weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)


def test_failure_after_loading_exits_2_and_writes_nothing(tiny_args, tmp_path, capsys):
    """DLP's range 2 * 0.9 does not fit around density 0.5: found after the dense statistics."""
    out_path = tmp_path / "dlp.json"
    status = main([*tiny_args, "--prune_method", "wanda_dlp", "--alpha", "0.9", "--save", str(out_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert "clip" in err and len(err.strip().splitlines()) == 1
    assert not out_path.exists()


def test_crash_midway_leaves_no_record(tiny_args, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(pipeline, "perplexity", broken)
    out_path = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        main([*tiny_args, "--prune_method", "magnitude", "--save", str(out_path)])
    assert list(tmp_path.glob("*out.json*")) == []


# ------------------------------------------------------------------------------ invalid settings
BAD = {
    "sparsity 1": (["--sparsity_ratio", "1.0"], "[0, 1)"),
    "negative sparsity": (["--sparsity_ratio", "-0.1"], "[0, 1)"),
    "nm sparsity out of range": (["--sparsity_type", "2:4", "--sparsity_ratio", "1.5"], "[0, 1)"),
    "unknown method": (["--prune_method", "wandaa"], "unknown prune method"),
    "unknown compound": (["--prune_method", "wanda_foo"], "unknown prune method"),
    "N equals M": (["--sparsity_type", "4:4"], "0 < N < M"),
    "N above M": (["--sparsity_type", "4:2"], "0 < N < M"),
    "bad sparsity type": (["--sparsity_type", "structured"], "unstructured"),
    "unknown allocation": (["--allocation", "greedy"], "unknown allocation"),
    "conflicting allocation": (["--prune_method", "wanda_owl", "--allocation", "dlp"], "conflicts"),
    "allocation with dense": (["--prune_method", "dense", "--allocation", "dlp"], "needs a pruning method"),
    "bad dtype": (["--dtype", "float8"], "unknown dtype"),
    "bad dlp statistic": (["--dlp_statistic", "mode"], "dlp_statistic"),
    "bad dsa graph": (["--prune_method", "wanda_owl_search", "--graph_string", "nonsense"], "DSA expression"),
    "zero nsamples": (["--nsamples", "0"], "nsamples must be positive"),
    "short seqlen": (["--seqlen", "1"], "seqlen"),
    "bad eval windows": (["--eval_windows", "0"], "eval_windows"),
    "bad device": (["--device", "gpu0"], "unknown device"),
    "variant with N:M": (["--use_variant", "--sparsity_type", "2:4"], "use_variant"),
    "perturbing magnitude": (["--prune_method", "magnitude", "--perturb", "1e-6"], "nothing to perturb"),
    "perturbation too large": (["--perturb", "0.5"], "float-level noise"),
}


def test_keeps_freed_memory_in_the_heap_only_for_a_valid_run(tiny_args, tmp_path, capsys, monkeypatch):
    """The Makefile's MALLOC_* settings, applied by the command itself once its settings are valid."""
    from dlp_lib import heap

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main([*tiny_args, "--eval_windows", "0"]) == 2
    assert calls == []
    run_ok([*tiny_args, "--prune_method", "dense"], capsys)
    assert calls == [1]


@pytest.mark.parametrize("flags, expected", BAD.values(), ids=BAD.keys())
def test_invalid_settings_exit_2_before_loading(flags, expected, tiny_args, tmp_path, capsys, no_loading):
    out_path = tmp_path / "out.json"
    status = main([*tiny_args, *flags, "--save", str(out_path)])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlp-prune: error: ")
    assert expected in lines[0]
    assert captured.out == ""
    assert not out_path.exists()


def test_invalid_model_and_data_exit_2_before_loading(tmp_path, text_file, capsys, no_loading):
    out_path = tmp_path / "out.json"
    not_a_model = tmp_path / "empty-dir"
    not_a_model.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    base = ["--device", "cpu", "--save", str(out_path)]
    cases = [
        (["--model", str(tmp_path / "missing-model")], "unknown model"),
        (["--model", "not a model"], "unknown model"),
        (["--model", str(tmp_path / "missing.gguf")], "GGUF file not found"),
        (["--model", str(not_a_model)], "no config.json"),
        (["--calibration", str(tmp_path / "missing.txt")], "unknown data source"),
        (["--calibration", f"c4:{tmp_path / 'missing.json.gz'}"], "data file not found"),
        (["--eval", str(tmp_path / "missing.txt")], "unknown data source"),
        (["--calibration", str(text_file), "--eval", "none", "--save_model", str(foreign)], "not a directory written"),
    ]
    for flags, expected in cases:
        status = main([*base, *flags])
        err = capsys.readouterr().err
        assert status == 2, flags
        assert len(err.strip().splitlines()) == 1 and expected in err, (flags, err)
    assert not out_path.exists()
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_argparse_errors_exit_2(capsys, no_loading):
    assert main(["--nsamples", "many"]) == 2
    assert "invalid int value" in capsys.readouterr().err
    assert main(["--no_such_flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_help_in_process(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--prune_method", "--sparsity_ratio", "--sparsity_type", "--Lamda", "--Hyper_m", "--alpha",
                 "--graph_string", "--save_model", "--calibration", "--eval_windows"):  # fmt: skip
        assert flag in out


def test_python_m_dlp_lib_help():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "dlp_lib", "--help"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: dlp-prune")
    assert "--prune_method" in result.stdout and "--sparsity_ratio" in result.stdout


# ------------------------------------------------------------------------------- the two commands agree
def _options(parser) -> dict:
    return {opt: action for action in parser._actions for opt in action.option_strings}


def test_every_flag_both_commands_take_means_the_same_and_defaults_alike():
    from dlp_lib.cli import prune, search

    prune_flags, search_flags = _options(prune.build_parser()), _options(search.build_parser())
    shared = set(prune_flags) & set(search_flags) - {"-h", "--help"}
    assert {"--model", "--prune_method", "--sparsity_ratio", "--Lamda", "--calibration", "--nsamples", "--seqlen",
            "--seed", "--batch_size", "--sparsegpt_sweep", "--save", "--quiet"} <= shared  # fmt: skip
    for flag in shared:
        a, b = prune_flags[flag], search_flags[flag]
        assert (a.dest, a.default, a.type, a.choices) == (b.dest, b.default, b.type, b.choices), flag
        if flag != "--save":  # what --save writes is each command's own
            assert a.help == b.help, flag


def test_search_seeds_calibration_with_seed_and_evolution_with_search_seed():
    from dlp_lib.cli import search

    parser = search.build_parser()
    fitness, config, _ = search.build_settings(parser.parse_args(["--seed", "3", "--search_seed", "5"]))
    assert (fitness.seed, config.seed) == (3, 5)
    fitness, _, _ = search.build_settings(parser.parse_args(["--calibration_seed", "4"]))  # the former name
    assert fitness.seed == 4
    fitness, _, _ = search.build_settings(parser.parse_args([]))
    assert fitness.sparsity == prune_defaults_sparsity()


def prune_defaults_sparsity() -> float:
    from dlp_lib.cli import DEFAULT_SPARSITY, build_parser, build_prune_config

    config = build_prune_config(build_parser().parse_args([]))
    assert config.sparsity == DEFAULT_SPARSITY
    return config.sparsity


def test_former_module_of_dlp_search_still_runs_it():
    from dlp_lib import search_cli
    from dlp_lib.cli import search

    assert search_cli.main is search.main
