"""Result records: one JSON per run, with the full configuration, package versions, per-block
sparsities, perplexity and timings; cached by a hash of the configuration; written atomically."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from .cache import stable_hash, write_json_atomic

VERSIONED_PACKAGES = ("dlp_lib", "torch", "transformers", "datasets", "lm_eval", "accelerate", "numpy")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
    return versions


def hardware() -> dict:
    import torch

    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def config_key(config_dict: dict) -> str:
    """A short hash that identifies a run's full configuration."""
    return stable_hash(config_dict)


def record_path(results_dir: str | Path, config_dict: dict) -> Path:
    return Path(results_dir) / f"{config_key(config_dict)}.json"


def load_record(path: str | Path) -> dict | None:
    """The record at ``path``, or None if missing or unreadable (a corrupt file is treated as missing)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_record(path: str | Path, record: dict) -> None:
    write_json_atomic(path, record)
