"""save_pruned_model: a pruned model saved, reloaded with transformers, identical weights and perplexity;
a save never deletes a file it did not write, and keeps a folder's permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.evaluation import perplexity
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.outputs import MANIFEST
from dlp_lib.prune import decoder_sparsity, prune_model
from dlp_lib.saving import SPARSITY_FILE, SaveTarget, save_pruned_model


def snapshot(directory):
    """Every entry below ``directory`` with its content and modification time (folders: None)."""
    return {
        str(p.relative_to(directory)): None if p.is_dir() else (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def random_windows(vocab_size: int, n: int = 4, length: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab_size, (n, length), generator=g)


def pruned_tiny(arch: str, vocab_size: int | None = None, sparsities=(0.3, 0.5, 0.7), method="wanda"):
    """A tiny model pruned (by default with Wanda) with different targets per block, and a record like
    pipeline.run's."""
    model = make_tiny_model(arch, vocab_size=vocab_size)
    config = PruneConfig(method, 0.5, allocation="dlp")
    calibration = random_windows(model.config.vocab_size, n=4)
    report = prune_model(model, config, calibration, block_sparsities=list(sparsities), progress=False)
    record = {
        "config": {"model": "tiny", "prune": config.to_dict()},
        "allocation": {"statistic": [3.0, 2.0, 1.0], "densities": [1 - s for s in sparsities]},
        "pruning": report.to_dict(),
        "perplexity": {"perplexity": 123.0},
    }
    return model, record


@pytest.mark.parametrize("arch, method", [("llama", "wanda"), ("opt", "wanda"), ("llama", "sparsegpt")])
def test_reload_gives_identical_weights_and_perplexity(arch, method, tmp_path):
    """SparseGPT solves q/k/v stacked: each must still get a tensor of its own (safetensors refuses to
    save tensors that share memory)."""
    from transformers import AutoModelForCausalLM

    model, record = pruned_tiny(arch, method=method)
    out = save_pruned_model(model, None, tmp_path / "pruned", record)
    assert out == tmp_path / "pruned"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()

    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    original = model.state_dict()
    reloaded = loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, reloaded[name]), name
    for before, after in zip(decoder_blocks(model), decoder_blocks(loaded)):
        for (name, a), b in zip(linear_sublayers(before).items(), linear_sublayers(after).values()):
            assert torch.equal(a.weight == 0, b.weight == 0), name  # the zeros survive the round trip
    assert decoder_sparsity(loaded) == decoder_sparsity(model)

    windows = random_windows(model.config.vocab_size, n=3)
    ppl_before = perplexity(model, windows, batch_size=2, progress=False)["perplexity"]
    ppl_after = perplexity(loaded, windows, batch_size=2, progress=False)["perplexity"]
    assert ppl_after == pytest.approx(ppl_before, rel=1e-6)
    # no temporary directory left beside the output
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"]


def test_sparsity_json(tmp_path):
    model, record = pruned_tiny("llama", sparsities=(0.25, 0.5, 0.75))
    out = save_pruned_model(model, None, tmp_path / "pruned", record)
    summary = json.loads((out / SPARSITY_FILE).read_text())
    # Wanda prunes int(d_in * s) per row; every d_in (32 or 64) times these targets is whole
    assert summary["blocks"] == [0.25, 0.5, 0.75]
    assert summary["overall"] == pytest.approx(0.5)
    assert len(summary["linears"]) == 3 * 7
    assert summary["linears"]["0.self_attn.q_proj"] == 0.25
    assert summary["linears"]["2.mlp.down_proj"] == 0.75
    assert summary["allocation"] == record["allocation"]
    assert summary["pruning"]["block_targets"] == [0.25, 0.5, 0.75]
    assert summary["pruning"]["method"] == "wanda"
    assert summary["config"]["prune"]["allocation"] == "dlp"
    assert "perplexity" not in summary

    bare = save_pruned_model(model, None, tmp_path / "bare")
    assert set(json.loads((bare / SPARSITY_FILE).read_text())) == {"overall", "blocks", "linears"}


