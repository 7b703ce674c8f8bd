"""Experiments: what the numbered notebooks run (profiles, specs, cached runs, cost, frames, dense statistics).

The notebooks in ``notebooks/`` stay thin: a parameters cell (``profile``, ``model``, output folders),
then calls into this module, :mod:`dlp_lib.reports` (tables) and :mod:`dlp_lib.plots` (figures):

    profile(name) ──► run specs (one per table cell) ──► cached_run: a result record per configuration
    ──► records_frame (pandas) ──► reports.write_table (CSV, Markdown, LaTeX) and plots.plot_*

``cached_run`` keys every record by a hash of the full run configuration, so a later notebook (or an
interrupted ``make reproduce``) reuses what an earlier one computed, and allocation-only analyses
(``dense_statistics``) reuse the dense statistics cached by the pipeline: trying another allocator or
hyper-parameter needs no forward pass.

Example::

    from dlp_lib import experiments as ex, reports
    prof = ex.profile("quick")
    records = ex.run_specs(prof, ex.main_specs(prof), results_dir="results")
    numbers, display, bold = reports.main_table(ex.records_frame(records), prof)  # numbers, strings, bold mask

Modules, each importing only those above it: ``profiles`` (the settings), ``labels`` (names in tables),
``runs`` (a configuration per spec, the record cache), ``specs`` (the runs each notebook asks for), ``dsa``
(the allocation search for notebook 10), ``evopress`` (EvoPress's search for notebook 11), ``cost``
(seconds per run), ``frames`` (records as pandas), ``dense`` (dense statistics and the allocation analyses
on them), ``speed`` (notebook 09's CPU measurements as a record); ``archive`` copies a reproduction's
records into the committed ``records/`` (``make records``). Every public name but ``archive``'s is
importable from ``dlp_lib.experiments`` itself.
"""

from ..log import setup_logging  # noqa: F401  (the grid calls ex.setup_logging(); the notebooks, notebook_profile)
from .atp import (  # noqa: F401
    allocation_profiles,
    atp_choice,
    atp_choice_frame,
    atp_choices,
    atp_path,
    profile_correlations,
    stored_atp_choice,
)
from .cost import (  # noqa: F401
    GPU_7B_SECONDS,
    LLAMA2_7B_PARAMS,
    QUICK_SECONDS,
    WIKITEXT2_TEST_TOKENS,
    ZERO_SHOT_TOKENS,
    dsa_search_seconds,
    estimate_seconds,
    evopress_search_seconds,
    evopress_seconds,
    evopress_tokens,
    gpu_evopress_seconds,
    gpu_run_seconds,
    gpu_search_seconds,
    gpu_statistics_seconds,
    planned_runs,
    run_seconds,
)
from .dense import (  # noqa: F401
    DenseStatistics,
    allocation_frame,
    dense_facts_table,
    dense_statistics,
    dense_statistics_path,
    feasible_hyper_specs,
    hyperparameter_allocations,
    hyperparameter_table,
    load_dense_statistics,
    owl_column,
    stored_norms_cache,
)
from .dsa import (  # noqa: F401
    SEARCH_FIELDS,
    dsa_proxy_check,
    dsa_search,
    dsa_search_path,
    dsa_search_settings,
    proxy_check_picks,
    search_candidates,
    search_history,
    searched_graph,
    spearman,
    stored_dsa_search,
    table_block_sparsity,
)
from .evopress import (  # noqa: F401
    evopress,
    evopress_allocations,
    evopress_check,
    evopress_check_specs,
    evopress_history,
    evopress_linear_sparsity,
    evopress_path,
    evopress_settings,
    pick_path,
    stored_evopress,
)
from .frames import (  # noqa: F401
    block_sparsity_frame,
    blocks_frame,
    dense_perplexity,
    record_row,
    records_frame,
    runs_table,
)
from .labels import (  # noqa: F401
    ALLOCATION_COLORS,
    ALLOCATION_NAMES,
    HYPER_ALLOCATION,
    HYPER_NAMES,
    METHOD_NAMES,
    TABLE_NAMES,
    calibration_name,
    data_tag,
    describe,
    model_name,
    percent,
    source_name,
    sparsegpt_arithmetic,
    training_name,
)
from .notebook import notebook_profile  # noqa: F401  (each notebook's first cell checks its parameters)
from .profiles import (  # noqa: F401
    ARITHMETIC_FIELDS,
    HYPER_FIELDS,
    PROFILES,
    REHEARSAL_DIR,
    RUN_FIELDS,
    profile,
)
from .runs import (  # noqa: F401
    RECORDS_ONLY_ENV,
    RunList,
    before_computing,
    cached_run,
    headline,
    records_only,
    run_config,
    run_label,
    run_spec,
    run_specs,
    stored_runs,
    stored_spec,
    uses_calibration,
)
from .specs import (  # noqa: F401
    dense_spec,
    float_sensitivity_specs,
    hyper_specs,
    main_specs,
    nm_specs,
    notebook_specs,
    other_seeds,
    recent_specs,
    recovery_profile,
    recovery_specs,
    ria_specs,
    seeded,
    spec_seeds,
    sweep_specs,
    table_allocations,
    zero_shot_profile,
    zero_shot_seeds,
    zero_shot_specs,
)
from .speed import live_speed, live_speed_path, stored_live_speed  # noqa: F401
