"""Small C functions compiled on first use with the system C compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``) into the cache directory, once per source, compiler and flags; loaded with ctypes.

Used where a PyTorch loop spends its time in call overhead on small tensors: SparseGPT's column sweep
(``sparsegpt/sweep.c``) and LSA's greedy removal (``lsa_greedy.c``). Each caller keeps its PyTorch loop
for machines without a compiler. ``COMPILE_FLAGS`` keep IEEE arithmetic as PyTorch does it: no fused
multiply-add, no reassociation, so a C loop doing PyTorch's operations in PyTorch's order gives the same bits.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
from pathlib import Path

from .cache import atomic_path, cache_root

# -ffp-contract=off: a product rounded before the sum it enters, as PyTorch does (GCC's default fuses them)
COMPILE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]


def compiler() -> list[str] | None:
    """The C compiler command to build with: ``$CC`` if set (it may carry options), else the first of cc,
    gcc, clang on the PATH."""
    if os.environ.get("CC", "").strip():
        return shlex.split(os.environ["CC"])
    path = next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)
    return [path] if path else None


def library_path(source: Path, cc: list[str]) -> Path:
    """Where the build of ``source`` with this compiler lives (a new source or compiler: a new file)."""
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha256()
    for part in (source.read_bytes(), " ".join(cc).encode(), version.encode(), " ".join(COMPILE_FLAGS).encode()):
        key.update(part)
    key.update(platform.machine().encode())
    suffix = ".dylib" if platform.system() == "Darwin" else ".so"
    return cache_root() / "kernels" / f"{source.stem}-{key.hexdigest()[:16]}{suffix}"


def build(cc: list[str], source: Path, target: Path) -> None:
    """Compile ``source`` into the shared library ``target`` (written whole or not at all)."""
    with atomic_path(target, keep_existing=True) as tmp:
        result = subprocess.run(
            [*cc, *COMPILE_FLAGS, "-o", str(tmp), str(source)], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise OSError(f"{' '.join(cc)} exited with {result.returncode}: {result.stderr.strip()[-500:]}")


def load_library(source: Path) -> ctypes.CDLL:
    """The compiled ``source``, built first if needed. Raises LookupError without a compiler, OSError (or a
    subprocess error) when the build fails."""
    cc = compiler()
    if cc is None:
        raise LookupError("no C compiler found (set CC)")
    path = library_path(source, cc)
    if not path.exists():
        build(cc, source, path)
    return ctypes.CDLL(str(path))
