"""The bad-input battery: every case gives one clear line that says what to do, before the work it
would waste; on the command line exit status 2, no traceback, and no file written (neither the
outputs nor the cache). ``tests/test_cli.py`` and ``tests/test_config.py`` hold more refusals."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

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


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def refused(argv, capsys, tmp_path) -> str:
    """Run the CLI; assert exit 2, one ``dlp-prune: error:`` line, nothing on stdout, nothing written
    under tmp_path (outputs or cache); return the line."""
    before = files_under(tmp_path)
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("dlp-prune: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert files_under(tmp_path) == before
    return lines[0]


# ------------------------------------------------------------------------- CLI: refused before loading
BEFORE_LOADING = {
    "record under /proc": (["--save", "/proc/nope/rec.json"], "does not accept new files"),
    "model under /proc": (["--save_model", "/proc/nope/model"], "does not accept new files"),
    "record under a file": (["--save", "{tmp}/a-file/rec.json"], "is a file"),
    "model under a file": (["--save_model", "{tmp}/a-file/model"], "is a file, not a directory"),
    "sparsegpt 2:5 blocksize": (["--prune_method", "sparsegpt", "--sparsity_type", "2:5"], "pass --blocksize 125"),
    "blocksize 0": (["--prune_method", "sparsegpt", "--blocksize", "0"], "positive number of columns"),
    "percdamp 1.5": (["--prune_method", "sparsegpt", "--percdamp", "1.5"], "percdamp must be in [0, 1)"),
    "negative Lamda": (["--prune_method", "wanda_owl", "--Lamda", "-1"], "owl_lambda must be >= 0"),
    "Hyper_m 0": (["--prune_method", "wanda_owl", "--Hyper_m", "0"], "owl_m"),
    "batch size 0": (["--batch_size", "0"], "batch_size must be positive"),
    "eval batch size 0": (["--eval_batch_size", "0"], "eval_batch_size must be positive"),
    "negative lora steps": (["--lora_steps", "-1"], "--lora_steps must be >= 0"),
    "lora with dense": (["--prune_method", "dense", "--lora_steps", "2"], "needs a pruned model"),
    "lora with offload": (["--lora_steps", "2", "--offload"], "drop --offload"),
    "unknown zero-shot task": (["--eval_zero_shot", "--tasks", "nosuchtask"], "nosuchtask"),
    "zero-shot limit 0": (["--eval_zero_shot", "--limit", "0"], "limit must be a positive number"),
    "zero-shot with offload": (["--eval_zero_shot", "--offload"], "drop --offload"),
    "unknown device map": (["--device_map", "everywhere"], "unknown device_map"),
    "offload and device map": (["--offload", "--device_map", "auto"], "either --offload"),
    "unsupported data file": (["--calibration", "{tmp}/a-file"], "unsupported data file"),
    "empty c4 path": (["--calibration", "c4:"], "give a file after the colon"),
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
}


@pytest.mark.parametrize("flags, expected", AFTER_LOADING.values(), ids=AFTER_LOADING.keys())
def test_refused_after_loading_before_work(flags, expected, tiny_args, tmp_path, capsys, no_work):
    out = tmp_path / "out" / "rec.json"
    line = refused([*tiny_args, *flags, "--save", str(out)], capsys, tmp_path)
    assert expected in line
    if "2:5" in flags:
        assert "blocksize" not in line  # the old message blamed a SparseGPT setting never given


def test_infeasible_alpha_says_the_statistics_were_kept(tiny_args, tmp_path, capsys):
    status = main([*tiny_args, "--prune_method", "wanda_dlp", "--alpha", "0.9", "--save", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "--clip_densities" in err and "dense statistics are cached" in err
    assert not (tmp_path / "r.json").exists()
    assert list((tmp_path / "cache" / "dense_stats").glob("*.pt"))  # kept, as it says


# ---------------------------------------------------------------------------------- library entry points
def test_library_entry_points(tiny_model_dir, text_file, embedded_tokenizer):
    model = load_model(str(tiny_model_dir))[0]
    cases = [
        (lambda: PruneConfig(sparsity=1.0), "sparsity must be in [0, 1)"),
        (lambda: PruneConfig(method="wanda", sparsity_type="2:2"), "0 < N < M"),
        (lambda: RunConfig(nsamples=0), "nsamples must be positive"),
        (lambda: RunConfig(seqlen=1), "seqlen must be > 1"),
        (lambda: prune_model(model, PruneConfig("wanda")), "wanda needs calibration windows"),
        (lambda: prune_model(model, PruneConfig("magnitude"), block_sparsities=[0.5]), "3 blocks"),
        (lambda: prune_model(model, PruneConfig("magnitude"), block_sparsities=[0.5, 1.0, 0.5]), "[0, 1)"),
        (lambda: load_model("/no/such/model"), "unknown model"),
        (lambda: load_model(str(text_file)), "is a file; give a model directory"),
        (lambda: calibration_windows("/no/such.txt", embedded_tokenizer), "unknown data source"),
        (lambda: calibration_windows(str(text_file), embedded_tokenizer, nsamples=0), "nsamples > 0"),
        (lambda: evaluation_windows(str(text_file), embedded_tokenizer, seqlen=64, count=10**6), "the source has"),
        (lambda: pipeline.run(RunConfig(model=str(tiny_model_dir), seqlen=512, eval=None)), "256 positions"),
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
    from dlp_lib import search, search_cli

    def refuse(*args, **kwargs):
        raise AssertionError("the search started before its output path was checked")

    monkeypatch.setattr(search, "ProxyFitness", refuse)
    assert search_cli.main(["--save", "/proc/nope/search.json", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dlp-search: error: ") and "does not accept new files" in err and len(err.splitlines()) == 1
