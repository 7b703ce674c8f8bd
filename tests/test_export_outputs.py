"""export_onnx's folder: checked before the tracing, a user's files never deleted, an earlier export
replaced only with overwrite=True, the folder's permissions kept, a full disk said in one line."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

from dlp_lib import export
from dlp_lib.config import ConfigError
from dlp_lib.models import load_model
from dlp_lib.outputs import MANIFEST

PROMPT = 4
GRAPHS = ["decode.onnx", "prefill.onnx", "reference.npz"]


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    return load_model(str(tiny_model_dir), "float32", "cpu")


@pytest.fixture
def no_tracing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the export started before its folder was checked")

    monkeypatch.setattr(export, "step_inputs", refuse)


def snapshot(directory):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_a_folder_with_a_users_files_is_refused_before_tracing_and_left_as_it_was(
    model_and_tokenizer, tmp_path, no_tracing
):
    model, tokenizer = model_and_tokenizer
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "thesis.pdf").write_bytes(b"%PDF precious")
    (folder / "notes.csv").write_text("a,b\n")
    os.chmod(folder, 0o755)
    before = snapshot(folder)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not a directory written by dlp_lib") as err:
            export.export_onnx(model, tokenizer, folder, PROMPT, overwrite=overwrite)
        assert "\n" not in str(err.value)
    assert snapshot(folder) == before and stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_an_earlier_export_is_replaced_only_with_overwrite_keeping_its_permissions(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    new = tmp_path / "new"
    export.export_onnx(model, tokenizer, new, PROMPT)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o777 & ~mask  # not the staging folder's 0700
    assert sorted(p.name for p in new.iterdir()) == sorted([*GRAPHS, MANIFEST])

    folder = tmp_path / "empty"
    folder.mkdir()
    os.chmod(folder, 0o750)
    export.export_onnx(model, tokenizer, folder, PROMPT)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    with pytest.raises(ConfigError, match="pass overwrite=True"):
        export.export_onnx(model, tokenizer, folder, PROMPT)
    paths = export.export_onnx(model, tokenizer, folder, PROMPT, overwrite=True)
    assert sorted(p.name for p in paths.values()) == sorted(GRAPHS)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    (folder / "reference.npz").write_bytes(b"edited")
    with pytest.raises(ConfigError, match=r"changed since \(reference.npz\)"):
        export.export_onnx(model, tokenizer, folder, PROMPT, overwrite=True)
    assert (folder / "reference.npz").read_bytes() == b"edited"


def test_a_name_too_long_is_refused_before_tracing(model_and_tokenizer, tmp_path, no_tracing):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ConfigError, match="choose a shorter name"):
        export.export_onnx(model, tokenizer, tmp_path / ("e" * 300), PROMPT)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_says_so_and_leaves_the_earlier_export(model_and_tokenizer, tmp_path, monkeypatch):
    model, tokenizer = model_and_tokenizer
    folder = tmp_path / "export"
    export.export_onnx(model, tokenizer, folder, PROMPT)
    before = snapshot(folder)

    def full(path, **arrays):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(ConfigError, match="cannot write the ONNX export .*: the disk is full .*free space"):
        export.export_onnx(model, tokenizer, folder, PROMPT, overwrite=True)
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
