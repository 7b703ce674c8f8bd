"""Save a pruned model as a plain Hugging Face directory that ``from_pretrained`` loads.

The directory holds the weights (safetensors, zeros stored densely: the file is as large as the dense
model's), the tokenizer, and ``sparsity.json``: the achieved sparsity per block, per linear and
overall, with the allocation and pruning sections of the run's record when given. It is written into
a temporary directory beside the target and renamed at the end, so an interrupted save leaves nothing
half-written.

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
from pathlib import Path

from .cache import atomic_path
from .config import ConfigError
from .layers import unwrapped
from .prune import decoder_sparsity

SPARSITY_FILE = "sparsity.json"
ADAPTER_DIR = "adapter"


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
        for key in ("config", "allocation", "pruning", "recovery"):
            if key in record:
                summary[key] = record[key]
    return summary


def save_pruned_model(model, tokenizer, directory: str | Path, record: dict | None = None) -> Path:
    """Write ``model`` (safetensors), ``tokenizer`` (if not None) and ``sparsity.json`` to ``directory``.

    Args:
        model: a (pruned) transformers causal LM of a supported architecture.
        tokenizer: its tokenizer, or None to save the weights only.
        directory: the output directory; replaced as a whole if a previous save wrote it.
        record: a result record from ``pipeline.run``; its allocation, pruning and recovery sections go
            into sparsity.json.

    Returns the directory's path.
    """
    path = check_save_directory(directory)
    summary = sparsity_summary(model, record)
    with atomic_path(path) as tmp:
        if is_adapted(model):
            save_base_weights(model, tmp)
            model.save_pretrained(tmp / ADAPTER_DIR)  # peft: adapter_config.json + adapter_model.safetensors
        else:
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / SPARSITY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return path


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
