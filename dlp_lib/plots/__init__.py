"""Figures (matplotlib + seaborn), each returned as a ``Figure`` and saved as PNG and PDF by :func:`save_figure`.

Every figure names the model, data and profile it comes from. Modules: ``style`` (the look, saving),
``allocation`` (dense statistics and the allocations), ``results`` (the perplexity, accuracy and search
figures of notebooks 03-08 and 10), ``speed`` (notebook 09), ``evopress`` (notebook 11).
"""

from .allocation import (  # noqa: F401
    plot_allocation,
    plot_allocation_profiles,
    plot_dense_block_statistics,
)
from .evopress import (  # noqa: F401
    plot_evopress,
    plot_evopress_linears,
)
from .results import (  # noqa: F401
    plot_dsa_search,
    plot_hyperparameters,
    plot_main_table,
    plot_nm,
    plot_recovery,
    plot_sparsity_sweep,
    plot_zero_shot,
)
from .speed import (  # noqa: F401
    plot_engine_speedups,
    plot_speedup,
)
from .style import (  # noqa: F401
    _finish_axes,
    _style,
    save_figure,
)
