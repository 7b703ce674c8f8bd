"""Command lines: ``dlp-prune`` (:mod:`.prune`), ``dlp-search`` (:mod:`.search`), the flags they share (:mod:`.flags`).

``dlp_lib.cli.main`` is dlp-prune's entry point, as before the package existed.
"""

from .destinations import record_destination  # noqa: F401
from .flags import (  # noqa: F401
    DEFAULT_SPARSITY,
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_pruning_arguments,
    add_sparsegpt_arguments,
    one_line,
    resolve_device,
    start_logging,
)
from .prune import (  # noqa: F401
    DENSE,
    LORA_FLAGS,
    PROG,
    build_parser,
    build_prune_config,
    build_recovery_config,
    build_run_config,
    main,
    summary,
)
