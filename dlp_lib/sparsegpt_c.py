"""The C column sweep's former module: now :mod:`dlp_lib.sparsegpt.sweep_c` (kept importable)."""

from .sparsegpt.sweep_c import (  # noqa: F401
    CHUNK,
    COMPILE_FLAGS,
    SOURCE,
    _build,
    _library_path,
    c_sweep,
    compiled_sweep,
    compiler,
    sweep_columns,
)
