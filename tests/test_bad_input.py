"""The bad-input battery: every case gives one clear line that says what to do, before the work it
would waste; on the command line exit status 2, no traceback, and no file written (neither the
outputs nor the cache). ``tests/test_cli.py`` and ``tests/test_config.py`` hold more refusals."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import files_under, refused

from dlp_lib import experiments, hub, pipeline, preflight
from dlp_lib.cli import main
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.data import calibration_windows, evaluation_windows
from dlp_lib.models import load_model
from dlp_lib.pipeline import RunConfig
from dlp_lib.prune import prune_model

ROOT = Path(__file__).resolve().parents[1]
NO_NETWORK = "no network (test)"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """The hub unreachable and its cache empty, whatever this machine's network."""
    monkeypatch.setattr(hub, "unreachable", lambda timeout=hub.TIMEOUT_SECONDS: NO_NETWORK)
    monkeypatch.setattr(hub, "model_in_cache", lambda repo_id: False)


# ------------------------------------------------------------------------- CLI: refused before loading
BEFORE_LOADING = {
    "record under /proc": (["--save", "/proc/nope/rec.json"], "does not accept new files"),
    "model under /proc": (["--save_model", "/proc/nope/model"], "does not accept new files"),
    "record under a file": (["--save", "{tmp}/a-file/rec.json"], "is a file"),
    "model under a file": (["--save_model", "{tmp}/a-file/model"], "is a file, not a directory"),
    "sparsegpt 2:5 blocksize": (["--prune_method", "sparsegpt", "--sparsity_type", "2:5"], "pass --blocksize 125"),
    "blocksize 0": (["--prune_method", "sparsegpt", "--blocksize", "0"], "blocksize must be positive"),
    "percdamp 1.5": (["--prune_method", "sparsegpt", "--percdamp", "1.5"], "percdamp must be in [0, 1)"),
    "negative Lamda": (["--prune_method", "wanda_owl", "--Lamda", "-1"], "owl_lambda must be >= 0"),
    "Hyper_m 0": (["--prune_method", "wanda_owl", "--Hyper_m", "0"], "owl_m"),
    "batch size 0": (["--batch_size", "0"], "batch_size must be positive"),
    "eval batch size 0": (["--eval_batch_size", "0"], "eval_batch_size must be positive"),
    "negative lora steps": (["--lora_steps", "-1"], "--lora_steps must be >= 0"),
    "lora with dense": (["--prune_method", "dense", "--lora_steps", "2"], "needs a pruned model"),
    "lora with offload": (["--lora_steps", "2", "--offload"], "drop --offload"),
    "unknown zero-shot task": (["--eval_zero_shot", "--tasks", "nosuchtask"], "nosuchtask"),
    "zero-shot limit 0": (["--eval_zero_shot", "--limit", "0"], "zero_shot_limit must be positive"),
    "zero-shot with offload": (["--eval_zero_shot", "--offload"], "drop --offload"),
    "unknown device map": (["--device_map", "everywhere"], "unknown device_map"),
    "offload and device map": (["--offload", "--device_map", "auto"], "either --offload"),
    "unsupported data file": (["--calibration", "{tmp}/a-file"], "unsupported data file"),
    "empty c4 path": (["--calibration", "c4:"], "give a file after the colon"),
    "atp without beta": (["--allocation", "atp"], "needs its slope: --atp_beta"),
    "negative atp beta": (["--allocation", "atp", "--atp_beta", "-0.01"], "atp_beta must be >= 0"),
    "alpha epsilon 1.5": (
        ["--allocation", "alphapruning", "--alpha_epsilon", "1.5"],
        "alpha_epsilon must be in [0, 1]",
    ),
    "unknown alpha estimator": (
        ["--allocation", "alphapruning", "--alpha_estimator", "xmin_max"],
        "unknown alpha_estimator",
    ),
    "lsa beta 0.5": (["--allocation", "lsa", "--lsa_beta", "0.5"], "lsa_beta must be in [0, 0.5)"),
    "lsa at 90%": (["--allocation", "lsa", "--sparsity_ratio", "0.9"], "no beta at sparsity 0.9"),
    "lsa fraction 0.001": (["--allocation", "lsa", "--lsa_fraction", "0.001"], "remove at least one of 128"),
    "ria reallocation unstructured": (["--prune_method", "ria", "--ria_reallocation"], "with an N:M pattern only"),
    "negative ria exponent": (["--prune_method", "ria", "--ria_a", "-1"], "ria_a must be >= 0"),
}


