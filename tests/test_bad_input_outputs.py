"""The output battery: a writer (saved model, ONNX export, run records, the records folder, tables, figures)
never deletes or changes a file it did not write. A user's files planted in every output place stay as they
were (content and modification time), an existing folder keeps its permissions, and every refusal is one
line that says what to do (on the command line exit status 2, before the model loads, nothing written):
a folder of the user's, an earlier output without the flag that allows replacing it, a file that is not a
record, a name the file system cannot hold. A full disk while writing is said in one line too."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
from conftest import make_tiny_model, refused

from dlp_lib import cache, export, pipeline, results
from dlp_lib.cli import main
from dlp_lib.cli.prune import build_parser, build_run_config
from dlp_lib.config import ConfigError
from dlp_lib.experiments import archive
from dlp_lib.outputs import MANIFEST
from dlp_lib.saving import save_pruned_model

PLANTED = {"thesis.pdf": b"%PDF-1.5 a thesis", "notes.csv": b"a,b\n1,2\n"}
TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 4736 vs 4624"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))


def snapshot(path):
    """Every entry below ``path`` (and ``path``): its bytes and modification time, a folder's mode."""
    entries = {}
    for p in [path, *sorted(path.rglob("*"))]:
        status = p.stat()
        entries[str(p.relative_to(path))] = (
            stat.S_IMODE(status.st_mode) if p.is_dir() else (p.read_bytes(), status.st_mtime_ns)
        )
    return entries


def plant(folder, mode=0o750):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in PLANTED.items():
        (folder / name).write_bytes(content)
    os.chmod(folder, mode)
    return folder


def earlier_save(directory):
    return save_pruned_model(make_tiny_model("llama"), None, directory)


# ---------------------------------------------------------------------- dlp-prune: refused before loading
def test_save_model_into_a_folder_of_the_users(tiny_args, tmp_path, capsys, no_loading):
    folder = plant(tmp_path / "mine")
    before = snapshot(folder)
    for flags in ([], ["--overwrite"]):
        line = refused([*tiny_args, "--save_model", str(folder), *flags], capsys, tmp_path)
        assert "not a directory written by dlp_lib" in line and "give a new or empty directory" in line
    assert snapshot(folder) == before


def test_save_model_into_an_earlier_save(tiny_args, tmp_path, capsys, no_loading):
    folder = earlier_save(tmp_path / "model")
    line = refused([*tiny_args, "--save_model", str(folder)], capsys, tmp_path)
    assert "pass --overwrite to replace it" in line
    (folder / "thesis.pdf").write_bytes(PLANTED["thesis.pdf"])  # added since the save
    before = snapshot(folder)
    for flags in ([], ["--overwrite"]):
        line = refused([*tiny_args, "--save_model", str(folder), *flags], capsys, tmp_path)
        assert "(thesis.pdf)" in line and "move them away" in line
    assert snapshot(folder) == before


def test_save_model_into_a_save_older_than_the_manifest(tiny_args, tmp_path, capsys, no_loading):
    folder = earlier_save(tmp_path / "model")
    (folder / MANIFEST).unlink()
    before = snapshot(folder)
    line = refused([*tiny_args, "--save_model", str(folder), "--overwrite"], capsys, tmp_path)
    assert "older dlp_lib" in line and "delete it yourself" in line
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "content",
    [b'{"grades": [1, 2]}', b"[1, 2]", b"%PDF-1.5", b"\x00\x01binary", b'{"config": 1}'],
    ids=["a JSON object", "a JSON list", "a PDF", "binary", "half a record"],
)
def test_a_record_path_holding_a_users_file(content, tiny_args, tmp_path, capsys, no_loading):
    path = tmp_path / "rec.json"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    line = refused([*tiny_args, "--save", str(path)], capsys, tmp_path)
    assert "not a dlp_lib record" in line and "give another path" in line
    assert snapshot(tmp_path) == before


def test_a_directory_at_the_record_path(tiny_args, tmp_path, capsys, no_loading):
    """--save DIR writes DIR/<config hash>.json (as the papers' scripts pass a folder); a directory there is
    refused before the work, not found when the record is written."""
    out = tmp_path / "out"
    out.mkdir()
    argv = [*tiny_args, "--save", str(out)]
    _, save = build_run_config(build_parser().parse_args(argv))
    assert save.parent == out and save.suffix == ".json"
    plant(save)
    before = snapshot(out)
    assert "is a directory" in refused(argv, capsys, tmp_path)
    assert snapshot(out) == before


def test_a_record_inside_the_model_directory(tiny_args, tmp_path, capsys, no_loading):
    model = tmp_path / "model"
    line = refused([*tiny_args, "--save_model", str(model), "--save", str(model / "rec.json")], capsys, tmp_path)
    assert "overlap" in line


