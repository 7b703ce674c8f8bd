"""``make render`` on the committed records: every notebook runs from records/ with computing switched off
(a missing record would be an error, not a model run), every committed table and figure comes out
byte for byte, and every figure reads well (dlp_lib.plots.readability: no text over text or over data, no
legend over data, every axis and colour bar labelled, no type under 8 pt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlp_lib import experiments as ex
from dlp_lib.plots import readability

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RECORDS = ROOT / "records"


def test_records_are_committed_records_only():
    """records/ holds JSON records and their README, no cache of model tensors, and stays small."""
    files = [p for p in RECORDS.rglob("*") if p.is_file() and p != RECORDS / "README.md"]
    assert files, "records/ is empty: run make reproduce, then make records"
    assert {p.suffix for p in files} == {".json"}
    assert f"{len(files)} JSON files" in (RECORDS / "README.md").read_text()
    assert sum(p.stat().st_size for p in files) < 20e6


@pytest.mark.integration
def test_render_from_the_committed_records_reproduces_every_table_and_figure(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv(ex.RECORDS_ONLY_ENV, "1")  # inherited by the notebooks' kernels
    audit = tmp_path / "audit"
    monkeypatch.setenv(readability.AUDIT_ENV, str(audit))  # each figure's problems, written as it is saved
    before = {p: p.stat().st_mtime_ns for p in RECORDS.rglob("*")}
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    tables.mkdir()
    figures.mkdir()
    parameters = {"results_dir": str(RECORDS), "tables_dir": str(tables), "figures_dir": str(figures)}
    for path in NOTEBOOKS:
        papermill.execute_notebook(
            str(path),
            str(tmp_path / path.name),
            parameters=parameters,
            cwd=str(ROOT / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
        )
    assert {p: p.stat().st_mtime_ns for p in RECORDS.rglob("*")} == before, "rendering wrote into records/"
    for kind, rendered in (("tables", tables), ("figures", figures)):
        committed = sorted(p.name for p in (ROOT / kind).iterdir())
        assert sorted(p.name for p in rendered.iterdir()) == committed
        differ = [name for name in committed if (rendered / name).read_bytes() != (ROOT / kind / name).read_bytes()]
        assert differ == [], f"{kind} that the committed records do not reproduce byte for byte: {differ}"
    names = sorted({p.stem for p in figures.iterdir()})
    assert sorted(p.name for p in audit.iterdir()) == [f"{name}.readability.json" for name in names]
    problems = {name: json.loads((audit / f"{name}.readability.json").read_text()) for name in names}
    assert {name: found for name, found in problems.items() if found} == {}, "figures that do not read well"