def test_tokenizer_is_saved(tmp_path, embedded_tokenizer):
    from transformers import AutoTokenizer

    model, record = pruned_tiny("llama", vocab_size=len(embedded_tokenizer))
    out = save_pruned_model(model, embedded_tokenizer, tmp_path / "with-tokenizer", record)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "Sparse models keep their zeros."
    assert tokenizer(text).input_ids == embedded_tokenizer(text).input_ids


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    model, record = pruned_tiny("llama")

    def crash(directory, *args, **kwargs):
        (directory / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
        (directory / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        save_pruned_model(model, None, tmp_path / "pruned", record)
    assert list(tmp_path.iterdir()) == []


def test_a_previous_save_is_replaced_only_with_overwrite_and_only_while_it_holds_nothing_else(tmp_path):
    model, record = pruned_tiny("llama")
    out = save_pruned_model(model, None, tmp_path / "pruned", record)
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {MANIFEST}  # every file it wrote, listed
    with pytest.raises(ConfigError, match="pass overwrite=True"):
        save_pruned_model(model, None, out, record)
    first = (out / "model.safetensors").stat().st_mtime_ns
    save_pruned_model(model, None, out, record, overwrite=True)
    assert (out / "model.safetensors").stat().st_mtime_ns != first  # replaced

    (out / "notes.txt").write_text("added by the user since")
    (out / "extra").mkdir()
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"not a saved model dlp_lib wrote.*\(extra, notes.txt\)"):
        save_pruned_model(model, None, out, record, overwrite=True)
    assert snapshot(out) == before
    (out / "notes.txt").unlink()
    (out / "extra").rmdir()
    (out / "config.json").write_text((out / "config.json").read_text() + " ")  # edited by hand: not ours any more
    with pytest.raises(ConfigError, match=r"changed since \(config.json\)"):
        save_pruned_model(model, None, out, record, overwrite=True)


def test_a_foreign_directory_a_file_and_an_older_save_are_refused_untouched(tmp_path):
    model, record = pruned_tiny("llama")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    before = snapshot(foreign)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not a directory written by dlp_lib"):
            save_pruned_model(model, None, foreign, record, overwrite=overwrite)
    assert snapshot(foreign) == before

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="it is a file"):
        save_pruned_model(model, None, a_file, record)
    assert a_file.read_text() == "x"

    older = save_pruned_model(model, None, tmp_path / "older", record)
    (older / MANIFEST).unlink()  # as a save before the manifest left it
    with pytest.raises(ConfigError, match="older dlp_lib .*delete it yourself"):
        save_pruned_model(model, None, older, record, overwrite=True)
    assert (older / SPARSITY_FILE).is_file()


def test_a_save_keeps_the_folders_permissions_and_a_new_one_gets_the_umasks(tmp_path):
    model, record = pruned_tiny("llama")
    umask = os.umask(0)
    os.umask(umask)
    new = save_pruned_model(model, None, tmp_path / "new", record)
    assert stat.S_IMODE(new.stat().st_mode) == 0o777 & ~umask  # not a temporary folder's 0700
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o750)
    os.chmod(empty, 0o750)
    save_pruned_model(model, None, empty, record)
    assert stat.S_IMODE(empty.stat().st_mode) == 0o750
    os.chmod(empty, 0o705)
    save_pruned_model(model, None, empty, record, overwrite=True)
    assert stat.S_IMODE(empty.stat().st_mode) == 0o705


def test_the_command_lines_permission_travels_with_the_path(tmp_path):
    """pipeline.run hands --save_model to save_pruned_model as it is: a SaveTarget carries --overwrite."""
    model, record = pruned_tiny("llama")
    out = save_pruned_model(model, None, tmp_path / "pruned", record)
    with pytest.raises(ConfigError, match="pass --overwrite"):
        save_pruned_model(model, None, SaveTarget(out, False, "--overwrite"), record)
    assert save_pruned_model(model, None, SaveTarget(out, True, "--overwrite"), record) == out