@pytest.mark.parametrize("flags, expected", BEFORE_LOADING.values(), ids=BEFORE_LOADING.keys())
def test_refused_before_loading(flags, expected, tiny_args, tmp_path, capsys, no_loading):
    (tmp_path / "a-file").write_text("not a directory, not a data file")
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert expected in refused([*tiny_args, *flags], capsys, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(tiny_args, tmp_path, capsys, no_loading):
    assert "CUDA is not available" in refused([*tiny_args, "--device", "cuda"], capsys, tmp_path)


HUB = {
    "hub model": (["--model", "meta-llama/Llama-2-7b-hf"], "cannot reach the Hugging Face hub"),
    "c4 calibration": (["--calibration", "c4"], "give a local copy (c4:/path/c4-train.00000-of-01024.json.gz)"),
    "wikitext2 evaluation": (["--eval", "wikitext2"], "give a local copy (wikitext2:/path/test.parquet)"),
    "hub zero-shot tasks": (
        ["--eval_zero_shot", "--zero_shot_source", "hub"],
        "use the shipped task data (--zero_shot_source local)",
    ),
}


@pytest.mark.parametrize("flags, expected", HUB.values(), ids=HUB.keys())
def test_hub_sources_without_network(flags, expected, tiny_args, tmp_path, capsys, no_loading, no_network):
    line = refused([*tiny_args, *flags], capsys, tmp_path)
    assert expected in line and NO_NETWORK in line


def test_hub_model_in_offline_mode(tiny_args, tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "model_in_cache", lambda repo_id: False)
    line = refused([*tiny_args, "--model", "org/not-cached"], capsys, tmp_path)
    assert "offline mode (HF_HUB_OFFLINE)" in line


# ------------------------------------------------------- CLI: refused once the model is known, before work
@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if calibration data is read or pruning starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the model-dependent checks")

    monkeypatch.setattr(pipeline, "calibration_windows", refuse)
    monkeypatch.setattr(pipeline, "prune_model", refuse)


AFTER_LOADING = {
    # the tiny model has 256 positions and linears of input size 32 and 64
    "seqlen beyond positions": (["--seqlen", "100000", "--nsamples", "2"], "longer than the model's 256 positions"),
    "wanda 2:5": (["--prune_method", "wanda", "--sparsity_type", "2:5"], "multiple of M=5; this model's are 32, 64"),
    "lora seqlen beyond positions": (
        ["--lora_steps", "2", "--lora_data", "wiki-extracts", "--lora_seqlen", "4096"],
        "256 positions",
    ),
    "unknown lora target": (["--lora_steps", "2", "--lora_data", "wiki-extracts", "--lora_targets", "w_qkv"], "w_qkv"),
    # 3 blocks at 50%: ATP's steepest beta is 0.5
    "atp beta too steep": (["--allocation", "atp", "--atp_beta", "0.6"], "beta must be below 0.5"),
    # factors in [0, 2] over 3 blocks: the sparsest block gets 0.9 x 2 / (2 x mean) > 1
    "alphapruning epsilon too wide": (
        ["--allocation", "alphapruning", "--alpha_epsilon", "1", "--sparsity_ratio", "0.9"],
        "use an epsilon below",
    ),
    "lsa group leaves a narrow last group": (["--allocation", "lsa", "--lsa_group", "24"], "narrower than the 12"),
}


@pytest.mark.parametrize("flags, expected", AFTER_LOADING.values(), ids=AFTER_LOADING.keys())
def test_refused_after_loading_before_work(flags, expected, tiny_args, tmp_path, capsys, no_work):
    out = tmp_path / "out" / "rec.json"
    spectra = "alphapruning" in flags  # its exponents are computed (and cached, as statistics are) to judge epsilon
    line = refused([*tiny_args, *flags, "--save", str(out)], capsys, tmp_path, cache_allowed=spectra)
    assert expected in line
    if spectra:
        assert list((tmp_path / "cache" / "alpha_hill").glob("*.pt"))
    if "2:5" in flags:
        assert "blocksize" not in line  # the old message blamed a SparseGPT setting never given


def test_infeasible_alpha_says_the_statistics_were_kept(tiny_args, tmp_path, capsys):
    flags = ["--prune_method", "wanda_dlp", "--sparsity_ratio", "0.8", "--alpha", "0.4"]  # density 0.2 +- 0.4
    status = main([*tiny_args, *flags, "--save", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "--clip_densities" in err and "dense statistics are cached" in err
    assert not (tmp_path / "r.json").exists()
    assert list((tmp_path / "cache" / "dense_stats").glob("*.pt"))  # kept, as it says


# ---------------------------------------------------------------------------------- library entry points
def test_library_entry_points(tiny_model_dir, text_file, embedded_tokenizer):
    model = load_model(str(tiny_model_dir))[0]
    too_long = RunConfig(model=str(tiny_model_dir), calibration="wiki-extracts", seqlen=512, eval=None)
    cases = [
        (lambda: PruneConfig(sparsity=1.0), "sparsity must be in [0, 1)"),
        (lambda: PruneConfig(method="wanda", sparsity_type="2:2"), "0 < N < M"),
        (lambda: RunConfig(nsamples=0), "nsamples must be positive"),
        (lambda: RunConfig(seqlen=1), "seqlen must be >= 2"),
        (lambda: prune_model(model, PruneConfig("wanda")), "wanda needs calibration windows"),
        (lambda: prune_model(model, PruneConfig("magnitude"), block_sparsities=[0.5]), "3 blocks"),
        (lambda: prune_model(model, PruneConfig("magnitude"), block_sparsities=[0.5, 1.0, 0.5]), "[0, 1)"),
        (lambda: load_model("/no/such/model"), "unknown model"),
        (lambda: load_model(str(text_file)), "is a file; give a model directory"),
        (lambda: calibration_windows("/no/such.txt", embedded_tokenizer), "unknown data source"),
        (lambda: calibration_windows(str(text_file), embedded_tokenizer, nsamples=0), "nsamples > 0"),
        (lambda: evaluation_windows(str(text_file), embedded_tokenizer, seqlen=64, count=10**6), "the source has"),
        (lambda: pipeline.run(too_long), "256 positions"),
    ]
    for call, expected in cases:
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert expected in message and "\n" not in message, message


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="gpt2"):
        load_model(str(tmp_path / "gpt2"))


# ------------------------------------------------------------------------------- notebook parameters
def test_profile_parameters():
    with pytest.raises(ConfigError, match="unknown profile 'fast'; use one of smoke, quick, paper"):
        experiments.profile("fast")
    with pytest.raises(ConfigError, match="unknown profile setting 'modle'"):
        experiments.profile("quick", modle="x")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--profile", "quick", "--model", "meta-llama/Llama-2-7b-hf"], "cannot reach the Hugging Face hub"),
        (["--profile", "paper"], "cannot reach the Hugging Face hub"),
        (["--profile", "quick", "--model", "./no-such-dir"], "unknown model"),
        (["--profile", "quick", "--outputs", "/proc/nope"], "does not accept new files"),
        (["--profile", "quick", "--sparsegpt_hessian", "tf32"], "unknown sparsegpt_hessian 'tf32'"),
        (["--profile", "quick", "--sparsegpt_sweep", "cuda-graph"], "unknown sparsegpt_sweep 'cuda-graph'"),
    ],
)
def test_preflight_refuses_in_one_line(argv, expected, capsys, no_network):
    assert preflight.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("make reproduce: error: ") and expected in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""


