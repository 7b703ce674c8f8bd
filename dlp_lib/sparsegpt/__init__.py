"""SparseGPT (docs/methods.md#sparsegpt): the solver and its column sweeps side by side, bit for bit alike.

:mod:`.solver` (the OBS solver, the block loop, which sweep runs where), :mod:`.sweep_torch` (the PyTorch
loop, any device), :mod:`.sweep_c` (a C loop compiled from ``sweep.c`` on first use, CPU), :mod:`.sweep_triton`
(a Triton kernel, CUDA).
"""

from .solver import (  # noqa: F401
    LEGACY_ENVIRONMENT,
    LEGACY_VALUES,
    _solve,
    _sweep,
    check_no_legacy_environment,
    inverse_hessian_cholesky,
    sparsegpt_prune,
    sweep_backend,
    triton_check,
)
from .sweep_c import (  # noqa: F401
    CHUNK,
    COMPILE_FLAGS,
    SOURCE,
    c_sweep,
    compiled_sweep,
    compiler,
    sweep_columns,
)
from .sweep_torch import (  # noqa: F401
    torch_sweep,
)
from .sweep_triton import (  # noqa: F401
    BLOCK_ROWS,
    LAUNCH_OPTIONS,
    interpreted,
    triton_available,
    triton_sweep,
)