LONG = "n" * 300
TOO_LONG = {
    "model name": (["--save_model", "{tmp}/" + LONG], "choose a shorter name"),
    "record name": (["--save", "{tmp}/" + LONG + ".json"], "choose a shorter name"),
    "record folder name": (["--save", "{tmp}/" + LONG + "/rec.json"], "choose a shorter name"),
    "model path": (["--save_model", "{tmp}/" + "/".join(["d" * 250] * 17)], "choose a shorter path"),
}


@pytest.mark.parametrize("flags, expected", TOO_LONG.values(), ids=TOO_LONG.keys())
def test_names_the_file_system_cannot_hold(flags, expected, tiny_args, tmp_path, capsys, no_loading):
    flags = [f.format(tmp=tmp_path) for f in flags]
    line = refused([*tiny_args, *flags], capsys, tmp_path)
    assert expected in line and len(line) < 600


# ---------------------------------------------------------------------- dlp-prune: when the run writes
@pytest.fixture
def fake_run(monkeypatch):
    """pipeline.run in a blink: a record, and the tiny model saved where --save_model says (as run does).
    ``fake_run.during`` runs inside it (a user acting while the model is pruned)."""

    def run(config, progress=True, save_model=None):
        fake_run.during()
        record = {"config": config.to_dict(), "versions": {}, "pruning": {}}
        if save_model:
            save_pruned_model(make_tiny_model("llama"), None, save_model, record)
        return record

    fake_run.during = lambda: None
    monkeypatch.setattr(pipeline, "run", run)
    return fake_run


def test_overwrite_replaces_an_earlier_save_keeping_its_permissions(tiny_args, tmp_path, capsys, fake_run):
    folder = earlier_save(tmp_path / "model")
    os.chmod(folder, 0o705)
    first = json.loads((folder / MANIFEST).read_text())
    record = tmp_path / "rec.json"
    argv = [*tiny_args, "--prune_method", "magnitude", "--save_model", str(folder), "--overwrite",
            "--save", str(record)]  # fmt: skip
    for _ in range(2):  # the second time over its own record and model
        assert main(argv) == 0, capsys.readouterr().err
    assert stat.S_IMODE(folder.stat().st_mode) == 0o705
    assert json.loads((folder / MANIFEST).read_text()) != first and results.is_record(json.loads(record.read_text()))


