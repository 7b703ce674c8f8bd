"""A saved EvoPress search as an allocation: read and checked before any model work, and its key.

Low level on purpose (only :mod:`dlp_lib.errors`): ``PruneConfig`` checks the file a run names when the
run is configured, and a run's key names the allocation by its content, not by where the file lies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import ConfigError

FORMAT = "dlp_lib.evopress/1"


def read_allocation(path) -> dict:
    """A saved EvoPress result, checked: a ConfigError naming what to do if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no EvoPress search result at {path}: run dlp-evopress ... --save {path} first")
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not an EvoPress search result ({err})") from err
    needed = ("key", "sparsity", "settings", "linear_sparsities", "linear_sizes", "block_sparsities")
    if not isinstance(result, dict) or result.get("format") != FORMAT or any(k not in result for k in needed):
        raise ConfigError(
            f"{path} is not an EvoPress search result (format {FORMAT}); save one with dlp-evopress --save"
        )
    return result


def allocation_key(result: dict) -> str:
    """What identifies an EvoPress allocation in a run's key: its search and its per-linear sparsities."""
    text = json.dumps({"search": result["key"], "linear_sparsities": result["linear_sparsities"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def allocation_record(result: dict) -> dict:
    """What a run's record says of its EvoPress allocation."""
    return {
        "source": "evopress",
        "key": allocation_key(result),
        "search": {"key": result["key"], "settings": result["settings"], "config": result.get("config")},
        "fitness": result.get("fitness"),
        "densities": [1.0 - s for s in result["block_sparsities"]],
        "linear_sparsities": result["linear_sparsities"],
    }
