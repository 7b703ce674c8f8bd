"""The Triton column sweep's former module: now :mod:`dlp_lib.sparsegpt.sweep_triton` (kept importable)."""

from .sparsegpt.sweep_triton import (  # noqa: F401
    BLOCK_ROWS,
    LAUNCH_OPTIONS,
    _kernel,
    interpreted,
    triton_available,
    triton_sweep,
)
