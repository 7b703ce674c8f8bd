"""Compare freshly computed tables with committed ones, cell by cell, within the reproduction tolerance.

    python -m dlp_lib.reproduction --reference <committed tables/> --fresh tables/
    make check-reproduction            # the committed tables are those of git HEAD

Every perplexity of the tables named in ``TABLES`` is matched by its identifying columns; a cell is
flagged when ``|ln(fresh / reference)|`` exceeds its tolerance (``spread.lookup_tolerance`` over the
reference's ``reproduction_tolerance.csv``) or when it is missing on one side. Flagged cells whose
tolerance marks them noise-dominated are listed apart: they are expected to move on another machine.
DSA's cells depend on the expression its search found, and the search's fitness is itself
float-sensitive: when the two sides' searches ended on different expressions (``dsa_search.csv``),
their DSA cells are listed apart as not comparable, whatever their tolerance; so are a pruner's EvoPress
cells when its two searches ended on different allocations (``evopress_search.csv``). A mean over
calibration seeds (``main_table``) is compared only where both sides averaged the same seeds; otherwise it
is listed apart, its runs being compared seed by seed (``main_table_runs``). The exit status is 1
when any other cell is flagged. Zero-shot accuracies are not compared.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from .spread import NOISE_DOMINATED_FACTOR, lookup_tolerance

TOLERANCE_FILE = "reproduction_tolerance.csv"
SEARCH_FILE = "dsa_search.csv"  # one row per generation; the last row's best_expression is the result
OTHER_EXPRESSION = "other searched expression"
OTHER_SEEDS = "mean over other seeds"  # a main-table mean whose two sides averaged different seeds
EVOPRESS_FILE = "evopress_search.csv"  # per pruner and generation; the last row's parent_key is the result

# table (CSV name without suffix) -> the columns that identify one cell
TABLES = {
    "main_table": ["method", "allocation"],
    "main_table_runs": ["method", "allocation", "seed"],
    "float_sensitivity": ["method", "allocation", "sparsity", "perturb_seed"],
    "sparsity_sweep": ["method", "allocation", "sparsity"],
    "hyperparameters": ["parameter", "value"],
    "nm_sparsity": ["method", "allocation", "sparsity_type"],
}


def _cell_name(table: str, row: pd.Series, columns: list[str]) -> str:
    return f"{table}: " + ", ".join(f"{c}={row[c]}" for c in columns)


def _value(row: pd.Series, name: str):
    """A column of a merged row: the identifying column itself, else the reference's, else the fresh one's."""
    for column in (name, f"{name}_ref", f"{name}_fresh"):
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def searched_expression(tables_dir: str | Path) -> str | None:
    """The DSA expression a folder's search ended on (None without a search table)."""
    path = Path(tables_dir) / SEARCH_FILE
    if not path.is_file():
        return None
    search = pd.read_csv(path)
    return str(search["best_expression"].iloc[-1]) if len(search) else None


def searched_allocations(tables_dir: str | Path) -> dict:
    """``{pruner: key of the allocation its EvoPress search ended on}`` of a folder (empty without the table)."""
    path = Path(tables_dir) / EVOPRESS_FILE
    if not path.is_file():
        return {}
    search = pd.read_csv(path)
    return {m: str(rows["parent_key"].iloc[-1]) for m, rows in search.groupby("method", sort=False)}


