"""Shared fixtures: tiny random models of every supported architecture, built from a config (no
downloads), and a tiny model directory with a real tokenizer for end-to-end tests."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(2)
# Triton kernels (SparseGPT's sweep on CUDA) run in Triton's CPU interpreter in the tests: the flag is read
# when triton is first imported, so it is set before anything can import it. Only sparsegpt_sweep="triton"
# puts a kernel to use on a CPU; "auto" takes the C loop there and never touches triton.
os.environ["TRITON_INTERPRET"] = "1"

TINY = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=256,
)


def tiny_config(arch: str):
    from transformers import LlamaConfig, MistralConfig, OPTConfig, Qwen2Config

    if arch == "llama":
        return LlamaConfig(**TINY, num_key_value_heads=2)
    if arch == "mistral":
        return MistralConfig(**TINY, num_key_value_heads=2, sliding_window=None)
    if arch == "qwen2":
        return Qwen2Config(**TINY, num_key_value_heads=2)
    if arch == "opt":
        return OPTConfig(
            vocab_size=TINY["vocab_size"],
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=256,
            word_embed_proj_dim=32,
        )
    raise ValueError(arch)


def make_tiny_model(arch: str = "llama", seed: int = 0, vocab_size: int | None = None):
    """A randomly initialised causal LM of ``arch`` with 3 blocks, fp32, eval mode."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch)
    if vocab_size is not None:
        config.vocab_size = vocab_size
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


ARCHS = ("llama", "mistral", "qwen2", "opt")


@pytest.fixture(params=ARCHS)
def tiny_model(request):
    return make_tiny_model(request.param)


@pytest.fixture
def tiny_windows():
    """8 windows of 16 random token ids (vocab 128)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, TINY["vocab_size"], (8, 16), generator=g)


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded SmolLM2 tokenizer (converted once into the dlp_lib cache)."""
    from transformers import AutoTokenizer

    from dlp_lib.models import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer):
    """A local HF directory: a tiny random LLaMA with the embedded tokenizer's vocabulary."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = make_tiny_model("llama", vocab_size=len(embedded_tokenizer))
    model.save_pretrained(path)
    embedded_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    """A small English text file (about 30k characters) for calibration/evaluation from a local file."""
    from dlp_lib.data import wiki_extracts_parts

    calibration, _ = wiki_extracts_parts()
    path = tmp_path_factory.mktemp("text") / "sample.txt"
    path.write_text("\n\n".join(calibration[:150]))
    return path


@pytest.fixture
def tiny_args(tiny_model_dir, text_file):
    """``dlp-prune`` flags for a seconds-long run of the tiny LLaMA on the sample text file."""
    return [
        "--model", str(tiny_model_dir),
        "--calibration", str(text_file), "--eval", str(text_file),
        "--nsamples", "4", "--seqlen", "32", "--eval_windows", "4",
        "--device", "cpu", "--quiet",
    ]  # fmt: skip


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything tries to load a model (settings must be refused before)."""
    from dlp_lib import pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were validated")

    monkeypatch.setattr(pipeline, "load_model", refuse)


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory):
    """The smoke profile's grid, run once through submitit's local executor with 2 workers (1 thread
    each): ``{"results": records directory, "summary": grid.Summary, "seconds": wall time}``."""
    import time

    from dlp_lib import experiments, grid

    root = tmp_path_factory.mktemp("smoke-grid")
    start = time.perf_counter()
    backend = grid.local_backend(root / "logs", workers=2, gpus=[], timeout_min=30, threads=1)
    summary = grid.run_grid(experiments.profile("smoke"), root / "results", backend)
    return {"results": root / "results", "summary": summary, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------- the bad-input batteries' check
def files_under(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def refused(argv, capsys, tmp_path, cache_allowed: bool = False, entry=None, prog="dlp-prune") -> str:
    """Run the command (``entry``, by default dlp-prune's main); assert exit 2, one ``<prog>: error:`` line,
    nothing on stdout, nothing written under tmp_path (outputs, and the cache unless ``cache_allowed``: text
    tokenised before the refusal may be kept, as any cache); return the line."""
    if entry is None:
        from dlp_lib.cli import main as entry
    before = files_under(tmp_path)
    status = entry(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    written = files_under(tmp_path) - before
    assert not (written if not cache_allowed else {p for p in written if not p.startswith("cache")}), written
    return lines[0]
