"""Caches that survive crashes and corruption, and writers that run at the same time.

A truncated result record, dense-statistics file, converted model or window cache is reported with a
warning naming the file and rebuilt, never used and never a crash; two processes computing the same
record or statistics end with one valid file; a killed writer's temporaries are cleaned up later.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib import cache, experiments, models, pipeline
from dlp_lib.cache import atomic_path, check_writable, remove_stale_temporaries
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.data import calibration_windows
from dlp_lib.pipeline import RunConfig


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def tiny_config(model_dir, text_file) -> RunConfig:
    return RunConfig(
        model=str(model_dir),
        prune=PruneConfig("wanda", 0.5),
        calibration=str(text_file),
        eval=str(text_file),
        nsamples=2,
        seqlen=32,
        eval_windows=2,
    )


def warned(caplog, *words) -> bool:
    return any(all(w in r.getMessage() for w in words) for r in caplog.records if r.levelno == logging.WARNING)


# ---------------------------------------------------------------------------------- corrupt caches
def test_truncated_record_is_rerun(tiny_model_dir, text_file, tmp_path, caplog):
    config = tiny_config(tiny_model_dir, text_file)
    first = experiments.cached_run(config, tmp_path / "results", progress=False)
    (path,) = (tmp_path / "results").glob("*.json")
    truncate(path)
    with caplog.at_level(logging.WARNING):
        again = experiments.cached_run(config, tmp_path / "results", progress=False)
    assert warned(caplog, str(path), "re-running")
    assert again["perplexity"]["perplexity"] == first["perplexity"]["perplexity"]
    assert json.loads(path.read_text())["config"] == first["config"]  # replaced by a whole record


def test_truncated_dense_statistics_are_recomputed(text_file, embedded_tokenizer, caplog):
    model = make_tiny_model("llama", vocab_size=len(embedded_tokenizer))
    windows = calibration_windows(str(text_file), embedded_tokenizer, nsamples=2, seqlen=32)
    norms, seconds = pipeline.cached_dense_norms(model, windows, 2, progress=False)
    assert seconds > 0
    (path,) = (cache.cache_root() / "dense_stats").glob("*.pt")
    for damage in (truncate, lambda p: torch.save([{"q_proj": torch.ones(3)}], p)):  # cut short; wrong shape
        damage(path)
        with caplog.at_level(logging.WARNING):
            again, seconds = pipeline.cached_dense_norms(model, windows, 2, progress=False)
        assert warned(caplog, "dense statistics cache", str(path), "rebuilding")
        assert seconds > 0  # recomputed, not read
        assert all(torch.equal(a[k], b[k]) for a, b in zip(norms, again) for k in a)
        caplog.clear()
    assert pipeline.cached_dense_norms(model, windows, 2, progress=False)[1] == 0.0  # whole again: read


def test_truncated_window_cache_is_rebuilt(text_file, embedded_tokenizer, caplog):
    first = calibration_windows(str(text_file), embedded_tokenizer, nsamples=3, seqlen=32, seed=1)
    (path,) = (cache.cache_root() / "windows").glob("*.pt")
    truncate(path)
    with caplog.at_level(logging.WARNING):
        again = calibration_windows(str(text_file), embedded_tokenizer, nsamples=3, seqlen=32, seed=1)
    assert warned(caplog, "token window cache", str(path))
    assert torch.equal(first, again)
    assert torch.equal(torch.load(path, weights_only=True), first)


class _Planted:
    """A pickle that would create a file if it were ever unpickled without restrictions."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cache_files_never_run_pickled_code(text_file, embedded_tokenizer, tmp_path, caplog):
    first = calibration_windows(str(text_file), embedded_tokenizer, nsamples=2, seqlen=32)
    (path,) = (cache.cache_root() / "windows").glob("*.pt")
    marker = tmp_path / "code-ran"
    path.write_bytes(pickle.dumps(_Planted(str(marker)), protocol=2))
    with caplog.at_level(logging.WARNING):
        again = calibration_windows(str(text_file), embedded_tokenizer, nsamples=2, seqlen=32)
    assert not marker.exists()
    assert warned(caplog, str(path)) and torch.equal(first, again)


def test_truncated_converted_model_is_converted_again(monkeypatch, embedded_tokenizer, caplog):
    """The embedded model's safetensors cache: a cut-short file fails ``safe_open`` and is rebuilt
    (the GGUF dequantisation is replaced by a tiny model to keep this fast)."""
    conversions = []

    def fake_gguf(path, dtype):
        conversions.append(path)
        return make_tiny_model("llama", vocab_size=len(embedded_tokenizer)), embedded_tokenizer

    monkeypatch.setattr(models, "_load_gguf", fake_gguf)
    directory = models.embedded_model_dir()
    weights = directory / "model.safetensors"
    reference = weights.read_bytes()
    assert models.embedded_model_dir() == directory and len(conversions) == 1  # whole: reused
    truncate(weights, 0.9)
    with caplog.at_level(logging.WARNING):
        assert models.embedded_model_dir() == directory
    assert warned(caplog, "converted model cache", str(directory), "rebuilding")
    assert len(conversions) == 2 and weights.read_bytes() == reference
    model, _ = models.load_model()
    assert model.config.num_hidden_layers == 3