def check_tables(
    reference_dir: str | Path, fresh_dir: str | Path, tolerances: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per compared cell: ``cell``, ``reference``, ``fresh``, ``log_ratio``, ``tolerance``,
    ``source`` (where the tolerance comes from), ``noise_dominated``, ``status`` (``ok``,
    ``outside tolerance``, ``missing in fresh``, ``missing in reference``, or ``other searched
    expression`` for a DSA cell outside its tolerance when the two searches found different ones).

    ``tolerances`` defaults to the reference's ``reproduction_tolerance.csv``; tables present on
    neither side are skipped, a table present on one side only is an error. When the DSA searches
    differ, ``result.attrs["searched_expressions"]`` holds (reference's, fresh's) expression."""
    reference_dir, fresh_dir = Path(reference_dir), Path(fresh_dir)
    if tolerances is None:
        path = reference_dir / TOLERANCE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the reference tables carry their tolerance (notebook 03)")
        tolerances = pd.read_csv(path)
    expressions = searched_expression(reference_dir), searched_expression(fresh_dir)
    other_search = None not in expressions and expressions[0] != expressions[1]
    allocations = searched_allocations(reference_dir), searched_allocations(fresh_dir)
    other_evopress = {m for m in allocations[0] if m in allocations[1] and allocations[0][m] != allocations[1][m]}
    rows = []
    for table, columns in TABLES.items():
        ref_path, fresh_path = reference_dir / f"{table}.csv", fresh_dir / f"{table}.csv"
        if not ref_path.is_file() and not fresh_path.is_file():
            continue
        if not ref_path.is_file() or not fresh_path.is_file():
            missing = ref_path if not ref_path.is_file() else fresh_path
            raise FileNotFoundError(f"{missing} not found, but its counterpart exists; run the notebooks first")
        ref = pd.read_csv(ref_path)
        fresh = pd.read_csv(fresh_path)
        if "perplexity" not in ref:
            continue
        ref = ref[ref["perplexity"].notna()]
        fresh = fresh[fresh["perplexity"].notna()]
        merged = ref.merge(fresh, on=columns, how="outer", suffixes=("_ref", "_fresh"), indicator=True)
        for _, row in merged.iterrows():
            method = _value(row, "method")
            sparsity = _value(row, "sparsity")
            if sparsity is None:  # a table of one nominal sparsity: its achieved one, to the whole percent
                achieved = _value(row, "achieved_sparsity")  # (70.0007% must find the 70% cells, not 80%'s)
                sparsity = None if achieved is None else round(float(achieved), 2)
            sparsity = 0.0 if sparsity is None else float(sparsity)
            tol, source = lookup_tolerance(tolerances, method, sparsity)
            reference, value = row.get("perplexity_ref"), row.get("perplexity_fresh")
            if row["_merge"] == "left_only":
                status, log_ratio = "missing in fresh", float("nan")
            elif row["_merge"] == "right_only":
                status, log_ratio = "missing in reference", float("nan")
            elif "seeds_ref" in row and str(row["seeds_ref"]) != str(row["seeds_fresh"]):
                status, log_ratio = OTHER_SEEDS, float("nan")
            else:
                log_ratio = math.log(float(value) / float(reference))
                status = "ok" if abs(log_ratio) <= tol else "outside tolerance"
                if status != "ok" and other_search and _value(row, "allocation") == "dsa":
                    status = OTHER_EXPRESSION
                if status != "ok" and method in other_evopress and _value(row, "allocation") == "evopress":
                    status = OTHER_EXPRESSION  # EvoPress's search ended on another allocation
            rows.append(
                {
                    "cell": _cell_name(table, row, columns),
                    "reference": reference,
                    "fresh": value,
                    "log_ratio": log_ratio,
                    "tolerance": tol,
                    "source": source,
                    "noise_dominated": math.exp(tol) > NOISE_DOMINATED_FACTOR,
                    "status": status,
                }
            )
    result = pd.DataFrame(
        rows, columns=["cell", "reference", "fresh", "log_ratio", "tolerance", "source", "noise_dominated", "status"]
    )
    result.attrs["searched_expressions"] = expressions if other_search else None
    return result


def flagged(result: pd.DataFrame) -> pd.DataFrame:
    """The cells outside their tolerance or missing on one side."""
    return result[result["status"] != "ok"]


def unexpected(result: pd.DataFrame) -> pd.DataFrame:
    """The flagged cells that fail the check: neither noise-dominated, nor from another search, nor a mean
    over other seeds."""
    bad = flagged(result)
    return bad[~bad["noise_dominated"] & ~bad["status"].isin([OTHER_EXPRESSION, OTHER_SEEDS])]


def report(result: pd.DataFrame) -> str:
    """A plain-text summary: counts, then every flagged cell with its ratio and tolerance."""
    bad = flagged(result)
    lines = []
    if result.attrs.get("searched_expressions"):
        reference, fresh = result.attrs["searched_expressions"]
        lines.append(f"the DSA searches ended on different expressions: {reference} (reference), {fresh} (fresh)")
    lines.append(f"compared {len(result)} cells; {len(bad)} outside the reproduction tolerance or missing")
    other = bad["status"] == OTHER_EXPRESSION
    seeds = bad["status"] == OTHER_SEEDS
    groups = (
        (unexpected(result), "unexpected"),
        (bad[~other & ~seeds & bad["noise_dominated"]], "noise-dominated (expected to move on another machine)"),
        (bad[seeds], "means over other calibration seeds (not comparable; main_table_runs compares each seed)"),
        (
            bad[other],
            "DSA or EvoPress with another searched result (not comparable; the search is float-sensitive too)",
        ),
    )
    for part, title in groups:
        if len(part):
            lines.append(f"{title}:")
            for _, r in part.iterrows():
                ratio = "" if pd.isna(r["log_ratio"]) else f" fresh/reference {math.exp(r['log_ratio']):.3f},"
                lines.append(
                    f"  {r['cell']}: {r['reference']} -> {r['fresh']} ({r['status']};{ratio} "
                    f"tolerance ×{math.exp(r['tolerance']):.3f} from {r['source']})"
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="folder of the committed tables (CSV)")
    parser.add_argument("--fresh", default="tables", help="folder of the freshly computed tables (default: tables)")
    args = parser.parse_args(argv)
    for folder in (args.reference, args.fresh):
        if not Path(folder).is_dir():
            parser.error(f"{folder} is not a folder of tables")
    result = check_tables(args.reference, args.fresh)
    print(report(result))
    return int(bool(len(unexpected(result))))


if __name__ == "__main__":
    sys.exit(main())
