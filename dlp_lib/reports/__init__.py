"""Tables: one module per table family (perplexity, zero_shot, tolerance, recovery, dsa, evopress) over ``format``.

records (dlp_lib.experiments) ──► records_frame ──► main_table / nm_table / ... ──► write_table
"""

from .dsa import (  # noqa: F401
    dsa_search_summary,
    dsa_verdicts,
    dsa_versus,
    proxy_check_caption,
)
from .evopress import (  # noqa: F401
    evopress_check_caption,
    evopress_summary,
    evopress_table,
)
from .format import (  # noqa: F401
    format_perplexity,
    format_tolerance,
    to_latex,
    to_markdown,
    write_table,
)
from .perplexity import (  # noqa: F401
    dsa_note,
    evopress_note,
    machine_of,
    main_table,
    main_table_caption,
    main_table_runs,
    nm_caption,
    nm_display,
    nm_table,
    orderings,
    sweep_table,
    write_main_table_json,
)
from .recovery import (  # noqa: F401
    recovery_caption,
    recovery_curves,
    recovery_display,
    recovery_orderings,
    recovery_runs,
)
from .tolerance import (  # noqa: F401
    against_default,
    against_uniform,
    float_sensitivity_runs,
    stored_noise,
    tolerance_caption,
    tolerance_display,
    with_noise,
)
from .zero_shot import (  # noqa: F401
    CHANCE,
    TASK_NAMES,
    below_chance,
    mean_standard_error,
    task_errors,
    write_zero_shot_json,
    zero_shot_caption,
    zero_shot_runs,
    zero_shot_settings,
    zero_shot_table,
)
