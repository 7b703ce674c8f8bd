"""Where cached artefacts live; atomic writes, so an interrupted run never leaves half a file; cache
reads that treat an unreadable file as missing; and output paths checked for writability up front."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The cache directory: ``$DLP_CACHE_DIR`` if set, else ``~/.cache/dlp_lib``."""
    root = os.environ.get("DLP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dlp_lib")
    return Path(root)


def check_cache_root() -> Path:
    """The cache directory, after checking that it is (or can become) a directory that accepts files; a
    ConfigError naming DLP_CACHE_DIR otherwise (a read-only folder, a file)."""
    from .config import ConfigError

    root = cache_root()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the cache folder {root} is a file; point DLP_CACHE_DIR at a directory")
    try:
        check_writable(root / ".probe", "the cache")
    except ConfigError as err:
        raise ConfigError(f"{err} (set DLP_CACHE_DIR to a writable directory)") from None
    return root


def stable_hash(obj, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object, independent of dict key order."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ------------------------------------------------------------------------------------- atomic writes
def _temporary_prefix(path: Path) -> str:
    # names the writer, so a later writer of the same target can tell a dead process's leftovers
    return f".{path.name}.tmp.{os.getpid()}@{socket.gethostname()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Remove the temporaries of ``path`` that processes of this host left when they were killed
    (SIGKILL, power cut: their ``finally`` never ran); returns how many. Live writers' are kept."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp\.(\d+)@(.+)\.[^.]+$")
    host, removed = socket.gethostname(), 0
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return 0
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match and match.group(2) == host and not _pid_alive(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)
            removed += 1
    return removed


def _replace_directory(new: Path, path: Path, keep_existing: bool) -> None:
    """Rename directory ``new`` onto ``path``. An existing ``path`` is first moved aside into ``new``'s
    temporary parent (removed afterwards); with ``keep_existing`` a ``path`` that appeared meanwhile
    (another process finished the same cache first) is kept instead. Retried, for concurrent writers."""
    for attempt in range(8):
        if path.exists():
            if keep_existing:
                return
            try:
                os.replace(path, new.parent / f".previous{attempt}")
            except FileNotFoundError:
                pass  # another writer moved it first
        try:
            os.rename(new, path)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(f"could not replace {path}: other processes keep writing it")


@contextmanager
def atomic_path(path: str | os.PathLike, keep_existing: bool = False):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories: the caller writes whatever it wants at the yielded path. Two
    processes writing the same path at once both succeed and leave one complete copy. With
    ``keep_existing`` (a cache of deterministic content) a directory that another process finished
    first is kept and this one discarded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_dir():
            _replace_directory(tmp, path, keep_existing)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")


# ------------------------------------------------------------------------------------- cache reads
def read_cache(path: str | os.PathLike, load: Callable[[Path], object], what: str):
    """``load(path)`` for a cache file, or None when the file is missing. A file that cannot be read
    (truncated by a crash, corrupt, or not what ``load`` checks for) is reported in a warning naming it
    and also gives None, so the caller rebuilds it and atomically writes over it: never used, never
    a crash."""
    path = Path(path)
    try:
        return load(path)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - whatever made it unreadable, the remedy is to rebuild it
        log.warning("%s %s is unreadable (%s); rebuilding it", what, path, " ".join(str(err).split())[:200])
        return None


def load_tensors(path: Path):
    """``torch.load`` of a dlp_lib cache file: tensors and plain containers only (``weights_only``:
    no pickled code runs, whoever wrote the file)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------- output paths
def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Raise ConfigError now unless ``path`` (a file or directory to be written later) can be created:
    its nearest existing ancestor must be a directory that accepts a new file (probed with a temporary
    file, removed at once), so a run fails before its work rather than when it saves."""
    from .config import ConfigError

    path = Path(path).expanduser().absolute()
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot write {what} to {path}: {ancestor} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dlp-write-probe.", dir=ancestor)
    except OSError as err:
        raise ConfigError(
            f"cannot write {what} to {path}: {ancestor} does not accept new files ({err.strerror}); "
            "give a path in a writable directory"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path