def test_preflight_accepts_the_default_profile(tmp_path, capsys):
    assert preflight.main(["--profile", "quick", "--outputs", str(tmp_path / "new" / "tables")]) == 0
    assert preflight.main(["--profile", "quick", "--sparsegpt_hessian", "fp32", "--sparsegpt_sweep", "torch"]) == 0
    assert "ready" in capsys.readouterr().out
    assert not (tmp_path / "new").exists()  # probed, not created


def test_make_reproduce_with_an_unknown_profile(tmp_path):
    """Through make: the preflight stops it before any notebook runs."""
    venv = ROOT / ".venv"
    if not (venv / ".installed").is_file():
        pytest.skip("needs the project's .venv (make venv)")
    result = subprocess.run(
        ["make", "-C", str(ROOT), "-o", f"{venv}/.installed", "reproduce", "PROFILE=nope", f"EXECUTED={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "make reproduce: error: unknown profile 'nope'; use one of smoke, quick, paper" in result.stderr
    assert "papermill" not in result.stdout and not list(tmp_path.glob("*.ipynb"))


def test_search_output_checked_before_work(tmp_path, capsys, monkeypatch):
    from dlp_lib import search
    from dlp_lib.cli import search as search_cli

    def refuse(*args, **kwargs):
        raise AssertionError("the search started before its output path was checked")

    monkeypatch.setattr(search, "ProxyFitness", refuse)
    assert search_cli.main(["--save", "/proc/nope/search.json", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dlp-search: error: ") and "does not accept new files" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- round two: the configuration objects
# Every configuration object refuses a value it cannot use, the same way for the commands, the grid and
# the Python API: NaN and infinities (which pass any `< 0` test), fractions and strings where a count
# belongs, bools, devices this library does not run on, DSA expressions with anything outside the grammar.
NAN, INF = float("nan"), float("inf")


def _bad_configs():
    from dlp_lib.recovery import RecoveryConfig
    from dlp_lib.search import FitnessSettings, SearchConfig

    cases = []
    for name, values in {
        "sparsity": [NAN, INF, -INF, 1.0, -0.1, "0.5", True, None],
        "owl_lambda": [NAN, INF, -0.01, "0.08"],
        "owl_m": [NAN, INF, 0.0, -1.0],
        "dlp_alpha": [NAN, INF, -0.1],
        "dsa_lambda": [NAN, INF, -1.0],
        "percdamp": [NAN, INF, 1.0, -0.1],
        "blocksize": [0, -128, 2.5, "128", True, NAN],
        "perturb": [NAN, INF, 1.0, -1e-6],
        "perturb_seed": [-1, 1.5],
        "method": ["sparse", "", None],
        "allocation": ["dsa_search", None],
        "sparsity_type": ["2:2", "4:2", "0:4", "2/4", "N:M"],
        "dlp_statistic": ["max"],
        "sparsegpt_sweep": ["cuda"],
        "sparsegpt_hessian": ["bf16"],
        "dsa_graph": [
            "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(",
            "W:(SIGMOID)junk(MEAN)junk()-(banana",
            "W:(ABS,,POW)-(MEAN)-()",
        ],
    }.items():
        cases += [(PruneConfig, {"allocation": "dsa", name: v} if name == "dsa_graph" else {name: v}) for v in values]
    for name, values in {
        "nsamples": [0, -1, 2.5, "8", True, NAN],
        "seqlen": [1, 0, 2.5, INF],
        "seed": [-1, 0.5, "0"],
        "eval_windows": [0, 2.5, -3],
        "batch_size": [0, 1.5],
        "eval_batch_size": [0, NAN],
        "device": ["tpu", "cuda:x", "", None, "gpu", "cuda:"],
        "zero_shot_limit": [0, 2.5],
        "zero_shot_batch_size": [0, 1.5],
    }.items():
        extra = {"zero_shot_tasks": ("boolq",)} if name.startswith("zero_shot") else {}
        cases += [(RunConfig, {**extra, name: v}) for v in values]
    for name, values in {
        "steps": [INF, -1, 2.5, NAN],
        "rank": [0, 2.5, NAN, "8"],
        "alpha": [0.0, NAN, INF],
        "dropout": [1.0, NAN, -0.1],
        "lr": [0.0, NAN, INF, -1e-4],
        "warmup_steps": [2.5, -1],
        "batch_tokens": [0, 1.5],
        "micro_batch": [0, 1.5],
        "heldout_windows": [-1, 0.5],
        "eval_every": [1.5, -1],
        "weight_decay": [NAN, -1.0],
        "max_grad_norm": [INF, -1.0],
        "seqlen": [1, 2.5],
        "seed": [-1, 1.5],
    }.items():
        cases += [(RecoveryConfig, {name: v}) for v in values]
    for name, values in {
        "population": [1, 10**6, 2.5, NAN],
        "generations": [0, 10**6, 1.5],
        "elite": [-1, 16, 0.5],
        "tournament": [0, 17, 1.5],
        "crossover": [NAN, 1.5, -0.1],
        "mutation": [INF, -0.1],
        "max_pre": [-1, 9, 1.5],
        "max_post": [-1, 1.5],
        "seed": [-1, 0.5],
        "initial": [("W:(SIGMOID)junk(MEAN)junk()-(banana",)],
    }.items():
        cases += [(SearchConfig, {name: v}) for v in values]
    for name, values in {"nsamples": [0, 2.5], "windows": [0, 1.5], "seqlen": [1, 2.5], "device": ["tpu"]}.items():
        cases += [(FitnessSettings, {name: v}) for v in values]
    return cases


BAD_CONFIGS = _bad_configs()


@pytest.mark.parametrize(
    "cls, kwargs",
    BAD_CONFIGS,
    ids=[f"{cls.__name__}-{list(kw)[-1]}={list(kw.values())[-1]!r}" for cls, kw in BAD_CONFIGS],
)
def test_configuration_objects_refuse_what_they_cannot_use(cls, kwargs):
    with pytest.raises(ConfigError) as caught:
        cls(**kwargs)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    shown = list(kwargs)[-1]  # the setting under test
    assert shown.split("_")[0] in message.lower() or "dsa expression" in message.lower() or "device" in message, message


def test_the_battery_is_large():
    assert len(BAD_CONFIGS) >= 150


# ------------------------------------------------------------- round two: files, commands and sizes
@pytest.fixture
def bad_files(tmp_path, tiny_model_dir):
    """Files a user might hand over by mistake, each made before the command runs."""
    import json
    import shutil

    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "binary.jsonl").write_bytes(b"\x00\x01{not text" * 100)
    (tmp_path / "fake.parquet").write_text("text\nnot a parquet file\n")
    (tmp_path / "fake.json.gz").write_text('{"text": "not gzipped"}\n')
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 a zip, not a gguf")
    (tmp_path / "empty.txt").write_text("")
    for name in ("bert", "broken-config", "random-weights", "truncated"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (tmp_path / "bert" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    (tmp_path / "broken-config" / "config.json").write_text('{"model_type": "llama", ')
    (tmp_path / "random-weights" / "model.safetensors").write_bytes(
        torch.randint(0, 255, (4096,)).byte().numpy().tobytes()
    )
    weights = (tmp_path / "truncated" / "model.safetensors").read_bytes()
    (tmp_path / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    return tmp_path


ROUND_TWO = {
    "Lamda nan": (["--prune_method", "wanda_owl", "--Lamda", "nan"], "owl_lambda must be a finite number"),
    "Lamda inf": (["--prune_method", "wanda_owl", "--Lamda", "inf"], "owl_lambda must be a finite number"),
    "alpha nan": (["--prune_method", "wanda_dlp", "--alpha", "nan"], "dlp_alpha must be a finite number"),
    "Hyper_m inf": (["--prune_method", "wanda_owl", "--Hyper_m", "inf"], "owl_m must be a finite number"),
    "sparsity nan": (["--sparsity_ratio", "nan"], "--sparsity_ratio must be in [0, 1)"),
    "percdamp nan": (["--prune_method", "sparsegpt", "--percdamp", "nan"], "percdamp must be a finite number"),
    "device tpu": (["--device", "tpu"], "unknown device 'tpu'"),
    "dsa junk": (
        ["--allocation", "dsa", "--dsa_graph", "W:(SIGMOID)junk(MEAN)junk()-(banana"],
        "expected '-' or the end at character 12, found 'j'",
    ),
    "dsa unclosed": (["--allocation", "dsa", "--dsa_graph", "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-("], "character 31"),
    "dsa without an expression": (["--allocation", "dsa"], "--allocation dsa needs --dsa_graph"),
    "binary calibration": (["--calibration", "{tmp}/binary.txt"], "is not UTF-8 text"),
    "binary evaluation": (["--eval", "{tmp}/binary.jsonl"], "is not UTF-8 text"),
    "fake parquet": (["--eval", "{tmp}/fake.parquet"], "is not a parquet file"),
    "fake gzip": (["--calibration", "{tmp}/fake.json.gz"], "is not a gzip file"),
    "fake gguf": (["--model", "{tmp}/fake.gguf"], "is not a GGUF file"),
    "unknown model_type": (["--model", "{tmp}/bert"], "holds a 'bert' model"),
    "broken config.json": (["--model", "{tmp}/broken-config"], "is not a readable JSON file"),
    "random-bytes safetensors": (["--model", "{tmp}/random-weights"], "is not a complete safetensors file"),
    "truncated safetensors": (["--model", "{tmp}/truncated"], "is not a complete safetensors file"),
}


@pytest.mark.parametrize("flags, expected", ROUND_TWO.values(), ids=ROUND_TWO.keys())
def test_round_two_refused_before_loading(flags, expected, tiny_args, bad_files, capsys, no_loading):
    flags = [f.format(tmp=bad_files) for f in flags]
    assert expected in refused([*tiny_args, *flags], capsys, bad_files)


@pytest.mark.parametrize("cache", ["{tmp}/a-file", "/proc/dlp-cache"], ids=["a file", "read-only"])
def test_an_unusable_cache_folder_is_refused_before_loading(
    cache, tiny_args, tmp_path, capsys, no_loading, monkeypatch
):
    (tmp_path / "a-file").write_text("a file")
    monkeypatch.setenv("DLP_CACHE_DIR", cache.format(tmp=tmp_path))
    line = refused(tiny_args, capsys, tmp_path)
    assert "DLP_CACHE_DIR" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_map_without_a_gpu(tiny_args, tmp_path, capsys, no_loading):
    assert "this machine has none" in refused([*tiny_args, "--device_map", "auto"], capsys, tmp_path)


ROUND_TWO_AFTER_LOADING = {
    # the tiny model's linears are 32 and 64 wide; its text for LoRA is the embedded calibration side
    "lora rank beyond the widths": (
        ["--lora_steps", "2", "--lora_data", "wiki-extracts", "--lora_rank", "100000"],
        "exceeds the narrowest side of the targeted linears (16)",  # k_proj/v_proj: 2 KV heads of 8
    ),
    "empty lora data": (["--lora_steps", "2", "--lora_data", "{tmp}/empty.txt"], "fewer than one window"),
    "lora heldout beyond the text": (
        ["--lora_steps", "2", "--lora_data", "wiki-extracts", "--lora_heldout", "1000000"],
        "not more than the 1000000 held out",
    ),
    "calibration beyond memory": (["--nsamples", "100000000"], "calibration windows of 32 tokens need about"),
}


@pytest.mark.parametrize("flags, expected", ROUND_TWO_AFTER_LOADING.values(), ids=ROUND_TWO_AFTER_LOADING.keys())
def test_round_two_refused_after_loading_before_pruning(flags, expected, tiny_args, bad_files, capsys, no_work):
    flags = [f.format(tmp=bad_files) for f in flags]
    line = refused([*tiny_args, *flags, "--save", str(bad_files / "out" / "rec.json")], capsys, bad_files, True)
    assert expected in line


def test_search_refuses_a_window_beyond_the_models_positions(tiny_model_dir, text_file, capsys):
    from dlp_lib.cli import search as search_cli

    argv = ["--model", str(tiny_model_dir), "--calibration", str(text_file), "--seqlen", "100000", "--quiet"]
    assert search_cli.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # no loading bars
    assert len(errors) == 1 and "longer than the model's 256 positions" in errors[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--max_pre", "0", "--max_post", "0", "--population", "10", "--initial", "W:()-(MEAN)-()"],
            "holds 7 expressions",
        ),
        (["--population", "1000000"], "population must be in [2, 1000]"),
        (["--generations", "1000000"], "generations must be in [1, 10000]"),
        (["--initial", "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-("], "character 31"),
        (["--sparsity_ratio", "nan"], "sparsity must be a finite number"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_search_settings_refused_before_loading(argv, expected, capsys, monkeypatch):
    from dlp_lib import search
    from dlp_lib.cli import search as search_cli

    monkeypatch.setattr(search, "ProxyFitness", lambda *a, **k: pytest.fail("the search started"))
    assert search_cli.main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "argv, expected",
    [(["--params=-7e9"], "--params is the model's parameter count"), (["--params", "nan"], "--params"),
     (["--results", "{tmp}/a-file"], "is a file")],
)  # fmt: skip
def test_grid_refuses_a_negative_size_and_a_file_for_records(argv, expected, tmp_path, capsys):
    from dlp_lib import grid

    (tmp_path / "a-file").write_text("a file")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert grid.main(["--profile", "smoke", "--dry-run", *argv]) == 2
    assert expected in capsys.readouterr().err


# --------------------------------------------------------------------------------------- round three
# The third battery's entry points: places checked before the work (the grid's job folder, the
# rehearsal's folder), arguments accepted and wrong (a --help that wrote a folder, a width that makes
# every candidate invalid, a method name where a configuration belongs), a search that could only fail.
def one_error_line(capsys, prog: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [(["--logs", "{tmp}/a-file/logs"], "is a file"), (["--logs", "{tmp}/a-file"], "is a file; give --logs"),
     (["--logs", "/proc/nope/logs"], "does not accept new files"), (["--results", "/proc/nope"], "does not accept"),
     (["--parallel", "0"], "--parallel must be at least 1"), (["--cpus", "0"], "--cpus must be at least 1"),
     (["--mem", "-4"], "--mem is memory per job in GB")],
)  # fmt: skip
@pytest.mark.parametrize("dry_run", [True, False])
def test_grid_checks_its_places_and_sizes_before_planning(argv, expected, dry_run, tmp_path, capsys, monkeypatch):
    from dlp_lib import grid
    from dlp_lib.grid import command

    monkeypatch.setattr(command, "plan", lambda *a, **k: pytest.fail("the grid planned its jobs"))
    (tmp_path / "a-file").write_text("a file")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert grid.main(["--profile", "smoke", *(["--dry-run"] if dry_run else []), *argv]) == 2
    assert expected in one_error_line(capsys, "python -m dlp_lib.grid")
    assert (tmp_path / "a-file").read_text() == "a file"


def test_rehearsal_folder_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    from dlp_lib import rehearsal

    (tmp_path / "notes").write_text("mine")
    monkeypatch.setenv(rehearsal.DIR_ENV, str(tmp_path / "notes"))
    with pytest.raises(ConfigError, match=f"is a file; point {rehearsal.DIR_ENV} at a directory"):
        rehearsal.require_built()
    with pytest.raises(ConfigError, match="is a file"):
        preflight.check("rehearsal")
    assert rehearsal.main([]) == 2
    assert "is a file" in one_error_line(capsys, "python -m dlp_lib.rehearsal")
    assert (tmp_path / "notes").read_text() == "mine"


def test_rehearsal_never_replaces_a_users_files(tmp_path, capsys, monkeypatch):
    from dlp_lib import rehearsal

    monkeypatch.setattr(rehearsal, "write_c4", lambda path: pytest.fail("the rehearsal started writing"))
    (tmp_path / rehearsal.MODEL_DIR).mkdir()
    (tmp_path / rehearsal.MODEL_DIR / "my-weights.bin").write_bytes(b"\0" * 8)
    assert rehearsal.main([str(tmp_path)]) == 2
    assert "not written by the rehearsal" in one_error_line(capsys, "python -m dlp_lib.rehearsal")
    assert files_under(tmp_path) == {rehearsal.MODEL_DIR, f"{rehearsal.MODEL_DIR}/my-weights.bin"}


def test_rehearsal_rebuild_replaces_only_its_own_files(tmp_path, monkeypatch):
    """A folder the rehearsal claimed (its manifest) may be rebuilt; an interrupted build is not complete."""
    from dlp_lib import rehearsal

    written = []
    for name in ("write_c4", "write_wikitext2", "write_zero_shot", "write_model"):
        monkeypatch.setattr(rehearsal, name, lambda path, name=name: written.append(name))
    monkeypatch.setattr(rehearsal, "write_zero_shot", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        rehearsal.build_assets(tmp_path)
    assert not rehearsal.is_built(tmp_path) and (tmp_path / rehearsal.MANIFEST).is_file()
    (tmp_path / rehearsal.C4_FILE).parent.mkdir(parents=True)
    (tmp_path / rehearsal.C4_FILE).write_text("from the interrupted build")
    monkeypatch.setattr(rehearsal, "write_zero_shot", lambda path: written.append("write_zero_shot"))
    rehearsal.build_assets(tmp_path)  # the manifest says these files are the rehearsal's own
    assert written == ["write_c4", "write_wikitext2", "write_c4", "write_wikitext2", "write_zero_shot", "write_model"]


def test_zeroshot_builder_has_a_help_and_checks_its_folder(tmp_path, capsys, monkeypatch):
    from dlp_lib.zeroshot import __main__ as zeroshot_main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        zeroshot_main.main(["--help"])
    assert stop.value.code == 0 and "cache_dir" in capsys.readouterr().out
    assert files_under(tmp_path) == set()  # no folder named --help
    (tmp_path / "a-file").write_text("a file")
    assert zeroshot_main.main([str(tmp_path / "a-file")]) == 2
    assert "is a file" in one_error_line(capsys, "python -m dlp_lib.zeroshot")


@pytest.mark.parametrize(
    "overrides, expected",
    [({"allocation": "dsa", "dsa_lambda": 5.0}, r"dsa_lambda \(--Lamda\) = 5 spreads the block densities over 10"),
     ({"allocation": "owl", "owl_lambda": 0.5}, r"owl_lambda \(--Lamda\) = 0.5"),
     ({"allocation": "dlp", "dlp_alpha": 0.7}, r"dlp_alpha \(--alpha\) = 0.7")],
)  # fmt: skip
def test_a_width_no_model_allows_is_refused_before_loading(overrides, expected):
    """The template spreads densities over exactly 2 x width, so a width of 0.5 or more leaves (0, 1] on
    some block of any model; clipping was asked for, it is allowed."""
    with pytest.raises(ConfigError, match=expected):
        PruneConfig(**overrides)
    PruneConfig(**overrides, clip_densities=True)
    PruneConfig(**{**overrides, next(k for k in overrides if k != "allocation"): 0.49})


def test_search_with_a_width_no_model_allows_is_refused_before_loading(capsys, monkeypatch):
    from dlp_lib import search
    from dlp_lib.cli import search as search_cli

    monkeypatch.setattr(search, "ProxyFitness", lambda *a, **k: pytest.fail("the search started"))
    assert search_cli.main(["--Lamda", "5", "--quiet"]) == 2
    assert "below 0.5" in one_error_line(capsys, "dlp-search")


def test_search_whose_every_candidate_is_invalid_fails_with_a_reason(capsys, monkeypatch):
    from dlp_lib import search
    from dlp_lib.cli import search as search_cli
    from dlp_lib.search.candidates import Candidate

    reason = "dsa: Lamda (dsa_lambda) = 0.3 gives block densities in [-0.1, 0.7], outside (0, 1]"
    invalid = Candidate("W:(ABS)-(MEAN)-()", math.inf, reason=reason)
    result = SimpleNamespace(best=invalid, candidates=[], computed=1, seconds=1.0)
    monkeypatch.setattr(search, "ProxyFitness", lambda *a, **k: None)
    monkeypatch.setattr(search, "search", lambda *a, **k: result)
    assert search_cli.main(["--Lamda", "0.3", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "apply with" not in captured.out
    assert captured.err.strip() == f"dlp-search: error: every expression was invalid on this model, e.g. {reason}"


@pytest.mark.parametrize(
    "overrides, expected",
    [({"prune": "wanda"}, r"pass PruneConfig\(method='wanda'\)"), ({"recovery": {"steps": 2}}, "RecoveryConfig"),
     ({"eval": 3}, "eval must be a string"), ({"model": None}, "model must be a string"),
     ({"zero_shot_tasks": 5}, "task names"), ({"offload": "yes"}, "True or False")],
)  # fmt: skip
def test_run_config_refuses_wrong_types(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        RunConfig(**overrides)


@pytest.mark.parametrize("sparsity, side", [(0.001, "pruned less"), (0.999, "pruned more")])
def test_evopress_sparsity_without_room_for_levels_refused_before_loading(sparsity, side, capsys, monkeypatch):
    """At 0.1% no linear prunes a single weight per row, so no level lies below the target: nothing to
    exchange. Found from the configuration (meta weights), before the model is loaded."""
    from dlp_lib.cli import evopress as evopress_cli
    from dlp_lib.search import evopress

    monkeypatch.setattr(evopress, "EvoPressProblem", lambda *a, **k: pytest.fail("the search started"))
    assert evopress_cli.main(["--sparsity_ratio", str(sparsity), "--quiet"]) == 2
    assert side in one_error_line(capsys, "dlp-evopress")


def test_stored_dsa_search_without_its_best_is_not_read(tmp_path, caplog):
    """A stored search result missing what the notebooks read is unreadable (rebuilt or refused), not a
    KeyError in a notebook."""
    from dlp_lib.experiments import dsa

    prof = experiments.profile("smoke")
    fitness, config = dsa.dsa_search_settings(prof)
    path = dsa.dsa_search_path(prof, tmp_path)
    path.parent.mkdir(parents=True)
    stored = {"settings": fitness.to_dict(), "config": config.to_dict(), "candidates": [], "history": []}
    path.write_text(json.dumps({**stored, "references": {}}))
    assert dsa.stored_dsa_search(prof, tmp_path) is None
    assert "no best expression" in caplog.text
    path.write_text(json.dumps({**stored, "references": {}, "best": {"expression": "W:(ABS)-(MEAN)-()"}}))
    assert dsa.stored_dsa_search(prof, tmp_path)["best"]["expression"] == "W:(ABS)-(MEAN)-()"
