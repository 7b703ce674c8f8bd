"""The numbered notebooks' parameters, checked in the first cell after them: a parameter the notebook
does not define, a value of the wrong type, a bad profile, model or SparseGPT option and an output folder
that cannot be written are refused before any work, in one line (``ConfigError: ...``) instead of a
traceback, and papermill stops there::

    prof = ex.notebook_profile(globals())  # notebook 09: ex.notebook_profile(globals(), "bench_dir")

The checks are :func:`dlp_lib.preflight.check`'s, the ones ``make reproduce`` runs before its first notebook.
"""

from __future__ import annotations

import ast
import difflib
import os
from pathlib import Path

from .. import preflight
from ..config import SPARSEGPT_HESSIANS, SPARSEGPT_SWEEPS
from ..errors import ConfigError
from ..log import setup_logging
from .profiles import PROFILES

# every notebook's parameters (its cell tagged "parameters"), and what each one takes
PARAMETERS = {
    "profile": f"a profile name: {', '.join(PROFILES)}",
    "model": "None (the profile's model), a hub id such as 'meta-llama/Llama-2-7b-hf' or a model directory",
    "sparsegpt_sweep": f"None (the profile's) or one of {', '.join(SPARSEGPT_SWEEPS)}",
    "sparsegpt_hessian": f"None (the profile's) or one of {', '.join(SPARSEGPT_HESSIANS)}",
    "results_dir": "a folder path (the run records)",
    "tables_dir": "a folder path (the tables)",
    "figures_dir": "a folder path (the figures)",
}
OUTPUT_DIRS = ("results_dir", "tables_dir", "figures_dir")
OPTIONAL = ("model", "sparsegpt_sweep", "sparsegpt_hessian")  # None: the profile's setting
# parameters of some notebooks only: folders they read (09: the committed GPU and engine measurements)
INPUT_DIRS = {"bench_dir": "the committed benchmark results, bench/results/"}

# the first line of the cell papermill injects after the parameters cell (papermill.translators)
INJECTED_COMMENT = "# Parameters"


def notebook_profile(namespace: dict, *inputs: str) -> dict:
    """The profile a notebook's parameters ask for, after checking them; ``namespace`` is the notebook's
    ``globals()``, ``inputs`` the names of the input folders it defines beyond the shared parameters
    (``INPUT_DIRS``). Also sets up logging, shows every column of a displayed table (a wide per-block table
    would otherwise lose its middle columns to "...") and, in a kernel, a ConfigError in one line. Raises
    ConfigError naming the parameter."""
    unknown_inputs = set(inputs) - set(INPUT_DIRS)
    if unknown_inputs:
        raise ValueError(f"not an input folder parameter: {', '.join(sorted(unknown_inputs))}")
    show_config_errors_in_one_line()
    setup_logging()
    import pandas as pd

    pd.set_option("display.max_columns", None)
    pd.set_option("display.max_colwidth", None)
    declared = [*PARAMETERS, *inputs]
    check_names(injected_names(namespace), declared)
    values = {name: namespace.get(name) for name in declared}
    check_types(values)
    for name in inputs:
        if not Path(values[name]).is_dir():
            raise ConfigError(f"notebook parameter {name} {values[name]!r} is not a folder; give {INPUT_DIRS[name]}")
    return preflight.check(
        values["profile"],
        values["model"],
        outputs={name: values[name] for name in OUTPUT_DIRS},
        sparsegpt_sweep=values["sparsegpt_sweep"],
        sparsegpt_hessian=values["sparsegpt_hessian"],
    )


def injected_names(namespace: dict) -> list[str]:
    """The names papermill's injected cell assigned, read from IPython's input history (``In``): the
    globals alone cannot tell a name injected by ``-p`` from one the notebook bound itself (its imports,
    or a later cell's variables when a cell is run again). Outside IPython: none."""
    names = []
    for source in namespace.get("In") or ():
        if not source.startswith(INJECTED_COMMENT + "\n"):
            continue
        try:
            body = ast.parse(source).body
        except SyntaxError:  # a cell of the user's that only looks like papermill's
            continue
        for node in body:
            if isinstance(node, ast.Assign):
                names += [target.id for target in node.targets if isinstance(target, ast.Name)]
    return names


def check_names(names: list[str], declared: list[str]) -> None:
    """Refuse names the notebook does not define; papermill itself only warns, then runs the notebook
    with the parameter ignored. Its own ``--inject-paths`` names are allowed."""
    unknown = [name for name in dict.fromkeys(names) if name not in declared and not name.startswith("PAPERMILL_")]
    if not unknown:
        return
    close = [match for name in unknown for match in difflib.get_close_matches(name, declared, n=1)]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(
        f"unknown notebook parameter{plural} {', '.join(map(repr, unknown))}{hint}; "
        f"this notebook's parameters are {', '.join(declared)}"
    )


def check_types(values: dict) -> None:
    """Each value's type: papermill passes any YAML value (``-y 'profile: [quick]'``), which would
    otherwise fail deep inside with an unrelated TypeError."""
    for name, value in values.items():
        if name in OPTIONAL and value is None:
            continue
        if name in OUTPUT_DIRS or name in INPUT_DIRS:
            fits = isinstance(value, (str, os.PathLike)) and str(value) != ""
        else:
            fits = isinstance(value, str)
        if not fits:
            accepts = PARAMETERS.get(name) or f"a folder path ({INPUT_DIRS[name]})"
            raise ConfigError(f"notebook parameter {name} must be {accepts}; got {_shown(value)}")


def _shown(value) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} (type {type(value).__name__})"


# ------------------------------------------------------------------------------- errors in one line
def show_config_errors_in_one_line() -> None:
    """In an IPython kernel, show every later ConfigError as one line, ``ConfigError: message``: it is
    a setting to change, and its traceback only hides the message. It is still an error output, so
    papermill stops there and fails."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - no IPython: not in a notebook
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((ConfigError,), _one_line)


def _one_line(shell, etype, value, tb, tb_offset=None) -> list[str]:
    line = f"{etype.__name__}: {' '.join(str(value).split())}"
    # named ConfigError whatever the subclass, so that whoever reads the output (dlp_lib.preflight's
    # papermill) knows it for one
    shell._showtraceback(ConfigError, value, [line])
    return [line]
