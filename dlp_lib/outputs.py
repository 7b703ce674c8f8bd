"""The places a user names for an output: a writer never deletes or changes a file it did not write.

A directory output (a saved model, an ONNX export) is written whole into a temporary folder beside its
place and renamed onto it (:func:`dlp_lib.cache.atomic_path`), with a manifest, ``dlp_lib-manifest.json``,
listing every folder and file written and each file's size and modification time (or, for a folder that
git checks out with new times, its sha256). The place may be

- missing, or an empty directory: written;
- a directory whose manifest lists everything in it, unchanged: replaced only when the caller allows it
  (``overwrite=True``; dlp-prune's ``--overwrite``), else refused naming that flag;
- anything else (a file, a link, a folder holding files the manifest does not list or that changed since,
  a folder without a manifest): refused with one line naming a few of those files and what to do.
  Nothing is deleted.

A replaced folder keeps its permission bits; a new one gets the umask's (never a temporary's 0700). The
place is checked when the writer starts, before its work, and again just before the rename. A single
file (a table, a figure) may replace a file of its name, never a directory (:func:`check_output_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .cache import OutputError, atomic_path, check_writable

MANIFEST = "dlp_lib-manifest.json"
FORMAT = "dlp_lib.manifest/1"
EMBEDDED = "<!-- dlp_lib-manifest "  # a manifest inside another file the writer owns (a README)
SHOWN = 3  # names a refusal quotes


# ------------------------------------------------------------------------------------------ manifests
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path, hashes: bool) -> dict:
    status = path.stat()
    entry = {"size": status.st_size}
    entry |= {"sha256": _sha256(path)} if hashes else {"mtime_ns": status.st_mtime_ns}
    return entry


def _walk(directory: Path):
    """``(relative name, path, is a folder)`` of everything below ``directory``; links count as files
    (no writer here makes one, so a link is never a listed entry)."""
    for root, folders, files in os.walk(directory):
        base = Path(root)
        for name in folders:
            yield (base / name).relative_to(directory).as_posix(), base / name, not (base / name).is_symlink()
        for name in files:
            yield (base / name).relative_to(directory).as_posix(), base / name, False


def manifest_of(directory: str | os.PathLike, what: str, hashes: bool = False, holder: str = MANIFEST) -> dict:
    """The manifest of the finished ``directory``: its folders and each file's size and modification time
    (``hashes``: sha256 instead); ``holder``, the file that will hold it, and links are not listed."""
    directory = Path(directory)
    folders, files = [], {}
    for name, path, folder in _walk(directory):
        if folder:
            folders.append(name)
        elif name != holder and not path.is_symlink():
            files[name] = _entry(path, hashes)
    return {"format": FORMAT, "written_by": what, "directories": sorted(folders), "files": dict(sorted(files.items()))}


def write_manifest(directory: str | os.PathLike, what: str) -> None:
    """Write ``dlp_lib-manifest.json`` into the finished ``directory`` (sizes and modification times)."""
    manifest = manifest_of(directory, what)
    manifest["note"] = (
        "the files dlp_lib wrote here; it replaces this folder only when asked to, and only while it holds "
        "these files, unchanged, and nothing else"
    )
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def embedded_manifest(manifest: dict) -> str:
    """A manifest as an HTML comment line, for a file the writer owns that a reader sees rendered (a README)."""
    return f"{EMBEDDED}{json.dumps(manifest, separators=(',', ':'))} -->\n"


def read_manifest(directory: str | os.PathLike, holder: str = MANIFEST) -> dict | None:
    """The manifest that ``holder`` in ``directory`` holds (a JSON file, or another file with an embedded
    one), or None: no such file, unreadable, or not a manifest."""
    try:
        text = (Path(directory) / holder).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if holder != MANIFEST:
        start = text.rfind(EMBEDDED)
        if start < 0:
            return None
        text = text[start + len(EMBEDDED) :].rsplit("-->", 1)[0]
    try:
        manifest = json.loads(text)
    except ValueError:
        return None
    listed = isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
    return manifest if listed and manifest.get("format") == FORMAT else None


def _unchanged(path: Path, entry) -> bool:
    if not isinstance(entry, dict) or path.is_symlink():
        return False
    status = path.stat()
    if status.st_size != entry.get("size"):
        return False
    if "sha256" in entry:
        return _sha256(path) == entry["sha256"]
    return status.st_mtime_ns == entry.get("mtime_ns")


def unlisted_or_changed(directory: str | os.PathLike, manifest: dict, holder: str = MANIFEST) -> list[str]:
    """What ``directory`` holds that ``manifest`` does not list, or that changed since it was written
    (size, modification time or hash): relative names, sorted."""
    directory = Path(directory)
    folders, files = set(manifest.get("directories") or ()), manifest["files"]
    foreign = []
    for name, path, folder in _walk(directory):
        if name == holder:
            continue
        if not (name in folders if folder else name in files and _unchanged(path, files[name])):
            foreign.append(name)
    return sorted(foreign)


# ------------------------------------------------------------------------------------------ the checks
def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_output_directory(
    path: str | os.PathLike,
    what: str,
    kind: str,
    overwrite: bool = False,
    flag: str = "overwrite=True",
    legacy: Callable[[Path], list[str] | None] | None = None,
    holder: str = MANIFEST,
) -> Path:
    """Raise an OutputError (one line: what to do) unless directory ``path`` may receive ``what``; see the
    module's docstring. ``kind`` names an earlier output in the messages ("a saved model"), ``flag`` the
    caller's permission to replace it. ``legacy(path)`` judges a folder without a manifest: the names in
    it that are not an earlier output's (an empty list: all are), or None when it is not one (it may also
    raise its own refusal). ``holder`` is the file that holds the manifest. Returns ``path``."""
    path = Path(path).expanduser()
    check_writable(path, what)  # names the file system can hold, before a stat of them could fail
    if path.is_symlink():
        raise OutputError(f"cannot write {what} to {path}: it is a symbolic link; give a new directory path")
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write {what} to {path}: it is a file; give a directory path")
    if not path.exists() or not any(path.iterdir()):
        return path
    manifest = read_manifest(path, holder)
    if manifest is not None:
        foreign = unlisted_or_changed(path, manifest, holder)
    else:
        foreign = legacy(path) if legacy is not None else None
        if foreign is None:
            raise OutputError(
                f"{path} is not empty and not a directory written by dlp_lib (no {MANIFEST}); nothing there is "
                "deleted: give a new or empty directory"
            )
    if foreign:
        raise OutputError(
            f"{path} holds files that are not {kind} dlp_lib wrote, or that changed since ({_names(foreign)}); "
            "nothing was deleted: move them away, or give a new directory"
        )
    if not overwrite:
        raise OutputError(
            f"{path} holds {kind} that dlp_lib wrote earlier: pass {flag} to replace it, or give a new directory"
        )
    return path


@contextmanager
def directory_output(
    path: str | os.PathLike,
    what: str,
    kind: str,
    overwrite: bool = False,
    flag: str = "overwrite=True",
    legacy: Callable[[Path], list[str] | None] | None = None,
):
    """Yield a new empty folder to write ``what`` into; when the block succeeds, write its manifest and put
    it in ``path``'s place, checked (:func:`check_output_directory`) before the block and again just
    before the rename, as the place may have changed during the work. An interrupted or failed block
    leaves ``path`` as it was."""
    path = check_output_directory(path, what, kind, overwrite, flag, legacy)
    with atomic_path(path, what=what) as tmp:
        tmp.mkdir()
        yield tmp
        write_manifest(tmp, what)
        check_output_directory(path, what, kind, overwrite, flag, legacy)


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Raise ConfigError unless a file ``what`` may be written at ``path``: a writable place, names the file
    system can hold, and no directory of that name there (a file of the name is replaced: it is the
    writer's own, as tables/ and figures/ hold). Returns ``path``."""
    path = Path(path)
    check_writable(path, what)
    if path.is_dir():
        raise OutputError(
            f"cannot write {what} {path}: a directory of that name is there; move it away or choose another folder"
        )
    return path
