"""Labels and names for tables and captions: methods, allocations, models, data sources."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import (
    REFERENCE_HESSIAN,
    hessian_for_device,
)
from .profiles import ARITHMETIC_FIELDS

log = logging.getLogger(__name__)

METHOD_NAMES = {"dense": "Dense", "magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT", "ria": "RIA"}
ALLOCATION_NAMES = {
    "none": "–",
    "uniform": "Uniform",
    "owl": "OWL",
    "dlp": "DLP",
    "dsa": "DSA",
    "evopress": "EvoPress",
    "alphapruning": "AlphaPruning",
    "atp": "ATP",
    "lsa": "LSA",
}
# the main table's DSA row is the expression our search found (not DSA's published one); its EvoPress row
# the per-linear sparsities our EvoPress search found for that pruner
# ATP's beta chosen on held-out calibration text (the authors choose it on the test perplexity)
TABLE_NAMES = {
    **ALLOCATION_NAMES,
    "dsa": "DSA (searched)",
    "evopress": "EvoPress (searched)",
    "atp": "ATP (β held-out)",
}
ALLOCATION_COLORS = {
    "uniform": "#7f7f7f",
    "owl": "#1f77b4",
    "dlp": "#d62728",
    "dsa": "#2ca02c",
    "evopress": "#9467bd",
    "alphapruning": "#ff7f0e",
    "atp": "#8c564b",
    "lsa": "#17becf",
}
HYPER_NAMES = {"dlp_alpha": "DLP α", "owl_lambda": "OWL λ (Lamda)", "owl_m": "OWL M (outlier threshold)"}
HYPER_ALLOCATION = {"dlp_alpha": "dlp", "owl_lambda": "owl", "owl_m": "owl"}
_MODEL_LABELS = {
    "smollm2-135m": ("SmolLM2-135M", "SmolLM2-135M-Instruct (embedded GGUF, dequantised to fp32; not LLaMA)")
}
_SOURCE_LABELS = {
    "wiki-extracts": ("Wikipedia extracts", "English Wikipedia lead sections (embedded; not C4 or WikiText-2)"),
    "c4": ("C4", "C4 (allenai/c4 en, first train shard)"),
    "wikitext2": ("WikiText-2", "WikiText-2 (wikitext-2-raw-v1 test)"),
}


def model_name(prof: dict) -> str:
    """A short display name of the profile's model: ``SmolLM2-135M``, ``Llama-2-7b-hf``."""
    spec = str(prof["model"])
    if spec in _MODEL_LABELS:
        return _MODEL_LABELS[spec][0]
    return Path(spec.rstrip("/")).name.removesuffix(".gguf")


def source_name(source: str | None, long: bool = False) -> str:
    if source is None:
        return "none"
    kind = source.split(":", 1)[0]
    if kind in _SOURCE_LABELS:
        return _SOURCE_LABELS[kind][int(long)]
    return Path(source).name


def calibration_name(source: str) -> str:
    """The long name of a calibration source, with how C4's windows are drawn."""
    sampler = ", documents drawn by the papers' sampler" if source.split(":", 1)[0] == "c4" else ""
    return source_name(source, long=True) + sampler


def training_name(source: str) -> str:
    """The long name of a LoRA training source, with how C4's windows are made."""
    grouping = (
        ", its documents in file order, concatenated (run_clm's grouping)" if source.split(":", 1)[0] == "c4" else ""
    )
    return source_name(source, long=True) + grouping


def data_tag(prof: dict) -> str:
    """One line for figure titles: what model and data the numbers come from."""
    return f"{model_name(prof)} · eval: {source_name(prof['eval'])} · profile {prof.get('name', '?')}"


def describe(prof: dict) -> str:
    """Markdown bullet list saying exactly what model, data and settings a profile uses."""
    model = _MODEL_LABELS.get(prof["model"], (None, prof["model"]))[1]
    windows = "all non-overlapping" if prof["eval_windows"] is None else f"the first {prof['eval_windows']}"
    lines = [
        f"- **profile** `{prof.get('name', '?')}`",
        f"- **model**: {model}",
        f"- **calibration**: {prof['nsamples']} windows × {prof['seqlen']} tokens of "
        f"{calibration_name(prof['calibration'])}, seed {prof['seed']}",
        f"- **evaluation**: perplexity over {windows} {prof['seqlen']}-token windows of "
        f"{source_name(prof['eval'], long=True)}",
        f"- **device**: {prof['device']}, dtype {prof['dtype']}",
    ]
    if _arithmetic_worth_saying(prof):
        lines.append(f"- **SparseGPT**: {sparsegpt_arithmetic(prof)}")
    return "\n".join(lines)


_HESSIAN_WORDS = {
    "fp32": "Hessians in the reference's fp32 arithmetic",
    "half": "Hessians from the bf16/fp16 activations as they are (exact products, fp32 sums; tensor cores on CUDA)",
}


def sparsegpt_arithmetic(prof: dict) -> str:
    """SparseGPT's arithmetic in a profile, in words (the Hessian's as it runs on the profile's device)."""
    hessian = hessian_for_device(prof["sparsegpt_hessian"], prof["device"])
    return f"{_HESSIAN_WORDS[hessian]}; column loop `{prof['sparsegpt_sweep']}`"


def _arithmetic_worth_saying(prof: dict) -> bool:
    """Whether ``describe`` names SparseGPT's arithmetic: off the defaults, or on a device where "auto" is
    not the reference's."""
    chosen = any(prof[name] != "auto" for name in ARITHMETIC_FIELDS)
    return chosen or hessian_for_device("auto", prof["device"]) != REFERENCE_HESSIAN


def percent(sparsity: float) -> str:
    return f"{100 * sparsity:g}%"
