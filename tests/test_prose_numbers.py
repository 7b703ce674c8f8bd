"""The numbers the README and docs/results.md quote in their tables are the committed tables' numbers: the
main table (every row, its mean with its bold and its seed range) and the reproduction tolerance (each
cell's normal run, its perturbed draws and its tolerance). A re-run that moves a table fails here until the
prose follows it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dlp_lib.reports.format import format_perplexity

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/results.md"]


def markdown_rows(text: str, header_start: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with ``header_start`` (separator skipped)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def by_method(rows: list[list[str]]) -> dict[tuple[str, str], list[str]]:
    """``{(method, layerwise): the other cells}``, a blank method cell continuing the one above."""
    table, method = {}, None
    for row in rows:
        method = row[0] or method
        table[(method, row[1])] = row[2:]
    return table


def committed_main_table() -> dict[tuple[str, str], tuple[str, str]]:
    rows = markdown_rows((ROOT / "tables" / "main_table.md").read_text(), "| Method | Layerwise |")
    return {key: (cells[0], cells[1]) for key, cells in by_method(rows).items()}


@pytest.mark.parametrize("page", PAGES)
def test_main_table_quoted_as_committed(page):
    quoted = by_method(markdown_rows((ROOT / page).read_text(), "| Method | Layerwise | SmolLM2-135M"))
    committed = committed_main_table()
    assert {key: (cells[0], cells[1]) for key, cells in quoted.items()} == committed


def test_tolerance_table_quoted_as_committed():
    tolerance = {
        (m, a, s): (ppl, tol, noisy)
        for m, a, s, _, ppl, _, _, tol, noisy in markdown_rows(
            (ROOT / "tables" / "reproduction_tolerance.md").read_text(), "| Method | Layerwise | Sparsity |"
        )
    }
    draws: dict[tuple[str, str, str], list[float]] = {}
    for row in csv.DictReader((ROOT / "tables" / "float_sensitivity.csv").open()):
        if float(row["perturb"]) > 0:
            key = (row["method"], row["allocation"], f"{round(float(row['sparsity']) * 100)}%")
            draws.setdefault(key, []).append(float(row["perplexity"]))
    names = {"wanda": "Wanda", "sparsegpt": "SparseGPT", "uniform": "Uniform", "dlp": "DLP"}
    quoted = markdown_rows((ROOT / "README.md").read_text(), "| Cell (seed 0) |")
    assert len(quoted) == len(tolerance)
    for cell, normal, perturbed, tol in quoted:
        method, allocation, sparsity = (part.strip() for part in cell.split(","))
        ppl, committed_tol, noisy = tolerance[(method, allocation, sparsity)]
        assert normal == ppl and tol.split(":")[0] == committed_tol
        assert tol.endswith("noise-dominated") == (noisy == "yes")
        key = next(k for k in draws if (names[k[0]], names[k[1]], k[2]) == (method, allocation, sparsity))
        assert perturbed.split(", ") == [format_perplexity(x) for x in draws[key]]


def test_the_parser_reads_bold_and_blank_method_cells():
    text = "| Method | Layerwise | x | r |\n|---|---|---|---|\n| A | U | **1.00** | 1–2 |\n| | D | 3.00 | 2–4 |\n"
    assert by_method(markdown_rows(text, "| Method |")) == {
        ("A", "U"): ["**1.00**", "1–2"],
        ("A", "D"): ["3.00", "2–4"],
    }
