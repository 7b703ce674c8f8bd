"""Notebook 10's DSA tables: searched against the other allocations, the search summary, the proxy check."""

from __future__ import annotations

import math

import pandas as pd

from ..experiments import (
    TABLE_NAMES,
    model_name,
)
from ..spread import (
    lookup_tolerance,
    per_seed_values,
)
from .format import format_perplexity, format_tolerance


def dsa_versus(
    runs: pd.DataFrame, prof: dict, method: str, tolerances: pd.DataFrame | None = None, searched: str = "dsa"
) -> pd.DataFrame:
    """A searched row (``searched``: DSA's expression, or EvoPress's allocation) against each other
    allocation of ``method`` in the main table's runs (``main_table_runs``): means, the ratio, in how many
    seeds the searched one is better on the same calibration windows, whether the min–max ranges over seeds
    are apart, and whether the gap of the means exceeds the cell's reproduction tolerance. An empty frame
    if there is no such row."""
    sub = runs[runs["method"] == method]
    if searched not in set(sub["allocation"]):
        return pd.DataFrame()
    values = per_seed_values(sub, "allocation")
    tol = math.nan
    if tolerances is not None and len(tolerances):
        tol = lookup_tolerance(tolerances, method, prof["main_sparsity"])[0]
    found = values[searched]
    others = [a for a in [*prof["allocations"], "dsa", "evopress"] if a in values and a != searched]
    rows = []
    for other in others:
        theirs = values[other]
        both = found.notna() & theirs.notna()
        gap = math.log(theirs.mean() / found.mean())  # > 0: the searched one is better
        rows.append(
            {
                "method": method,
                "searched": searched,
                "versus": other,
                "perplexity": float(theirs.mean()),
                "searched_perplexity": float(found.mean()),
                "ratio": float(theirs.mean() / found.mean()),
                "searched_better_seeds": int((found[both] < theirs[both]).sum()),
                "seeds": int(both.sum()),
                "ranges_apart": bool(found.max() < theirs.min() or theirs.max() < found.min()),
                "tolerance_pct": 100.0 * (math.exp(tol) - 1.0) if math.isfinite(tol) else math.nan,
                "beyond_tolerance": bool(math.isfinite(tol) and abs(gap) > tol),
            }
        )
    return pd.DataFrame(rows)


def dsa_verdicts(versus: pd.DataFrame) -> list[str]:
    """One sentence per comparison of ``dsa_versus``: who is better, by how much, and whether that is
    beyond the spread over seeds and beyond the reproduction tolerance (only then a claim)."""
    lines = []
    for _, r in versus.iterrows():
        name = TABLE_NAMES[r["versus"]]
        mine = TABLE_NAMES[r["searched"]]
        better = r["searched_perplexity"] < r["perplexity"]
        # the gap as the worse one's excess over the better one: the same ratio scale as the tolerance
        worse, excess = (name, r["ratio"] - 1.0) if better else (mine, 1.0 / r["ratio"] - 1.0)
        head = (
            f"{mine} {'beats' if better else 'does not beat'} {name}: {format_perplexity(r['searched_perplexity'])} "
            f"vs {format_perplexity(r['perplexity'])} ({worse} {100 * excess:.0f}% higher); "
            f"{mine.split(' (')[0]} better in {r['searched_better_seeds']} of {r['seeds']} seeds"
        )
        spread = "min–max ranges apart" if r["ranges_apart"] else "min–max ranges overlap"
        tol = (
            f"{'beyond' if r['beyond_tolerance'] else 'within'} the {format_tolerance(r['tolerance_pct'])} "
            "reproduction tolerance"
            if math.isfinite(r["tolerance_pct"])
            else "no tolerance measured"
        )
        claim = "an ordering" if r["ranges_apart"] and r["beyond_tolerance"] else "no claimed ordering"
        lines.append(f"{head}; {spread}, {tol}: {claim}.")
    return lines


def dsa_search_summary(result: dict, settings, config) -> str:
    """Markdown bullets for a DSA search (``ex.dsa_search``'s result with its ``ex.dsa_search_settings``):
    the best expression and the ``dlp-prune`` command that applies it, the evolution's settings and
    counts, and what the proxy fitness measured."""
    candidates = result["candidates"]
    shared = sum(c["shared_with"] is not None for c in candidates)
    invalid = sum(c["fitness"] is None for c in candidates)
    best = result["best"]
    if best.get("fitness") is None:
        found = "- **best expression**: none; every candidate was invalid\n"
    else:
        graph = best["expression"]
        found = (
            f"- **best expression**: `{graph}` (proxy perplexity {best['fitness']:.2f})\n"
            f'- **use it**: `dlp-prune --prune_method {settings.method} --allocation dsa --dsa_graph "{graph}" '
            f"--Lamda {settings.dsa_lambda:g} --sparsity_ratio {settings.sparsity:g}`\n"
        )
    return (
        found + f"- **search**: population {config.population} × {config.generations} generations, "
        f"elite {config.elite}, tournament {config.tournament}, crossover {config.crossover:g}, "
        f"mutation {config.mutation:g}, seed {config.seed}; {len(candidates)} expressions evaluated "
        f"({shared} shared an earlier one's densities, {invalid} invalid), {result['seconds']:.0f} s when it ran\n"
        f"- **fitness**: {settings.method} at {settings.sparsity:g}, {settings.nsamples} × {settings.seqlen} "
        f"calibration tokens, perplexity on {settings.windows} search windows of {settings.seqlen} tokens "
        f"(calibration side), λ = {settings.dsa_lambda:g}"
    )


def proxy_check_caption(prof: dict, check: pd.DataFrame, rho_searched: float, rho_all: float) -> str:
    search = prof["dsa_search"]
    searched = int((check["kind"] == "searched").sum())
    return (
        f"Proxy check: {searched} searched expressions spread over the search's ranking, and the profile's "
        f"allocations, each with its proxy fitness (perplexity on {search['windows']} calibration-side windows of "
        f"{search['seqlen']} tokens after pruning with {search['nsamples']} calibration windows of {search['seqlen']}) "
        f"and its perplexity with the table's settings ({prof['nsamples']}×{prof['seqlen']} calibration, "
        f"{prof['eval_windows'] or 'all'} evaluation windows of {prof['seqlen']}, seed {prof['seed']}). Spearman "
        f"rank correlation: {rho_searched:.2f} over the searched expressions, {rho_all:.2f} with the allocations "
        f"added. Model {model_name(prof)}; profile '{prof.get('name')}'."
    )
