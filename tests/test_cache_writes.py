"""cache.atomic_path and outputs: what a write replaces (only its own target, with its permissions; never a
file by a directory or a directory by a file), names the file system cannot hold refused up front, failed
writes (a full disk, a read-only place) turned into one line, and the manifests that tell a folder we wrote
from a folder holding a user's files."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from dlp_lib import cache
from dlp_lib.cache import OutputError, atomic_path, check_name_lengths, check_writable, write_errors
from dlp_lib.config import ConfigError
from dlp_lib.outputs import (
    MANIFEST,
    check_output_directory,
    directory_output,
    embedded_manifest,
    manifest_of,
    read_manifest,
    unlisted_or_changed,
)

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 4736 vs 4624"


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------ atomic_path
def test_a_replaced_file_or_folder_keeps_its_permissions_and_a_new_folder_gets_the_umasks(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640

    folder = tmp_path / "folder"
    with atomic_path(folder) as tmp:
        tmp.mkdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask()  # not mkdtemp's 0700
    os.chmod(folder, 0o751)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("x")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o751 and (folder / "x").is_file()


def test_a_file_never_replaces_a_directory_nor_a_directory_a_file(tmp_path):
    folder = tmp_path / "name.csv"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    with pytest.raises(OutputError, match="a directory is there"):
        with atomic_path(folder) as tmp:
            tmp.write_text("table")
    assert (folder / "mine.txt").read_text() == "mine"

    a_file = tmp_path / "model"
    a_file.write_text("mine")
    with pytest.raises(OutputError, match="a file is there"):
        with atomic_path(a_file) as tmp:
            tmp.mkdir()
    assert a_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "name.csv"]  # no temporary left


def test_a_name_of_255_bytes_is_written_though_its_temporary_is_longer(tmp_path):
    target = tmp_path / ("n" * 250 + ".json")
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}" and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------------------------------ name lengths
def test_names_the_file_system_cannot_hold_are_refused_before_anything_is_touched(tmp_path):
    long_name = tmp_path / "new" / ("x" * 256) / "rec.json"
    with pytest.raises(OutputError, match="256 bytes long and the file system takes at most 255") as err:
        check_writable(long_name, "the record")
    assert err.value.errno == errno.ENAMETOOLONG and "\n" not in str(err.value)
    deep = tmp_path.joinpath(*["d" * 200] * 21)  # 4200 bytes in names of 200
    with pytest.raises(OutputError, match="choose a shorter path"):
        check_name_lengths(deep, "the model")
    assert list(tmp_path.iterdir()) == []
    assert check_name_lengths(tmp_path / ("x" * 255), "the record") == tmp_path / ("x" * 255)


# ------------------------------------------------------------------------------------------ failed writes
def test_a_full_disk_is_said_in_one_line_naming_the_file_and_leaves_the_old_one(tmp_path):
    target = tmp_path / "rec.json"
    target.write_text("old")
    with pytest.raises(OutputError) as err:
        with atomic_path(target, what="the record") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    message = str(err.value)
    assert message.startswith(f"cannot write the record {target}: the disk is full (") and "free space" in message
    assert isinstance(err.value, ConfigError) and isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["rec.json"]


def test_torchs_short_write_is_a_full_disk_only_when_the_disk_is_nearly_full(tmp_path, monkeypatch):
    target = tmp_path / "stats.pt"
    monkeypatch.setattr(cache, "_disk_space", lambda path: (10_000_000, True))
    with pytest.raises(OutputError, match="disk is full .10 MB free"):
        with write_errors(target, "the cache"):
            raise RuntimeError(TORCH_SHORT_WRITE)
    monkeypatch.setattr(cache, "_disk_space", lambda path: (10**12, False))
    with pytest.raises(RuntimeError, match="unexpected pos") as err:
        with write_errors(target, "the cache"):
            raise RuntimeError(TORCH_SHORT_WRITE)
    assert not isinstance(err.value, OutputError)  # another failure: its own traceback


def test_what_a_library_wraps_and_what_an_input_raises(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(OutputError, match="disk quota is exceeded"):  # safetensors' text of an OSError
        with write_errors(target):
            raise RuntimeError('Error while serializing: IoError(Os { code: 122, message: "Disk quota exceeded" })')
    with pytest.raises(OutputError, match="read-only"):
        with write_errors(target):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
    with pytest.raises(PermissionError):  # an input it could not read: not the output's fault
        with write_errors(target):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/etc/shadow")
    with pytest.raises(KeyboardInterrupt):
        with write_errors(target):
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------------------ manifests
def test_a_manifest_tells_what_was_added_or_changed(tmp_path):
    folder = tmp_path / "out"
    with directory_output(folder, "the export", "an export") as tmp:
        (tmp / "a.bin").write_bytes(b"123")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    manifest = read_manifest(folder)
    assert set(manifest["files"]) == {"a.bin", "sub/b.txt"} and manifest["directories"] == ["sub"]
    assert unlisted_or_changed(folder, manifest) == []
    (folder / "mine.txt").write_text("mine")
    (folder / "sub" / "b.txt").write_text("bb")
    (folder / "link").symlink_to(folder / "a.bin")
    (folder / "new").mkdir()
    assert unlisted_or_changed(folder, manifest) == ["link", "mine.txt", "new", "sub/b.txt"]

    hashed = manifest_of(folder, "the records", hashes=True, holder="README.md")
    (folder / "README.md").write_text("# notes\n" + embedded_manifest(hashed))
    os.utime(folder / "a.bin", ns=(0, 0))  # a git checkout's new times: the hashes still match
    assert unlisted_or_changed(folder, read_manifest(folder, "README.md"), "README.md") == ["link"]  # never listed


def test_a_folder_link_or_file_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_directory(tmp_path / "empty", "the export", "an export") == tmp_path / "empty"
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_directory(tmp_path / "link", "the export", "an export", overwrite=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST).write_text("not json")
    with pytest.raises(OutputError, match="not a directory written by dlp_lib"):
        check_output_directory(tmp_path / "broken", "the export", "an export", overwrite=True)
    with pytest.raises(OutputError, match="holds files that are not an export .* and 2 more"):
        check_output_directory(tmp_path, "the export", "an export", overwrite=True, legacy=lambda p: list("abcde"))
