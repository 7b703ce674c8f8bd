"""Notebook 09's live speed measurements as a record: measured once on the machine that runs the
notebook, then read back, so that ``make render`` redraws the speed tables without measuring anything."""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import read_cache, stable_hash, write_json_atomic
from ..results import hardware, machine_label
from .labels import model_name
from .runs import _json_object, before_computing

END_TO_END_PATTERNS = ("70%", "2:4")


def live_speed_path(prof: dict, results_dir: str | os.PathLike = "results") -> Path:
    """``results_dir/speed/<key>.json``, keyed by the model and the profile's speed settings."""
    key = stable_hash({"model": prof["model"], "speedup": prof["speedup"]})
    return Path(results_dir) / "speed" / f"{key}.json"


def stored_live_speed(prof: dict, results_dir: str | os.PathLike = "results") -> dict | None:
    """The stored measurement of the profile's speed settings, or None."""
    stored = read_cache(live_speed_path(prof, results_dir), _json_object, "speed measurement")
    return stored if stored is not None and stored.get("settings") == prof["speedup"] else None


def live_speed(prof: dict, results_dir: str | os.PathLike = "results") -> dict:
    """The profile's CPU speed measurements (``prof["speedup"]``): sparse products at 7B linear shapes and,
    if the profile asks, the model end to end with CSR linears. Read from ``live_speed_path`` when an
    earlier run stored them (``computed`` False), else measured here and stored (``computed`` True).
    ``machine`` names where they were measured."""
    path = live_speed_path(prof, results_dir)
    stored = stored_live_speed(prof, results_dir)
    if stored is not None:
        return {**stored, "computed": False}
    before_computing(f"no speed measurement in {path}")
    record = _measure(prof)
    write_json_atomic(path, record)
    return {**record, "computed": True}


def _measure(prof: dict) -> dict:
    import torch

    from .. import speedup
    from ..config import PruneConfig
    from ..models import load_model
    from ..prune import prune_model

    setting = prof["speedup"]
    info = hardware()
    with torch.no_grad():
        shapes, formats = speedup.live_shapes(setting), tuple(setting["formats"])
        products = speedup.cpu_linear_products(shapes, setting["tokens"], formats=formats, repeats=setting["repeats"])
        end_to_end = []
        configs = {"70%": PruneConfig("magnitude", 0.7), "2:4": PruneConfig("magnitude", 0.5, sparsity_type="2:4")}
        for pattern in END_TO_END_PATTERNS if setting["end_to_end"] else ():
            row = speedup.cpu_end_to_end(
                lambda: load_model(prof["model"], "float32", "cpu", prof["trust_remote_code"])[0],
                lambda m, config=configs[pattern]: prune_model(m, config, progress=False),
                "csr",
                prompt_tokens=setting["prompt_tokens"],
                decode_tokens=setting["decode_tokens"],
            )
            end_to_end.append({"model": model_name(prof), "pattern": pattern, **row})
    return {
        "settings": setting,
        "machine": machine_label(info),
        "hardware": info,
        "products": products,
        "end_to_end": end_to_end,
    }
