"""Where cached artefacts live; atomic writes, so an interrupted run never leaves half a file and a failed
one (a full disk, a read-only place) says so in one line; cache reads that treat an unreadable file as
missing; and output paths checked up front: writable, and names the file system can hold."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import ConfigError

log = logging.getLogger(__name__)


class OutputError(ConfigError, OSError):
    """An output that cannot be written where it was asked for: the message names the file and what to do.
    A ConfigError, so the commands print it as one line (exit 2); an OSError carrying the ``errno`` behind
    it (if any), so a caller that handles a failed write (``except OSError``) still does."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


def cache_root() -> Path:
    """The cache directory: ``$DLP_CACHE_DIR`` if set, else ``~/.cache/dlp_lib``."""
    root = os.environ.get("DLP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dlp_lib")
    return Path(root)


def check_cache_root() -> Path:
    """The cache directory, after checking that it is (or can become) a directory that accepts files; a
    ConfigError naming DLP_CACHE_DIR otherwise (a read-only folder, a file)."""
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
TEMPORARY_NAME_BYTES = 64  # of the target's name in its temporary's: a long name must leave room for the rest


def _temporary_prefix(path: Path) -> str:
    # names the writer, so a later writer of the same target can tell a dead process's leftovers
    return f".{_name_head(path)}.tmp.{os.getpid()}@{socket.gethostname()}."


