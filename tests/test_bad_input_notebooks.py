"""Bad notebook parameters (papermill's ``-p``/``-y``): each numbered notebook's own first cells refuse them
before any work with a ConfigError in one line that names the parameter, and papermill stops there.

In process, for every notebook and every kind of bad parameter: the notebook's parameters cell, the cell
papermill injects after it (made by papermill's own translator) and its next cell up to the check, run as
the kernel runs them. End to end, a few real papermill runs: the executed cell shows one line, and
``python -m dlp_lib.preflight papermill`` (what ``make reproduce`` runs) prints one line, exit status 2.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from papermill.translators import translate_parameters

from dlp_lib import experiments as ex
from dlp_lib.config import ConfigError
from dlp_lib.experiments.notebook import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
OUTPUT_DIRS = ("results_dir", "tables_dir", "figures_dir")


def first_cells(path: Path) -> tuple[str, str]:
    """The notebook's parameters cell, and its next cell up to and including the parameters' check."""
    cells = json.loads(path.read_text())["cells"]
    index = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    parameters, after = ("".join(cells[i]["source"]) for i in (index, index + 1))
    checks = [node for node in ast.parse(after).body if "notebook_profile(" in ast.unparse(node)]
    assert checks, f"{path.name}: the cell after the parameters does not call ex.notebook_profile"
    return parameters, "\n".join(after.splitlines()[: checks[0].end_lineno])


def declared_inputs(check: str) -> list[str]:
    """The input folders the notebook's check call names beyond the shared parameters (09: bench_dir)."""
    calls = [n for n in ast.walk(ast.parse(check)) if isinstance(n, ast.Call)]
    (call,) = [n for n in calls if ast.unparse(n.func).endswith("notebook_profile")]
    return [arg.value for arg in call.args[1:]]