def test_a_file_put_at_the_record_path_during_the_run_is_left(tiny_args, tmp_path, capsys, fake_run):
    record = tmp_path / "rec.json"
    fake_run.during = lambda: record.write_text('{"mine": true}')
    assert main([*tiny_args, "--prune_method", "magnitude", "--save", str(record)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a dlp_lib record" in err
    assert record.read_text() == '{"mine": true}'


def test_a_full_disk_at_the_record_is_one_line(tiny_args, tmp_path, capsys, fake_run, monkeypatch):
    def full(path, obj):
        with cache.atomic_path(path, what="the result record") as tmp:
            tmp.write_text('{"half')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(results, "write_json_atomic", full)
    record = tmp_path / "rec.json"
    assert main([*tiny_args, "--prune_method", "magnitude", "--save", str(record)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dlp-prune: error: cannot write the result record")
    assert "the disk is full" in err and "free space there or choose another place" in err
    assert not record.exists() and not any(p.name.startswith(".rec.json") for p in tmp_path.iterdir())


def test_a_full_disk_while_saving_the_model_is_one_line(tiny_args, tmp_path, capsys, fake_run, monkeypatch):
    """torch's serializer keeps no errno: its short write is taken for a full disk when the disk is."""
    folder = earlier_save(tmp_path / "model")
    before = snapshot(folder)

    def short_write(*args, **kwargs):
        raise RuntimeError(TORCH_SHORT_WRITE)

    monkeypatch.setattr(type(make_tiny_model("llama")), "save_pretrained", short_write)
    monkeypatch.setattr(cache, "_disk_space", lambda path: (0, True))
    argv = [*tiny_args, "--prune_method", "magnitude", "--save_model", str(folder), "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write the pruned model" in err and "the disk is full" in err
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["model"]


# ---------------------------------------------------------------------- dlp-search and dlp-evopress --save
def _commands():
    from dlp_lib.cli import evopress, search

    return {"dlp-search": search.main, "dlp-evopress": evopress.main}


@pytest.mark.parametrize("prog", ["dlp-search", "dlp-evopress"])
def test_search_records_never_replace_a_users_file(prog, tmp_path, capsys, monkeypatch):
    from dlp_lib.search import levels

    # dlp-evopress previews its ladder on the model (converted into this test's empty cache): not what is checked here
    monkeypatch.setattr(levels, "preview_ladder", lambda *args: None, raising=False)
    entry = _commands()[prog]
    folder = plant(tmp_path / "out")
    (folder / "mine.json").write_text('{"grades": [1]}')
    before = snapshot(folder)
    cases = {
        str(folder): "is a directory",
        str(folder / "mine.json"): "not a dlp_lib record",
        str(folder / "thesis.pdf"): "not a dlp_lib record",
        str(folder / LONG): "choose a shorter name",
    }
    for save, expected in cases.items():
        assert expected in refused(["--save", save, "--quiet"], capsys, tmp_path, entry=entry, prog=prog)
    assert snapshot(folder) == before


def test_an_earlier_record_of_any_command_may_be_replaced(tmp_path):
    from dlp_lib.cli.flags import checked_save_path

    kinds = {
        "run.json": {"config": {}, "versions": {}, "pruning": {}},
        "search.json": {"best": {}, "candidates": [], "history": [], "config": {}, "fitness": {}},
        "evopress.json": {"format": "dlp_lib.evopress/1"},
    }
    for name, record in kinds.items():
        (tmp_path / name).write_text(json.dumps(record))
        assert checked_save_path(str(tmp_path / name), "x.json") == tmp_path / name


# ---------------------------------------------------------------------- the records folder (make records)
def test_make_records_never_deletes_a_users_file(tmp_path, capsys):
    source = tmp_path / "results"
    (source / "speed").mkdir(parents=True)
    (source / "aa.json").write_text('{"config": {}, "versions": {}}')
    (source / "speed" / "bb.json").write_text('{"hardware": {}}')
    records = tmp_path / "records"
    argv = ["--results", str(source), "--records", str(records)]
    assert archive.main(argv) == 0
    os.chmod(records, 0o750)
    assert archive.main(argv) == 0 and stat.S_IMODE(records.stat().st_mode) == 0o750  # its own copy: replaced
    capsys.readouterr()

    (records / "mine.json").write_text('{"my": "own JSON object"}')  # JSON, and an object: still not a record
    (records / "speed" / "notes.csv").write_text("a,b\n")
    before = snapshot(records)
    line = refused(argv, capsys, tmp_path, entry=archive.main, prog="python -m dlp_lib.experiments.archive")
    assert "(mine.json, speed/notes.csv)" in line and "move them away" in line
    assert snapshot(records) == before


def test_a_records_folder_copied_before_the_manifest_keeps_what_is_not_a_record(tmp_path, capsys):
    source = tmp_path / "results"
    source.mkdir()
    (source / "aa.json").write_text('{"config": {}}')
    records = tmp_path / "records"
    records.mkdir()
    (records / "old.json").write_text('{"config": {}}')  # an earlier copy's record: replaced
    (records / "list.json").write_text("[1, 2]")  # not a record of any kind
    (records / "README.md").write_text("# my own notes\n")
    before = snapshot(records)
    line = refused(["--results", str(source), "--records", str(records)], capsys, tmp_path,
                   entry=archive.main, prog="python -m dlp_lib.experiments.archive")  # fmt: skip
    assert "(README.md, list.json)" in line
    assert snapshot(records) == before


# ---------------------------------------------------------------------- tables and figures
def test_tables_and_figures_replace_their_own_files_only(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from dlp_lib.plots.style import save_figure
    from dlp_lib.reports.format import write_table

    frame = pd.DataFrame({"method": ["wanda"], "perplexity": [12.5]})
    fig = plt.figure(figsize=(1, 1))
    try:
        for kind, write, names in (
            ("tables", lambda d: write_table(frame, d, "main"), ["main.csv", "main.md"]),
            ("figures", lambda d: save_figure(fig, d, "main"), ["main.pdf", "main.png"]),
        ):
            folder = plant(tmp_path / kind, 0o755)
            mine = snapshot(folder)
            write(folder)
            write(folder)  # over its own files
            assert sorted(p.name for p in folder.iterdir()) == sorted([*PLANTED, *names])
            assert {k: v for k, v in snapshot(folder).items() if k in mine} == mine

            blocker = folder / names[1]  # a folder of the second file's name
            blocker.unlink()
            plant(blocker)
            (folder / names[0]).unlink()
            before = snapshot(folder)
            with pytest.raises(ConfigError, match="a directory of that name is there") as err:
                write(folder)
            assert "\n" not in str(err.value) and snapshot(folder) == before  # not even the first file
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- export and save from Python
def test_export_and_save_into_a_users_folder_leave_it_as_it_was(tiny_model_dir, tmp_path, monkeypatch):
    from dlp_lib.models import load_model

    monkeypatch.setattr(export, "step_inputs", lambda *a, **k: pytest.fail("the export started"))
    model, tokenizer = load_model(str(tiny_model_dir), "float32", "cpu")
    folder = plant(tmp_path / "mine")
    before = snapshot(folder)
    for write in (
        lambda overwrite: export.export_onnx(model, tokenizer, folder, 4, overwrite=overwrite),
        lambda overwrite: save_pruned_model(model, tokenizer, folder, overwrite=overwrite),
    ):
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match="not a directory written by dlp_lib"):
                write(overwrite)
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