def _name_head(path: Path) -> str:
    """The target's name cut to TEMPORARY_NAME_BYTES bytes: a temporary's name, longer by about 90
    bytes, must still fit the file system's limit when the target's name nearly does."""
    return os.fsdecode(os.fsencode(path.name)[:TEMPORARY_NAME_BYTES])


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
    pattern = re.compile(rf"^\.{re.escape(_name_head(path))}\.tmp\.(\d+)@(.+)\.[^.]+$")
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
    (another process finished the same cache first) is kept instead. Retried, for concurrent writers.
    Whether ``path`` may be replaced at all is the caller's to decide (``outputs.directory_output``
    for the outputs a user names)."""
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


def _keep_mode(new: Path, path: Path) -> None:
    """Give ``new`` the permission bits of the ``path`` it replaces: a folder or file the user opened
    to a group, or closed, stays so (a new one keeps the umask's)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    os.chmod(new, mode)


def _put_in_place(tmp: Path, path: Path, keep_existing: bool, what: str) -> None:
    """Rename the finished ``tmp`` onto ``path``; a directory never replaces a file nor a file a
    directory (it would delete what is there: a user's, as no writer here makes both)."""
    if tmp.is_dir():
        if path.exists() and not path.is_dir():
            raise OutputError(
                f"cannot write {_what(what)}{path}: a file is there; move it away or choose another place"
            )
        _keep_mode(tmp, path)
        _replace_directory(tmp, path, keep_existing)
    else:
        if path.is_dir():
            raise OutputError(
                f"cannot write {_what(what)}{path}: a directory is there; move it away or choose another place"
            )
        _keep_mode(tmp, path)
        os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike, keep_existing: bool = False, what: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories: the caller writes whatever it wants at the yielded path. Two
    processes writing the same path at once both succeed and leave one complete copy. With
    ``keep_existing`` (a cache of deterministic content) a directory that another process finished
    first is kept and this one discarded. What it replaces keeps its permission bits; a file is never
    put where a directory is, nor a directory where a file is (OutputError). A write that fails for its
    place (a full disk, a read-only or forbidden folder, a name too long: :func:`write_errors`) raises
    an OutputError naming ``what`` and ``path``; either way nothing half-written is left.
    """
    path = Path(path)
    with write_errors(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), dir=path.parent)) / path.name
    try:
        with write_errors(path, what):  # before the cleanup: the free space is read with the half file still there
            yield tmp
            _put_in_place(tmp, path, keep_existing, what)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


# ------------------------------------------------------------------------------------- failed writes
# errno -> what it means for a write, and what to do
WRITE_FAILURES = {
    errno.ENOSPC: ("the disk is full", "free space there or choose another place"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space in your quota or choose another place"),
    errno.ENAMETOOLONG: ("a name is too long for the file system", "choose a shorter path"),
    errno.EACCES: ("permission denied", "choose a place you may write to"),
    errno.EROFS: ("the file system is read-only", "choose a writable place"),
}
# what torch's serializer says when a write comes short (it keeps no errno): a full disk, when it is
SERIALIZER_FAILURES = ("unexpected pos", "file write failed", "failed writing")
NEARLY_FULL_BYTES = 256 * 2**20  # or 1% of the disk, whichever is more


def _what(what: str) -> str:
    return f"{what} " if what else ""


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``os.path.exists``: never raises, even for a name too long)."""
    path = Path(path).absolute()
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    return path


def _disk_space(path: Path) -> tuple[int, bool] | None:
    """``(free bytes, nearly full)`` of the disk ``path`` would be on; None where it cannot be read."""
    try:
        usage = shutil.disk_usage(_nearest_existing(path))
    except OSError:
        return None
    return usage.free, usage.free < max(NEARLY_FULL_BYTES, usage.total // 100)


def _concerns(filename, path: Path) -> bool:
    """Whether an OSError's ``filename`` is the output's (the target, its temporary beside it, or a
    folder on the way to it) rather than an input the block was reading."""
    if filename is None:
        return True
    name, place = Path(os.fsdecode(filename)).absolute(), path.parent.absolute()
    return name == place or place in name.parents or name in place.parents


def write_failure(err: BaseException, path: Path) -> int | None:
    """The errno of WRITE_FAILURES that ``err``, raised while writing ``path``, stands for; None for any
    other error (left as it is). Reads the errno of an OSError, the error text of a library that wraps
    one (safetensors, onnx), and torch's serializer's short write when the disk is nearly full."""
    if isinstance(err, OSError):
        if err.errno not in WRITE_FAILURES:
            return None
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)  # reading never fills a disk
        return err.errno if full or _concerns(err.filename, path) else None
    if not isinstance(err, Exception):
        return None  # KeyboardInterrupt, SystemExit: not a failed write
    text = str(err)
    for code in WRITE_FAILURES:
        if os.strerror(code) in text:
            return code
    if isinstance(err, RuntimeError) and any(s in text for s in SERIALIZER_FAILURES):
        space = _disk_space(path)
        return errno.ENOSPC if space is not None and space[1] else None
    return None


def write_failure_message(code: int, path: Path, what: str = "") -> str:
    """One line: which output could not be written, why, and what to do."""
    reason, remedy = WRITE_FAILURES[code]
    folder = _nearest_existing(path.parent)
    if code in (errno.ENOSPC, errno.EDQUOT):
        space = _disk_space(path)
        if space is not None:
            reason += f" ({space[0] / 1e6:.0f} MB free in {folder})"
    elif code in (errno.EACCES, errno.EROFS):
        reason += f" (in {folder})"  # not the temporary's name: the folder is what to change
    return f"cannot write {_what(what)}{_shown(path)}: {reason}; {remedy} (nothing half-written is left)"


@contextmanager
def write_errors(path: str | os.PathLike, what: str = ""):
    """Turn an error that writing ``path`` raised because of its place (:func:`write_failure`: a full
    disk, an exceeded quota, a read-only or forbidden folder, a name too long) into an OutputError that
    names ``what`` and ``path`` and what to do; any other error passes unchanged. ``atomic_path`` puts
    every write of the package inside one."""
    path = Path(path)
    try:
        yield
    except OutputError:
        raise
    except BaseException as err:
        code = write_failure(err, path)
        if code is None:
            raise
        raise OutputError(write_failure_message(code, path, what), code) from err


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
# bytes a writer adds below the path it is given: its temporary folder's name, a saved model's file names
PATH_ROOM = 256


def _limit(directory: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(directory, name)
    except (OSError, ValueError):
        return default


def _shown(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"


def check_name_lengths(path: str | os.PathLike, what: str) -> Path:
    """Raise an OutputError unless the file system below ``path``'s nearest existing folder can hold its
    names: each new component at most NAME_MAX bytes (usually 255), the whole path PATH_ROOM bytes under
    PATH_MAX (usually 4096), for the temporaries and files written below it. Text only: no file is touched."""
    path = Path(path).expanduser().absolute()
    ancestor = _nearest_existing(path)
    name_max = _limit(ancestor, "PC_NAME_MAX", 255)
    path_max = _limit(ancestor, "PC_PATH_MAX", 4096)
    for part in path.relative_to(ancestor).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise OutputError(
                f"cannot write {what} to {_shown(path)}: the name {part[:40]}... is {size} bytes long and the file "
                f"system takes at most {name_max}; choose a shorter name",
                errno.ENAMETOOLONG,
            )
    size = len(os.fsencode(str(path)))
    if size + PATH_ROOM > path_max:
        raise OutputError(
            f"cannot write {what} to {_shown(path)}: the path is {size} bytes long and an output's may be at most "
            f"{path_max - PATH_ROOM} (the file system's {path_max}, less room for the names written below it); "
            "choose a shorter path",
            errno.ENAMETOOLONG,
        )
    return path


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Raise ConfigError now unless ``path`` (a file or directory to be written later) can be created:
    names the file system can hold (:func:`check_name_lengths`), and a nearest existing ancestor that is a
    directory accepting a new file (probed with a temporary file, removed at once), so a run fails before
    its work rather than when it saves."""
    path = check_name_lengths(path, what)
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
