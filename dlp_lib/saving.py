"""Save a pruned model as a plain Hugging Face directory that ``from_pretrained`` loads.

The directory holds the weights (safetensors, zeros stored densely: the file is as large as the dense
model's), the tokenizer, and ``sparsity.json``: the achieved sparsity per block, per linear and
overall, with the allocation and pruning sections of the run's record when given, and
``dlp_lib-manifest.json``, the list of files written (:mod:`dlp_lib.outputs`). It is written into a
temporary directory beside the target and renamed at the end, so an interrupted save leaves nothing
half-written.

A save never deletes a file it did not write: the target may be a new or empty directory, or (with
``overwrite=True``; dlp-prune's ``--overwrite``) a directory an earlier save wrote that holds nothing
else and nothing changed since; anything else is refused with one line before any work.

A LoRA-recovered model (a peft model: sparse base + unmerged adapter, :mod:`dlp_lib.recovery`) is saved
as the sparse base in the directory itself and the adapter in peft format in ``adapter/``;
:func:`load_saved_model` loads both (``from_pretrained`` alone gives the sparse base without it).

Example::

    save_pruned_model(model, tokenizer, "out/smollm2-wanda-dlp-0.7", record)
    model = AutoModelForCausalLM.from_pretrained("out/smollm2-wanda-dlp-0.7")
    model, tokenizer = load_saved_model("out/smollm2-wanda-dlp-0.7-lora")  # base + adapter, if saved
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .layers import unwrapped
from .outputs import MANIFEST, check_output_directory, directory_output
from .prune import decoder_sparsity

SPARSITY_FILE = "sparsity.json"
ADAPTER_DIR = "adapter"
WHAT, KIND = "the pruned model", "a saved model"


@dataclass(frozen=True)
class SaveTarget(os.PathLike):
    """A save directory with the caller's permission to replace an earlier save there: a path wherever
    one is taken (``pipeline.run(save_model=...)`` hands it to :func:`save_pruned_model` as it is), so the
    permission a command line gave (``--overwrite``) reaches the save and its message names that flag."""

    path: str | os.PathLike
    overwrite: bool = False
    flag: str = "overwrite=True"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)


def _older_save(path: Path) -> list[str] | None:
    """A folder without a manifest that an older dlp_lib saved (it holds sparsity.json) is refused: which of
    its files that save wrote, and which were added or edited since, cannot be told, so none is deleted;
    any other folder without a manifest is not a saved model (None)."""
    if (path / SPARSITY_FILE).is_file():
        raise ConfigError(
            f"{path} holds a model saved by an older dlp_lib ({SPARSITY_FILE}, no {MANIFEST}), whose files cannot "
            "be told from ones added since: delete it yourself if nothing in it is yours, or give a new directory"
        )


def check_save_directory(directory: str | os.PathLike, overwrite: bool = False, flag: str = "overwrite=True") -> Path:
    """Raise ConfigError unless :func:`save_pruned_model` may write ``directory``: names the file system can
    hold in a writable place; a missing or empty directory; or, with ``overwrite`` (``flag`` is how the
    caller spells it, for the message), one an earlier save wrote whose manifest lists all it holds,
    unchanged. A file, a link, a folder with anything else in it, or a model saved before the manifest
    (sparsity.json without it) is refused, never deleted. Returns the path."""
    return check_output_directory(directory, WHAT, KIND, overwrite, flag, legacy=_older_save)


def sparsity_summary(model, record: dict | None = None) -> dict:
    """What ``sparsity.json`` holds: achieved sparsities measured on ``model`` and, if given, the
    record's configuration, allocation and pruning sections."""
    per_block, per_linear, overall = decoder_sparsity(model)
    summary = {"overall": overall, "blocks": per_block, "linears": per_linear}
    if record:
        for key in ("config", "allocation", "pruning", "recovery"):
            if key in record:
                summary[key] = record[key]
    return summary


def save_pruned_model(
    model, tokenizer, directory: str | os.PathLike, record: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``model`` (safetensors), ``tokenizer`` (if not None), ``sparsity.json`` and the manifest to
    ``directory``.

    Args:
        model: a (pruned) transformers causal LM of a supported architecture.
        tokenizer: its tokenizer, or None to save the weights only.
        directory: the output directory, new or empty (:func:`check_save_directory`; checked before
            the work and again before the rename); a :class:`SaveTarget` carries ``overwrite`` with it.
        record: a result record from ``pipeline.run``; its allocation, pruning and recovery sections go
            into sparsity.json.
        overwrite: replace the directory an earlier save wrote, as a whole, if it holds nothing else and
            nothing in it changed; its permission bits are kept.

    Returns the directory's path. A place that cannot take it (a full disk, ...) raises a one-line
    ConfigError (``cache.OutputError``); the directory is then as it was.
    """
    overwrite = overwrite or getattr(directory, "overwrite", False)
    flag = getattr(directory, "flag", "overwrite=True")
    with directory_output(directory, WHAT, KIND, overwrite, flag, legacy=_older_save) as tmp:
        summary = sparsity_summary(model, record)
        if is_adapted(model):
            save_base_weights(model, tmp)
            model.save_pretrained(tmp / ADAPTER_DIR)  # peft: adapter_config.json + adapter_model.safetensors
        else:
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / SPARSITY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return Path(directory).expanduser()


def is_adapted(model) -> bool:
    """Whether ``model`` is a peft model (a pruned base with a LoRA adapter attached)."""
    return unwrapped(model) is not model


def save_base_weights(adapted, directory: Path) -> None:
    """Save the sparse base of a peft model as a plain transformers checkpoint: the adapter's tensors
    left out and the wrapped linears under their own names (``q_proj.base_layer.weight`` -> ``q_proj.weight``)."""
    base = adapted.get_base_model()
    state = {
        name.replace(".base_layer.", "."): tensor
        for name, tensor in base.state_dict().items()
        if not any(part.startswith("lora_") for part in name.split("."))
    }
    base.save_pretrained(directory, state_dict=state)


def load_saved_model(directory: str | Path, dtype="auto", device: str = "cpu"):
    """``(model, tokenizer)`` from a directory written by :func:`save_pruned_model`: the sparse model,
    with its LoRA adapter attached (unmerged, as trained) when the directory holds one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import resolve_dtype

    path = Path(directory).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a saved model directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype)).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    if (path / ADAPTER_DIR / "adapter_config.json").is_file():
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, path / ADAPTER_DIR).eval()
    return model, tokenizer
