"""The experiment grid: every run a profile's notebooks need, as independent jobs through submitit.

    python -m dlp_lib.grid --profile paper --model meta-llama/Llama-2-7b-hf --dry-run
    python -m dlp_lib.grid --profile paper --model meta-llama/Llama-2-7b-hf --executor slurm \\
        --partition gpu --gpus 1 --time 240 --mem 64 --parallel 32
    python -m dlp_lib.grid --profile quick --executor local --workers 2

The jobs are the ones the notebooks ask for (the same spec functions of ``dlp_lib.experiments``), in
four phases, each started when the one before has finished:

1. the dense statistics of each calibration seed, one job per seed, so that no two jobs ever compute
   them at once (the jobs of phase 2 read them from ``$DLP_CACHE_DIR``; put it on the shared file
   system on a cluster);
2. every run whose setting is known (hyper-parameter runs that the statistics show infeasible are left
   out, as notebook 05 leaves them out) and DSA's allocation search;
3. the runs that need the search's expression: the DSA rows of the main table and the proxy check;
4. notebook 09's CPU speed measurement, alone, so that no other job runs beside it while it times.

A job whose record (or statistics table, or search result) is already stored is skipped, so running
the grid again submits only what is missing or failed. Records are written atomically (a killed job
leaves none). Afterwards ``make render`` (notebooks with ``DLP_RECORDS_ONLY=1``) renders every notebook
from the records without computing anything.
"""

from .command import (  # noqa: F401
    build_parser,
    main,
)
from .estimate import (  # noqa: F401
    BENCH_RESULTS,
    GPU_7B_SECONDS,
    LLAMA2_7B_PARAMS,
    LLAMA_PARAMS,
    WIKITEXT2_TEST_TOKENS,
    ZERO_SHOT_TOKENS,
    estimate,
    format_estimate,
    format_jobs,
    gpu_seconds_7b,
    job_seconds,
    model_parameters,
)
from .execute import (  # noqa: F401
    Backend,
    Outcome,
    Summary,
    local_backend,
    run_grid,
    slurm_backend,
)
from .jobs import (  # noqa: F401
    PHASES,
    GridJob,
    plan,
    run_job,
)