def run_first_cells(path: Path, parameters: dict) -> dict:
    """The notebook's globals after its first cells ran with ``parameters`` injected as papermill does
    (IPython's input history ``In`` too, where the check reads the injected names)."""
    source, check = first_cells(path)
    injected = translate_parameters("python3", "python", parameters, "Parameters") if parameters else None
    namespace = {"__name__": "__main__", "In": [""]}
    for cell in (source, injected, check):
        if cell is not None:
            namespace["In"].append(cell)
            exec(compile(cell, path.name, "exec"), namespace)
    return namespace


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """The three output folders, not yet there (so a written file would show); the notebooks' cwd
    (papermill --cwd notebooks) and a private cache."""
    monkeypatch.chdir(NOTEBOOK_DIR)
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    return {name: str(tmp_path / "out" / name.removesuffix("_dir")) for name in OUTPUT_DIRS}


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# (the parameter named, the injected parameters, what the message says); {file}: a file, not a folder
BAD = {
    "unknown name": ("sparsity", {"sparsity": 1.5}, "unknown notebook parameter 'sparsity'"),
    "list-valued profile": ("profile", {"profile": ["quick"]}, "must be a profile name: smoke, quick"),
    "unknown profile": ("profile", {"profile": "fast"}, "unknown profile 'fast'; use one of smoke"),
    "unknown model": ("model", {"model": "./no-such-model"}, "unknown model './no-such-model'"),
    "model not a string": ("model", {"model": 7}, "notebook parameter model must be None"),
    "unknown Hessian": ("sparsegpt_hessian", {"sparsegpt_hessian": "tf32"}, "unknown sparsegpt_hessian 'tf32'"),
    "unknown sweep": ("sparsegpt_sweep", {"sparsegpt_sweep": "cuda-graph"}, "unknown sparsegpt_sweep"),
    "results_dir a file": ("results_dir", {"results_dir": "{file}"}, "is a file, not a directory"),
    "tables_dir under /proc": ("tables_dir", {"tables_dir": "/proc/dlp-nope/tables"}, "does not accept new files"),
    "figures_dir in a file": ("figures_dir", {"figures_dir": "{file}/figures"}, "is a file, not a directory"),
}


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_bad_parameter_refused_in_one_line_before_any_work(path, kind, outputs, tmp_path):
    name, bad, expected = BAD[kind]
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    bad = {key: value.format(file=file) if isinstance(value, str) else value for key, value in bad.items()}
    with pytest.raises(ConfigError) as info:
        run_first_cells(path, {**outputs, **bad})
    message = str(info.value)
    assert expected in message and name in message and "\n" not in message, message
    assert_nothing_written(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_results_dir_in_a_read_only_folder_refused(path, outputs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match=r"does not accept new files") as info:
        run_first_cells(path, {**outputs, "results_dir": str(locked / "results")})
    assert "parameter results_dir" in str(info.value)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_valid_parameters_give_the_profile(path, outputs, tmp_path):
    parameters = {**outputs, "profile": "smoke", "sparsegpt_hessian": "fp32"}
    namespace = run_first_cells(path, parameters)
    assert namespace["prof"] == ex.profile("smoke", sparsegpt_hessian="fp32")
    assert_nothing_written(tmp_path)  # probed, not created


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_library_knows_each_notebooks_parameters(path):
    """The check's declared names are exactly the parameters cell's (papermill's own reading of it)."""
    import papermill

    source, check = first_cells(path)
    assert set(papermill.inspect_notebook(str(path))) == {*PARAMETERS, *declared_inputs(check)}


def test_notebook_09s_bench_dir(outputs, tmp_path):
    speedup, sweep = NOTEBOOK_DIR / "09_speedup.ipynb", NOTEBOOK_DIR / "04_sparsity_sweep.ipynb"
    with pytest.raises(ConfigError, match="notebook parameter bench_dir '.*none' is not a folder"):
        run_first_cells(speedup, {**outputs, "bench_dir": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="unknown notebook parameter 'bench_dir'"):
        run_first_cells(sweep, {**outputs, "bench_dir": str(ROOT / "bench" / "results")})
    committed = run_first_cells(speedup, {**outputs, "bench_dir": str(ROOT / "bench" / "results")})
    assert committed["prof"]["name"] == "quick"


def test_only_injected_names_count(outputs):
    """A name the notebook binds itself (an import, a later cell's variable when a cell runs again) is no
    parameter; papermill's own --inject-paths names are allowed; a near miss is suggested."""
    path = NOTEBOOK_DIR / "02_layerwise_allocation.ipynb"
    namespace = run_first_cells(path, {**outputs, "PAPERMILL_INPUT_PATH": str(path)})
    source, check = first_cells(path)
    namespace.update(records=[1], name="allocation_70")  # what later cells bound
    exec(compile(check, path.name, "exec"), namespace)
    with pytest.raises(ConfigError, match=r"unknown notebook parameter 'profiles' \(did you mean profile\?\)"):
        run_first_cells(path, {**outputs, "profiles": "quick"})


# ------------------------------------------------------------------------------------ through papermill
def read_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def error_outputs(cells: list[dict]) -> list[dict]:
    return [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]


def test_papermill_stops_at_an_unknown_parameter_with_one_line(outputs, tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed = tmp_path / "executed.ipynb"
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / "04_sparsity_sweep.ipynb"),
            str(executed),
            parameters={**outputs, "sparsity": 1.5},
            cwd=str(NOTEBOOK_DIR),
            kernel_name="python3",
            progress_bar=False,
        )
    assert info.value.ename == "ConfigError" and "unknown notebook parameter 'sparsity'" in info.value.evalue
    cells = read_cells(executed)
    (error,) = error_outputs(cells)
    assert error["traceback"] == [f"ConfigError: {info.value.evalue}"]
    failed = next(i for i, c in enumerate(cells) if c["outputs"])
    assert all(c["execution_count"] is None for c in cells[failed + 1 :]), "cells after the check ran"
    assert_nothing_written(tmp_path)


def test_make_reproduces_papermill_prints_one_line(outputs, tmp_path):
    """``make reproduce`` runs each notebook through ``python -m dlp_lib.preflight papermill``: a bad
    parameter (here the battery's ``-y 'profile: [quick]'``) is one line and exit status 2, no traceback."""
    executed = tmp_path / "executed.ipynb"
    notebook = "notebooks/01_dense_baseline.ipynb"
    command = [sys.executable, "-m", "dlp_lib.preflight", "papermill", "--cwd", "notebooks", "--log-output"]
    command += ["--no-progress-bar", "-k", "python3", notebook, str(executed), "-y", "profile: [quick]"]
    command += [arg for name, value in outputs.items() for arg in ("-p", name, value)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"papermill {notebook}: error: notebook parameter profile must be a profile name: smoke, quick, paper, "
        "rehearsal; got ['quick'] (type list)"
    )
    assert "Traceback" not in result.stdout + result.stderr
    (error,) = error_outputs(read_cells(executed))
    assert len(error["traceback"]) == 1 and error["ename"] == "ConfigError"
    assert_nothing_written(tmp_path)