def test_unreadable_search_and_statistics_results_are_reported(tmp_path, caplog):
    """The notebooks' other cached results: an unreadable file is recomputed with a warning."""
    path = tmp_path / "x.json"
    path.write_text('{"half": ')
    with caplog.at_level(logging.WARNING):
        assert cache.read_cache(path, lambda p: json.loads(p.read_text()), "test cache") is None
    assert warned(caplog, "test cache", str(path))
    assert cache.read_cache(tmp_path / "missing.json", lambda p: json.loads(p.read_text()), "test") is None


# ---------------------------------------------------------------------------------------- concurrency
def _run_together(script: str, count: int = 2, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Start ``count`` Python processes running ``script``, released at the same moment."""
    start_at = time.time() + 8  # after both have imported torch and transformers
    code = textwrap.dedent(script)
    env = dict(os.environ, START=str(start_at))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_two_processes_compute_the_same_record(tiny_model_dir, text_file, tmp_path):
    results_dir = tmp_path / "results"
    script = f"""
        import os, time
        from dlp_lib import experiments
        from dlp_lib.config import PruneConfig
        from dlp_lib.pipeline import RunConfig
        data = {str(text_file)!r}
        config = RunConfig(model={str(tiny_model_dir)!r}, prune=PruneConfig("wanda", 0.5),
                           calibration=data, eval=data, nsamples=2, seqlen=32, eval_windows=2)
        time.sleep(max(0.0, float(os.environ["START"]) - time.time()))
        record = experiments.cached_run(config, {str(results_dir)!r}, progress=False)
        print(record["perplexity"]["perplexity"])
    """
    results = _run_together(script)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    assert len({r.stdout for r in results}) == 1
    files = list(results_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"  # one record, no temporaries
    assert json.loads(files[0].read_text())["perplexity"]["perplexity"] == float(results[0].stdout)


def test_two_processes_compute_the_same_dense_statistics(text_file, tmp_path):
    script = f"""
        import os, time
        from transformers import AutoTokenizer
        from dlp_lib import pipeline
        from dlp_lib.data import calibration_windows
        from dlp_lib.models import load_model
        model, tokenizer = load_model({str(tmp_path / "model")!r})
        windows = calibration_windows({str(text_file)!r}, tokenizer, nsamples=2, seqlen=32)
        time.sleep(max(0.0, float(os.environ["START"]) - time.time()))
        norms, seconds = pipeline.cached_dense_norms(model, windows, 2, progress=False)
        print(float(sum(v.sum() for block in norms for v in block.values())))
    """
    from transformers import AutoTokenizer

    from dlp_lib.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    make_tiny_model("llama", vocab_size=len(tokenizer)).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    calibration_windows(str(text_file), tokenizer, nsamples=2, seqlen=32)  # windows cached: both race on norms
    results = _run_together(script)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    assert len({r.stdout for r in results}) == 1
    files = list((cache.cache_root() / "dense_stats").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    assert torch.load(files[0], weights_only=True)


def test_concurrent_directory_writers_leave_one_whole_copy(tmp_path):
    """atomic_path on a directory from 2 processes x 15 writes each (the model conversion and
    --save_model write directories): no error, and the survivor is whole."""
    target = tmp_path / "out"
    script = f"""
        import os, time
        from pathlib import Path
        from dlp_lib.cache import atomic_path
        time.sleep(max(0.0, float(os.environ["START"]) - time.time()))
        for i in range(15):
            with atomic_path({str(target)!r}) as tmp:
                tmp.mkdir()
                for k in range(20):
                    (tmp / f"part{{k}}").write_text(str(os.getpid()))
        print("ok")
    """
    results = _run_together(script)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    parts = sorted(target.iterdir())
    assert len(parts) == 20 and len({p.read_text() for p in parts}) == 1  # one writer's complete copy
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ------------------------------------------------------------------------------ temporaries, writability
def test_a_dead_writers_temporaries_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # exited: no longer alive
    host = os.uname().nodename
    stale = tmp_path / f".rec.json.tmp.{pid}@{host}.abc123"
    live = tmp_path / f".rec.json.tmp.{os.getpid()}@{host}.def456"
    foreign = tmp_path / f".rec.json.tmp.{pid}@another-host.ghi789"
    for d in (stale, live, foreign):
        d.mkdir()
        (d / "rec.json").write_text('{"half"')
    assert remove_stale_temporaries(tmp_path / "rec.json") == 1
    assert not stale.exists() and live.exists() and foreign.exists()
    with atomic_path(tmp_path / "rec.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "rec.json").read_text() == "{}"


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper" / "rec.json", "the record") == tmp_path / "new/deeper/rec.json"
    assert not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_writable(tmp_path / "file" / "rec.json", "the record")
    with pytest.raises(ConfigError, match="does not accept new files"):
        check_writable("/proc/nope/rec.json", "the record")
