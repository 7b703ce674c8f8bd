"""Save a pruned model as a plain Hugging Face directory that ``from_pretrained`` loads.

The directory holds the weights (safetensors, zeros stored densely: the file is as large as the dense
model's), the tokenizer, and ``sparsity.json``: the achieved sparsity per block, per linear and
overall, with the allocation and pruning sections of the run's record when given. It is written into
a temporary directory beside the target and renamed at the end, so an interrupted save leaves nothing
half-written.

Example::

    save_pruned_model(model, tokenizer, "out/smollm2-wanda-dlp-0.7", record)
    model = AutoModelForCausalLM.from_pretrained("out/smollm2-wanda-dlp-0.7")
"""

from __future__ import annotations

import json
from pathlib import Path

from .cache import atomic_path
from .config import ConfigError
from .prune import decoder_sparsity

SPARSITY_FILE = "sparsity.json"


def check_save_directory(directory: str | Path) -> Path:
    """Raise ConfigError unless ``directory`` can be (re)written by :func:`save_pruned_model`.

    A save replaces the whole directory, so only a missing or empty directory, or one that a previous
    save wrote (it holds ``sparsity.json``), may be given; anything else is refused rather than deleted.
    """
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"cannot save the model to {path}: it is a file; give a directory path")
    if path.is_dir() and any(path.iterdir()) and not (path / SPARSITY_FILE).is_file():
        raise ConfigError(
            f"{path} exists and is not a directory written by dlp_lib (no {SPARSITY_FILE}); "
            "saving would replace its contents: give a new or empty directory"
        )
    return path


def sparsity_summary(model, record: dict | None = None) -> dict:
    """What ``sparsity.json`` holds: achieved sparsities measured on ``model`` and, if given, the
    record's configuration, allocation and pruning sections."""
    per_block, per_linear, overall = decoder_sparsity(model)
    summary = {"overall": overall, "blocks": per_block, "linears": per_linear}
    if record:
        for key in ("config", "allocation", "pruning"):
            if key in record:
                summary[key] = record[key]
    return summary


def save_pruned_model(model, tokenizer, directory: str | Path, record: dict | None = None) -> Path:
    """Write ``model`` (safetensors), ``tokenizer`` (if not None) and ``sparsity.json`` to ``directory``.

    Args:
        model: a (pruned) transformers causal LM of a supported architecture.
        tokenizer: its tokenizer, or None to save the weights only.
        directory: the output directory; replaced as a whole if a previous save wrote it.
        record: a result record from ``pipeline.run``; its allocation and pruning go into sparsity.json.

    Returns the directory's path.
    """
    path = check_save_directory(directory)
    summary = sparsity_summary(model, record)
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / SPARSITY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return path
