"""bench/kill_resume.py: its checks catch what they are for, and ``make`` on the smoke profile survives
SIGKILLs in the middle of its notebooks (the full 10-kill run's figures are in bench/results/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kr():
    spec = importlib.util.spec_from_file_location("kill_resume", ROOT / "bench" / "kill_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def notebook(path: Path, counts) -> None:
    cells = [{"cell_type": "code", "execution_count": c, "source": "", "outputs": []} for c in counts]
    path.write_text(json.dumps({"cells": cells}))


def test_damage_is_detected(kr, tmp_path):
    (tmp_path / "results" / "dsa_search").mkdir(parents=True)
    (tmp_path / "results" / "ok.json").write_text("{}")
    (tmp_path / "results" / "dsa_search" / "cut.json").write_text('{"config": ')
    hidden = tmp_path / "results" / ".cut.json.tmp.1@host.x"
    hidden.mkdir()
    (hidden / "cut.json").write_text('{"con')  # a writer's temporary: not a record
    executed = tmp_path / "notebooks" / "executed"
    executed.mkdir(parents=True)
    notebook(executed / "01_a.ipynb", [1, 2])
    notebook(executed / "02_b.ipynb", [1, None])  # papermill killed after cell 1
    (executed / "03_c.failed.ipynb").write_text("{}")
    notebook(executed / ".04_d.partial.ipynb", [1, None])  # the Makefile's partial copy: not a result
    assert kr.damaged_files(tmp_path) == [
        "results/dsa_search/cut.json",
        "notebooks/executed/02_b.ipynb (not every cell ran)",
        "notebooks/executed/03_c.failed.ipynb",
    ]
    assert kr.leftover_temporaries(tmp_path) == ["results/.cut.json.tmp.1@host.x"]
    assert kr.partial_notebooks(tmp_path) == [".04_d.partial.ipynb"]


def test_tables_compared_but_for_measured_columns(kr, tmp_path):
    for side, seconds, ppl in (("a", 1.5, 20.0), ("b", 2.5, 20.0)):
        tables = tmp_path / side / "tables"
        tables.mkdir(parents=True)
        (tables / "speed.csv").write_text(f"method,seconds,ppl\nwanda,{seconds},{ppl}\n")
        (tables / "speed.md").write_text(f"| wanda | {seconds} |\n")
        (tables / "main.csv").write_text("method,ppl\nwanda,20.0\n")
        (tables / "facts.csv").write_text(f"fact,value\nperplexity,{ppl}\nevaluation seconds,{seconds}\n")
        (tables / "search.csv").write_text(f"generation,best,from_cache\n0,1.5,{int(seconds)}\n")
    (tmp_path / "b" / "tables" / "main.csv").write_text("method,ppl\nwanda,20.1\n")
    result = kr.compare_tables(tmp_path / "a", tmp_path / "b")
    assert result["equal_without_timed_columns"] == {
        "facts.csv": ["row 'evaluation seconds'"],
        "search.csv": ["from_cache"],
        "speed.csv": ["seconds"],
        "speed.md": "rendering of the CSV above",
    }
    assert result["different"] == ["main.csv"] and result["equal"] == [] and result["missing"] == []


@pytest.mark.integration
def test_smoke_notebooks_survive_kills_mid_run(kr, tmp_path):
    """make 02_layerwise_allocation (smoke), killed 35% of its uninterrupted time into the run and again 30%
    into the resumed run (inside notebooks 01 and 02, about 70% of the way), then resumed: no damaged file
    after any kill, the same records and tables. Each lifetime is a fraction of the reference's time, so
    the second stays below what is left (about 65% plus the restart) even when the reference ran slow
    on a loaded machine (it was 0.7 once: the resumed run finished before its kill)."""
    if not (ROOT / ".venv" / ".installed").is_file():
        pytest.skip("needs the project's .venv (make venv)")
    result = kr.kill_and_resume(target="02_layerwise_allocation", scratch=tmp_path, fractions=[0.35, 0.3])
    assert result["kills"] == 2
    assert result["damaged_after_a_kill"] == [] and result["leftover_temporaries"] == []
    assert result["tables"]["different"] == [] and result["tables"]["missing"] == []
    # the computed tables byte for byte; dense_baseline.{csv,md} carry the evaluation seconds (measured,
    # 0.4 in one run and 0.5 in the other), so they are equal byte for byte only when those round alike
    tables = result["tables"]
    assert {"allocation_70.csv", "dense_block_statistics.csv"} <= set(tables["equal"])
    assert set(tables["equal"]) | set(tables["equal_without_timed_columns"]) == {
        "allocation_70.csv",
        "dense_block_statistics.csv",
        "dense_baseline.csv",
        "dense_baseline.md",
    }
    assert result["ok"]
